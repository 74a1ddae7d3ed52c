"""analysis/ side of the real engine: identical requests, measured runs, traces, a profile.

    pair = load(cfg)                                   # target, draft, tokenizer
    reqs = build_requests(cfg, pair.tokenizer)         # [Req]: id, arrival_s, prompt ids, output_len
    m = measure(pair, cfg, pcfg, reqs, timed=False)    # Measured: summary + time components
    header, records = record_trace(pair, cfg, pcfg, reqs)
    profile_table(pair, path, batches, tokens, contexts)   # the sim's "table" CSV

Every run gets fresh Seq objects built from the same Req list, so prompts,
lengths, arrivals and per-request random streams are identical across policies
(and identical to what the simulator is given).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


from contract.config import Config, ConfigError, verify_layout
from engine.clock import make_clock


@dataclass
class Req:
    id: int
    arrival_s: float  # seconds (0 for offline)
    prompt: list  # prompt token ids
    output_len: int  # tokens to generate


@dataclass
class Pair:
    target: object
    draft: object
    tokenizer: object
    path: str


@dataclass
class Measured:
    summary: dict  # contract.metrics.summarize of the engine run
    prefill_s: float  # seconds in admission (batched prefill), total
    draft_s: float  # seconds drafting, total
    target_s: float  # seconds in verification passes, total
    step_s: float  # seconds inside engine.step(), total
    select_s: float  # seconds estimating + allocating, total
    num_steps: int
    duration_s: float
    spread: float = 0.0  # (max - min) / this run's output_throughput over the repeated runs (noise; this = the fastest)
    speed: tuple = (1.0, 1.0)  # (target, draft) probe seconds just before the run / at profiling time
    prefill_log: tuple = ()  # per admission pass (batched prefill forward): (prompt tokens, seconds)
    step_log: tuple = ()  # per decoding step: engine.run.STEP_LOG fields


def load(cfg: Config) -> Pair:
    import torch

    from engine.pairs import load_pair, resolve_pair

    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    from engine.serve import warmup

    path = resolve_pair(cfg.engine.pair)
    target, draft, tok = load_pair(cfg.engine.pair, cfg.engine.device, cfg.engine.draft_dtype, cfg.engine.dtype)
    warmup(target, draft, cfg)
    return Pair(target, draft, tok, str(path))


def build_requests(cfg: Config, tokenizer, pair_dir: str | None = None) -> list[Req]:
    """The requests `tetris engine` would serve for cfg: contract.workload arrivals and lengths,
    prompts from engine.serve.build_workload (held-out snippets or workload.prompts)."""
    from engine.serve import build_workload

    wl = build_workload(cfg, tokenizer, Path(pair_dir) if pair_dir else None)
    return [Req(r.id, float(r.arrival_s), list(p), int(r.output_len)) for r, p in zip(wl.requests, wl.prompts)]


def with_arrivals(reqs: list[Req], arrivals) -> list[Req]:
    return [Req(r.id, float(a), r.prompt, r.output_len) for r, a in zip(reqs, arrivals)]


def _seqs(cfg: Config, reqs: list[Req]):
    """Fresh engine Seqs; per-request random streams as engine.serve.make_seqs draws them."""
    from engine.core import Seq
    from contract.workload import acceptance_rng

    return [Seq(r.id, list(r.prompt), r.output_len, acceptance_rng(cfg.seed, r.id), arrival_s=r.arrival_s) for r in reqs]


def speed_probe(pair: Pair, clock: str = "wall", reps: int = 7) -> tuple[float, float]:
    """Seconds of a fixed target pass (batch 4, 4 tokens, context 64) and draft forward
    (engine.profile.time_forward: the minimum of `reps` after a warm-up, the profile's rule).

    The CPU is shared: its speed drifts by tens of percent over minutes (other
    jobs, caches, SMT), on the CPU clock too. Probing just before each measured
    run and at profiling time lets the simulator's table be rescaled to the
    machine's speed at that moment (a measurement of the machine, not of the run).
    """
    import torch

    from engine import kv as kvm
    from engine.forward import forward
    from engine.profile import time_forward

    st = getattr(pair, "_probe", None)
    if st is None:
        g = torch.Generator().manual_seed(1)
        vocab = int(pair.target.config.vocab_size)
        ctx = torch.randint(0, vocab, (4, 64), generator=g).tolist()
        st = (forward(pair.target, kvm.empty(4), ctx)[1], forward(pair.draft, kvm.empty(4), ctx)[1])
        pair._probe = st
    now = make_clock(clock)
    return (time_forward(pair.target, st[0], 4, reps, now, feed=[[1, 2, 3, 4]] * 4),
            time_forward(pair.draft, st[1], 1, reps, now))


def relative_speed(pair: Pair, clock: str) -> tuple[float, float]:
    """(target, draft) probe now / probe at reference time (pair._probe0), 1.0 before a reference exists."""
    ref = getattr(pair, "_probe0", None)
    if ref is None:
        return (1.0, 1.0)
    t, d = speed_probe(pair, clock)
    return (t / ref[0], d / ref[1])


def set_speed_reference(pair: Pair, clock: str) -> tuple[float, float]:
    pair._probe0 = None
    ref = speed_probe(pair, clock, reps=15)
    pair._probe0 = ref
    return ref


def _engine(pair: Pair, cfg: Config, pcfg, trace: bool = False, clock=time.perf_counter):
    from engine.core import Engine
    from theory.policies import needs_step_time
    from theory.policy import make_policy

    step_time = None
    if needs_step_time(pcfg):
        step_time = _engine_step_time(cfg)
    policy = make_policy(pcfg, step_time, layout=verify_layout(cfg, "engine"))
    return Engine(pair.target, pair.draft, policy, temperature=cfg.engine.temperature,
                  estimator=cfg.engine.estimator, trace=trace, clock=clock,
                  packed=verify_layout(cfg, "engine") == "packed", mixed=cfg.server.admission == "mixed")


def _engine_step_time(cfg: Config):
    """dsd / goodput budget in the engine: the profile table (cost.table) as the step-time model."""
    if cfg.cost.model != "table" or not cfg.cost.table:
        raise ConfigError("policy dsd/goodput in validate needs the profile table (cost.model = 'table')")
    from sim.cost import make_cost  # analysis may use both parts

    cost = make_cost(cfg.cost, verify_layout(cfg, "engine"))  # the engine's pass
    return lambda batch, drafts, verified: cost.step_s(batch, drafts, verified, 256.0)


def measure(pair: Pair, cfg: Config, pcfg, reqs: list[Req], timed: bool, progress: bool = False,
            clock: str = "wall") -> Measured:
    """One engine run of policy pcfg over reqs (timed: arrivals on the clock; else all at t=0)."""
    import engine.run as erun
    from contract.metrics import summarize

    speed = relative_speed(pair, clock)
    clk = make_clock(clock)
    eng = _engine(pair, cfg, pcfg, clock=clk)
    bar = None
    if progress:
        from tqdm import tqdm
        import sys

        bar = tqdm(total=len(reqs), desc=f"engine {pcfg.name}", file=sys.stderr, leave=False, disable=None)
    try:  # a CpuClock's idle waits are virtual sleeps (engine.run uses clock.sleep when it has one)
        res = erun.run(eng, _seqs(cfg, reqs), cfg.server.max_batch, timed=timed, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    s = summarize(res.records, res.stats, res.duration_s, cfg.slo)
    st = res.stats
    return Measured(s, st.prefill_s, st.draft_s, st.target_s, res.step_s, res.select_s, st.num_steps, res.duration_s,
                    speed=speed, prefill_log=tuple(res.prefill_log), step_log=tuple(res.step_log))


def measure_best(pair: Pair, cfg: Config, pcfg, reqs: list[Req], timed: bool, repeats: int = 3,
                   clock: str = "wall") -> Measured:
    """`repeats` identical runs; the fastest counts (the CPU is shared: other load only ever slows a
    run down, so the minimum is the most repeatable statistic, as timeit uses; the profile uses it too)."""
    runs = sorted((measure(pair, cfg, pcfg, reqs, timed, clock=clock) for _ in range(max(1, repeats))),
                  key=lambda m: m.duration_s)
    mid = runs[0]
    thr = [m.summary["output_throughput"] for m in runs]
    mid.spread = (max(thr) - min(thr)) / mid.summary["output_throughput"] if mid.summary["output_throughput"] else 0.0
    return mid


def record_trace(pair: Pair, cfg: Config, pcfg, reqs: list[Req]):
    """Trace mode (all K drafts verified, the policy's selection emitted): (header, records)."""
    from engine.run import run

    eng = _engine(pair, cfg, pcfg, trace=True)
    run(eng, _seqs(cfg, reqs), cfg.server.max_batch, timed=False)
    header = {"pair": pair.path, "temperature": cfg.engine.temperature, "K": pcfg.k + pcfg.extra,
              "estimator": eng.estimator, "policy": pcfg.name}
    return header, eng.trace_records


# ---------------------------------------------------------------- profile (fallback)

def profile_table(pair: Pair, path: str | Path, batches, tokens, contexts, reps: int = 9, clock: str = "wall") -> Path:
    """Time one target pass and one draft forward over a grid; write the sim's table CSV.

    engine.profile.profile on either clock (its timing rule: the minimum of `reps` forwards
    after a warm-up), written by contract.profile_table.write (atomic).
    """
    from contract.profile_table import write
    from engine.profile import profile

    rows = profile(pair.target, pair.draft, batches, tokens, contexts, repeats=reps, clock=make_clock(clock))
    return write(rows, path, fmt=".7g")
