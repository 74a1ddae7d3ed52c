"""vLLM backend (engine.backend = "vllm"): the same workload through vLLM's offline engine.

    setup.py     availability + version pin (0.32.x), CPU environment fixes
    plugin.py    the `vllm.general_plugins` entry point (patches only when TETRIS is asked for)
    proposer.py  TetrisDraftProposer: DraftModelProposer that keeps the batch's top-C drafts
    cpufix.py    the CPU temperature fix (rejection_sampler.expand_batch_to_tokens)
    steplog.py   scheduler subclass writing one JSON line per engine step
    steps.py     reading that log (no vLLM needed): StepStats, the step-time fit -> profile table
    validate_route.py  what `tetris validate` does with engine.backend = vllm (one-line refusal)
    models.py    vLLM-loadable copies of the project's pairs (cache dir, never downloaded)
    runner.py    project workload -> vLLM requests -> project metrics and run folder
See docs/vllm.md. Nothing here is imported by the native engine.
"""
