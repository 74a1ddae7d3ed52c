"""sim: a discrete-event (simpy) simulator of batched speculative-decoding serving.

    workload (contract.workload) -> router -> replicas (sim.replica: step loop)
    each step: theory.policy decides K and the windows; sim.acceptance decides
    which drafts pass; sim.cost says how long the step takes; contract.metrics
    summarises. sim.simulate runs policies and writes the run folder; sim.cli
    is `tetris simulate`. Never imports torch or the engine.
"""
