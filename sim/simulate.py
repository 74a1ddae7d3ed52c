"""Run the simulator: one policy, a sweep of policies, and the run folder.

    result = simulate_policy(cfg, policy_cfg)      # -> PolicyResult(summary, columns, stats)
    results = run_all(cfg)                         # every variant -> {label: PolicyResult}
    results = run_to_folder("runs/x", cfg)         # the same, writing the run folder

Variants: cfg.sweep is a list of inline tables laid over [policy] (each may set
`label`; k = "best_fixed" takes the k of the best fixed-k variant run before
it). An empty sweep runs [policy] alone, labelled by its name.
Every variant replays the same workload and acceptance draws (same seed).

Each replica steps with the simple loop (sim/replica.py) or, with server.scheduler = "vllm",
vLLM V1's token-budget scheduler (sim/vllm_sched.py).

Several replicas (server.replicas > 1) sit behind a router process that hands
each arriving request to one replica: round_robin, or least_tokens (fewest
output tokens still to emit, running + queued; ties to the lowest index).

Run folder: summary.json {"policies": {label: {metric: value}}}, requests.csv
(policy,id,arrival_s,first_token_s,finish_s,prompt_len,output_len,replica
rows; by id, or in finish order past 2^16 requests per policy, when they are
streamed so memory stays flat), steps.csv when asked (policy,replica,step,start_s,step_s,batch,drafts,
verified,accepted,emitted,prefill_s), and the resolved config.toml. It is
written to a temporary folder and renamed into place at the end.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy

from contract import runs
from contract.config import Config, ConfigError, PolicyConfig, to_toml, verify_layout
from contract.runs import policy_variants, run_variants
from contract.metrics import RecordSink, StepStats, summarize
from theory.policies import needs_step_time
from theory.policy import make_policy
from contract.workload import iter_request_chunks, num_requests
from sim.acceptance import make_acceptance
from sim.cost import CostModel, make_cost
from sim.replica import Replica, RequestQueue


@dataclass
class PolicyResult:
    label: str
    summary: dict  # metrics (contract.metrics.summarize)
    columns: dict | None  # per-request arrays (id, arrival_s, first_token_s, finish_s, prompt_len, output_len, replica) ordered by id; None past the exact limit
    stats: StepStats
    steps: list | None = None  # per-step rows when asked
    policy: PolicyConfig | None = None  # the resolved policy it ran


@dataclass
class Prepared:
    """What check(cfg) builds once per run and every policy of the run shares."""

    cost: CostModel  # the step-cost model, in the simulator's verify layout
    num_requests: int  # requests the workload yields (a trace file is read to count them)
    todo: list  # (label, policy table) variants to run, validated (see variants)


def sim_cost(cfg: Config) -> CostModel:
    """The run's cost model: [cost] in the simulator's verify layout (server.verify_layout)."""
    return make_cost(cfg.cost, verify_layout(cfg, "sim"))


# ---------------------------------------------------------------- variants

def _check_step_time(cost: CostModel, pcfg: PolicyConfig, label: str) -> None:
    if needs_step_time(pcfg) and not cost.step_s(1, 1, 1, 1.0) > 0:
        raise ConfigError(f"cost.step_s: policy {label!r} sizes its budget by goodput and needs a positive step time")


def variants(cfg: Config, only: str | None = None, cost: CostModel | None = None) -> list[tuple[str, dict]]:
    """(label, policy table) pairs to run; validates every entry (errors name sweep[i].key).
    cost: the run's model (Prepared.cost); built here when a variant needs it and none is given."""
    made: list = [cost]

    def check_one(pcfg: PolicyConfig, label: str) -> None:
        if needs_step_time(pcfg):
            made[0] = made[0] or sim_cost(cfg)
            _check_step_time(made[0], pcfg, label)

    return policy_variants(cfg, only, check=check_one)


def check(cfg: Config, only: str | None = None) -> Prepared:
    """Validate cross-field settings and every variant before anything runs (ConfigError names
    the key); the validated cost model, request count and variants, for the run to reuse."""
    cost = sim_cost(cfg)
    if not float(np.max(cost.step_s(1, 0, 0, 1.0))) > 0:
        raise ConfigError(f"cost: a decoding step takes 0 s with cost.model = {cfg.cost.model!r} "
                          "(throughput would be meaningless); set cost.step_s or cost.per_token_s > 0")
    make_acceptance(cfg)
    n = num_requests(cfg)  # opens trace / length files
    if cfg.workload.prompts:
        from contract.outpaths import check_in_file

        check_in_file(cfg.workload.prompts, "workload.prompts: file")
    for key in ("prompt_len", "output_len"):
        from contract.workload import check_length_dist

        check_length_dist(getattr(cfg.workload, key), f"workload.{key}")
    return Prepared(cost, n, variants(cfg, only, cost))


SIM_TOKENS_PER_S = 1e6  # rough simulated output tokens per second of one core (bench_sim.py order of magnitude)


def size_warning(cfg: Config, n_policies: int, prepared: Prepared | None = None) -> str | None:
    """A one-line note when the run will be large (estimated before it starts), else None."""
    from contract.workload import size_note

    return size_note(cfg, n_policies, SIM_TOKENS_PER_S, "simulation", prepared.num_requests if prepared else None)


# ---------------------------------------------------------------- one policy

def _router(env, replicas, cfg: Config):
    rr = cfg.server.router == "round_robin"
    i = 0
    for chunk in iter_request_chunks(cfg):
        for rid, a, p, o in zip(chunk.id.tolist(), chunk.arrival_s.tolist(), chunk.prompt_len.tolist(), chunk.output_len.tolist()):
            if a > env.now:
                yield env.timeout(a - env.now)
            if rr:
                rep = replicas[i % len(replicas)]
            else:
                rep = min(replicas, key=lambda r: (r.outstanding + r.queue.queued_tokens, r.index))
            rep.queue.push(rid, a, p, o)
            rep.notify()
            i += 1
    for rep in replicas:
        rep.closed = True
        rep.notify()


def make_replica(cfg: Config, env, index: int, queue, cost, sink, progress, hook, first_outside: bool = False):
    """One replica with the configured step scheduler (server.scheduler: simple, or vllm: sim/vllm_sched.py).
    first_outside: the engine's semantics, where a prompt's first token is not counted in output_len
    (analysis/calibrate.simulate_like_engine); it matters to mixed admission only (server.admission)."""
    args = (env, index, queue, None, cost, make_acceptance(cfg), cfg.server.max_batch, sink)
    if cfg.server.scheduler == "vllm":
        from sim.vllm_sched import VllmReplica

        return VllmReplica(*args, on_finish=progress, on_step=hook, budget=cfg.server.max_num_batched_tokens,
                           chunked=cfg.server.chunked_prefill)
    return Replica(*args, on_finish=progress, on_step=hook, mixed=cfg.server.admission == "mixed",
                   first_outside=first_outside)


def simulate_policy(cfg: Config, pcfg: PolicyConfig, label: str | None = None, progress=None,
                    on_step=None, keep_steps: bool = False, writer=None, exact_limit: int = 1 << 16,
                    prepared: Prepared | None = None, first_outside: bool = False) -> PolicyResult:
    """Simulate one policy over the whole workload; returns its metrics and per-request columns.

    writer(columns) receives finished requests in blocks (RecordSink); past
    `exact_limit` requests the columns are not kept (result.columns is None).
    prepared: check(cfg)'s cost model and request count (built here when not given).
    """
    label = label or pcfg.name
    env = simpy.Environment()
    cost = prepared.cost if prepared is not None else sim_cost(cfg)
    nrep = cfg.server.replicas
    steps: list | None = [] if keep_steps else None
    sink = RecordSink(cfg.slo, exact_limit=exact_limit, writer=writer)

    def step_hook(rep, info):
        if steps is not None:
            steps.append((label, rep.index, rep.stats.num_steps, info["start_s"], info["dt"], info["batch"], info["drafts"],
                          int(info["lengths"].sum()), int(info["accepted"].sum()), int(info["emitted"].sum()) + len(info.get("first_ids", ())), info["prefill_s"]))
        if on_step is not None:
            on_step(rep, info)

    hook = step_hook if (keep_steps or on_step is not None) else None
    replicas = []
    for r in range(nrep):
        queue = RequestQueue(iter_request_chunks(cfg) if nrep == 1 else None)
        rep = make_replica(cfg, env, r, queue, cost, sink, progress, hook, first_outside)
        rep.policy = make_policy(pcfg, step_time=rep.step_time if needs_step_time(pcfg) else None, layout=cost.layout)
        replicas.append(rep)
        env.process(rep.run())
    if nrep > 1:
        env.process(_router(env, replicas, cfg))
    env.run()
    total = prepared.num_requests if prepared is not None else num_requests(cfg)
    if len(sink) != total:
        raise RuntimeError(f"simulation drained its event queue with {total - len(sink)} of {total} requests unfinished")
    cols = sink.columns() if sink.exact else None
    sink.close()
    stats = StepStats()
    for rep in replicas:
        stats.merge(rep.stats)
    duration = sink.last_finish_s
    summary = summarize(sink, stats, duration, cfg.slo)
    return PolicyResult(label, summary, cols, stats, steps, pcfg)


# ---------------------------------------------------------------- many policies + run folder

def summary_json(results: dict) -> str:
    return runs.summary_json({lab: r.summary for lab, r in results.items()},
                             {lab: r.policy for lab, r in results.items()})


def run_all(cfg: Config, only: str | None = None, progress: bool = True, keep_steps: bool = False,
            requests_file=None, prepared: Prepared | None = None) -> dict:
    """Simulate every variant in order; returns {label: PolicyResult}.

    requests_file: an open text file that receives the requests.csv rows.
    prepared: check(cfg, only) when the caller ran it (one cost model, request count and set of
    variants per run).
    """
    prepared = prepared or check(cfg, only)
    todo = prepared.todo
    bar = None
    if progress:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        bar = tqdm(total=len(todo) * prepared.num_requests, unit="req", file=sys.stderr, desc="simulate",
                   leave=False, mininterval=0.1 if tty else 10.0, delay=0 if tty else 10.0)  # not a TTY: a line every 10 s

    def run_one(label: str, pcfg: PolicyConfig) -> PolicyResult:
        if bar is not None:
            bar.set_postfix_str(label)
        writer = None
        if requests_file is not None:
            writer = lambda cols: runs.write_request_rows(requests_file, label, cols)
        return simulate_policy(cfg, pcfg, label, progress=bar.update if bar is not None else None,
                               keep_steps=keep_steps, writer=writer, prepared=prepared)

    try:
        return run_variants(todo, run_one)
    finally:
        if bar is not None:
            bar.close()


REQUESTS_HEADER = runs.REQUESTS_HEADER  # contract.runs (shared with engine/serve.py)
STEPS_HEADER = "policy,replica,step,start_s,step_s,batch,drafts,verified,accepted,emitted,prefill_s\n"


def run_to_folder(out: str | Path, cfg: Config, only: str | None = None, progress: bool = True,
                  requests: bool = True, steps: bool = False, prepared: Prepared | None = None) -> dict:
    """Run every variant and write the run folder atomically (temporary folder renamed into place)."""
    prepared = prepared or check(cfg, only)  # every bad key is reported before anything is written
    with runs.atomic_folder(out) as tmp:
        fh = open(tmp / "requests.csv", "w") if requests else None
        try:
            if fh is not None:
                fh.write(REQUESTS_HEADER)
            results = run_all(cfg, only, progress, keep_steps=steps, requests_file=fh, prepared=prepared)
        finally:
            if fh is not None:
                fh.close()
        (tmp / "summary.json").write_text(summary_json(results))
        (tmp / "config.toml").write_text(to_toml(cfg))
        if steps:
            with open(tmp / "steps.csv", "w") as sf:
                sf.write(STEPS_HEADER)
                for r in results.values():
                    sf.writelines(f"{s[0]},{s[1]},{s[2]},{s[3]:.6f},{s[4]:.6f},{s[5]},{s[6]},{s[7]},{s[8]},{s[9]},{s[10]:.6f}\n"
                                  for s in r.steps or ())
    return results


def comparison_table(results: dict) -> str:
    """Plain-text table: throughput, ratio to the best fixed-k, TPOT, acceptance length, VSR."""
    fixed = runs.baseline_throughputs(results)
    ref = max(fixed) if fixed else next(iter(results.values())).summary["output_throughput"]
    ref_name = "best fixed" if fixed else "first"
    head = f"{'policy':<22} {'tok/s':>10} {'vs ' + ref_name:>14} {'TPOT ms':>9} {'E2E s':>8} {'acc.len':>8} {'VSR':>6}"
    lines = [head, "-" * len(head)]
    for lab, r in results.items():
        s = r.summary
        ratio = s["output_throughput"] / ref if ref else float("nan")
        lines.append(f"{lab:<22} {s['output_throughput']:>10.1f} {ratio:>14.4f} {1e3 * s['mean_tpot_s']:>9.2f} "
                     f"{s['mean_e2e_s']:>8.2f} {s['acceptance_length']:>8.3f} {s['draft_acceptance_rate']:>6.3f}")
    return "\n".join(lines)
