"""`tetris engine --set engine.backend='"vllm"'`: the same workload through vLLM's offline engine.

    results = run_config(cfg, only=None, todo=None)   # {label: engine.serve.PolicyRun}
    engine.serve.write_run(out, cfg, results, dump_outputs)   # the same run folder

Same requests as the native engine (engine.serve.build_workload: contract.workload arrivals and
lengths, the same prompt token ids), one vLLM engine per policy variant:
  none    no speculative config;
  fixed   method draft_model, num_speculative_tokens = k;
  tetris  draft_model with K = k + extra and this project's selector (engine/vllm/proposer.py);
  dsd     draft_model with vLLM's num_speculative_tokens_per_batch_size: one k per batch size,
          the k of the project's DSD goodput rule at the fitted acceptance (see dsd_schedule);
other policies: ConfigError. Requests are added at their arrival times (offline: all at t = 0)
and the LLMEngine is stepped until all finish; output_len tokens each (ignore_eos). Times:
engine.clock = "wall": time.monotonic (vLLM's RequestOutput.metrics clock); "cpu" (offline only):
CPU seconds of vLLM's engine-core and worker processes from the step log (all their threads),
steady on a shared box like the native engine's CPU clock. Per-step log: engine/vllm/steplog.py, kept in the run folder
as steps-<label>.jsonl (see write_steps).
"""
from __future__ import annotations

import dataclasses
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from contract import runs
from contract.config import Config, ConfigError, PolicyConfig
from engine.vllm import setup

SUPPORTED_POLICIES = ("none", "fixed", "tetris", "dsd")
KV_BYTES = 512 << 20  # kv_cache_memory_bytes: vLLM's default memory sizing fails on this CPU build


def check_policies(cfg: Config, todo) -> None:
    """Every variant must be one the vLLM backend runs (one line naming the key otherwise)."""
    for label, table in todo:
        name = table["name"]
        if name not in SUPPORTED_POLICIES:
            raise ConfigError(f"policy.name = {name!r} ({label}): not available with engine.backend = vllm "
                              f"(supported: {', '.join(SUPPORTED_POLICIES)})")
        if name == "tetris" and table.get("budget", "fixed") == "goodput":
            raise ConfigError(f"policy.budget = 'goodput' ({label}): not available with engine.backend = vllm "
                              "(fixed or unbounded)")
    if cfg.engine.estimator not in ("auto", "token_prob", "max_prob"):
        raise ConfigError(f"engine.estimator = {cfg.engine.estimator!r}: not available with engine.backend = vllm "
                          "(the TETRIS proposer ranks by the draft's top probability: auto)")


def spec_config(pcfg: PolicyConfig, draft_dir: Path, max_batch: int) -> tuple[dict | None, dict | None]:
    """(speculative_config for vLLM, policy table for the TETRIS proposer or None)."""
    if pcfg.name == "none" or (pcfg.name != "dsd" and pcfg.k == 0):
        return None, None
    base = {"method": "draft_model", "model": str(draft_dir)}
    if pcfg.name == "fixed":
        return base | {"num_speculative_tokens": pcfg.k}, None
    if pcfg.name == "tetris":
        table = {"name": "tetris", "k": pcfg.k, "extra": pcfg.extra, "budget": pcfg.budget,
                 "disable_batch": pcfg.disable_batch}
        return base | {"num_speculative_tokens": pcfg.k + pcfg.extra}, table
    sched = dsd_schedule(pcfg, max_batch)
    return base | {"num_speculative_tokens": max(k for _, _, k in sched),
                   "num_speculative_tokens_per_batch_size": sched}, None


def dsd_schedule(pcfg: PolicyConfig, max_batch: int) -> list[tuple[int, int, int]]:
    """vLLM's batch-size schedule [(lo, hi, k)] for the project's dsd policy: per batch size the k
    of theory's DSD rule (policies/dsd.py) at its starting acceptance estimate (alpha_ema) with
    no step-time model: k = policy.k, 0 above policy.disable_batch. vLLM re-chooses nothing
    online, so this is DSD-by-batch-size, not the adaptive EMA rule."""
    k_hi = max(1, pcfg.k)
    if pcfg.disable_batch and pcfg.disable_batch < max_batch:
        return [(1, pcfg.disable_batch, k_hi), (pcfg.disable_batch + 1, max_batch, 0)]
    return [(1, max_batch, k_hi)]


def vllm_dtype(cfg: Config) -> str:
    """engine.dtype resolved as for the native engine ("auto": bfloat16 on CUDA or on a CPU with
    AMX/AVX512-BF16, else float32), as vLLM's dtype string."""
    import torch

    from engine.pairs import resolve_dtype

    return "bfloat16" if resolve_dtype(cfg.engine.dtype, cfg.engine.device) == torch.bfloat16 else "float32"


def make_llm(cfg: Config, target_dir: Path, tok_dir: Path, spec: dict | None, steplog: Path):
    from vllm import LLM

    os.environ["TETRIS_VLLM_STEPLOG"] = str(steplog)
    return LLM(model=str(target_dir), tokenizer=str(tok_dir), dtype=vllm_dtype(cfg),
               speculative_config=spec, kv_cache_memory_bytes=KV_BYTES, max_num_seqs=cfg.server.max_batch,
               seed=cfg.seed, disable_log_stats=False, enforce_eager=True,
               scheduler_cls="engine.vllm.steplog.StepLogScheduler")


def serve(llm, cfg: Config, wl, offline: bool) -> tuple[dict, float, float]:
    """Add each request at its arrival time, step until done: ({id: RequestOutput}, t0, t_end)."""
    from vllm import SamplingParams, TokensPrompt

    eng = llm.llm_engine
    pending = sorted(zip(wl.requests, wl.prompts), key=lambda rp: (0.0 if offline else rp[0].arrival_s, rp[0].id))
    done: dict[int, object] = {}
    t0 = time.monotonic()
    i = 0
    while i < len(pending) or eng.has_unfinished_requests():
        now = time.monotonic() - t0
        while i < len(pending) and (offline or pending[i][0].arrival_s <= now):
            r, p = pending[i]
            sp = SamplingParams(temperature=cfg.engine.temperature, max_tokens=int(r.output_len), ignore_eos=True,
                                seed=cfg.seed * 1_000_003 + r.id if cfg.engine.temperature > 0 else None)
            eng.add_request(str(r.id), TokensPrompt(prompt_token_ids=list(p)), sp)
            i += 1
        if not eng.has_unfinished_requests():
            time.sleep(max(0.0, pending[i][0].arrival_s - (time.monotonic() - t0)))
            continue
        for out in eng.step():
            if out.finished:
                done[int(out.request_id)] = out
    return done, t0, time.monotonic()


def collect(cfg: Config, wl, done: dict, t0: float, offline: bool):
    """engine.run.RunResult-like (seqs with .out, records) from the finished RequestOutputs."""
    from contract.metrics import RequestRecord

    seqs, records = [], []
    for r, p in zip(wl.requests, wl.prompts):
        o = done[r.id]
        m = o.metrics
        arrival = 0.0 if offline else float(r.arrival_s)
        out = list(o.outputs[0].token_ids)
        seqs.append(dataclasses.make_dataclass("VSeq", ["id", "prompt", "out"])(r.id, list(p), out))
        records.append(RequestRecord(r.id, arrival, float(m.first_token_ts - t0), float(m.last_token_ts - t0),
                                     len(p), len(out)))
    return seqs, records


@dataclasses.dataclass
class VllmResult:  # the fields of engine.run.RunResult that write_run and summaries read
    seqs: list
    records: list
    stats: object
    duration_s: float
    select_s: float = 0.0
    step_s: float = 0.0


def cpu_records(records: list, steps: list[dict]) -> list:
    """engine.clock = "cpu": each request's first-token / finish time = the CPU seconds of vLLM's
    engine-core + worker processes (from the first step's start) at the end of the step that
    emitted its first / last token. Offline only (arrivals are all at 0)."""
    from contract.metrics import RequestRecord

    if not steps:
        return records
    origin = steps[0]["cpu_start_s"]
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for s in steps:
        t = s["cpu_end_s"] - origin
        for rid, e in zip(s["requests"], s["emitted"]):
            if e:
                first.setdefault(rid, t)
                last[rid] = t
    return [RequestRecord(r.id, 0.0, first.get(r.id, r.first_token_s), last.get(r.id, r.finish_s), r.prompt_len,
                          r.output_len) for r in records]


def counters(llm) -> dict:
    """vLLM's spec-decode counters: {name: value or [values]}."""
    out = {}
    for m in llm.get_metrics():
        if m.name.startswith("vllm:spec_decode"):
            out[m.name.split(":", 1)[1]] = getattr(m, "values", None) or getattr(m, "value", None)
    return out


def run_policy(cfg: Config, pcfg: PolicyConfig, label: str, pair, wl, workdir: Path):
    from contract.metrics import summarize
    from engine.serve import PolicyRun
    from engine.vllm.steps import read_steps, steps_to_stats

    target_dir, draft_dir, tok_dir = pair
    spec, table = spec_config(pcfg, draft_dir, cfg.server.max_batch)
    setup.prepare_env(table, cpufix=os.environ.get(setup.CPUFIX_ENV) != "0", threads=cfg.engine.threads)
    steplog = workdir / f"steps-{label}.jsonl"
    steplog.unlink(missing_ok=True)
    offline = cfg.workload.arrival == "offline"
    llm = make_llm(cfg, target_dir, tok_dir, spec, steplog)
    try:
        done, t0, _ = serve(llm, cfg, wl, offline)
        count = counters(llm)
    finally:
        shutdown(llm)
    seqs, records = collect(cfg, wl, done, t0, offline)
    steps = read_steps(steplog)
    if cfg.engine.clock == "cpu":
        records = cpu_records(records, steps)
    k_drafted = 0 if spec is None else spec["num_speculative_tokens"]
    stats = steps_to_stats(steps, k_drafted)
    duration = max((r.finish_s for r in records), default=0.0)
    s = summarize(records, stats, duration, cfg.slo)
    step_s = sum(x["end_s"] - x["start_s"] for x in steps)
    if cfg.engine.clock == "cpu":
        step_s = sum(x["cpu_end_s"] - x["cpu_start_s"] for x in steps)
    s.update(select_time_s=0.0, step_time_s=step_s, select_share=0.0, estimator="max_prob" if table else "none",
             temperature=cfg.engine.temperature, clock=cfg.engine.clock, backend="vllm", vllm_version=setup.installed_version(),
             vllm_counters=count, resolved_dtype=vllm_dtype(cfg))
    res = VllmResult(seqs, records, stats, duration, 0.0, step_s)
    run = PolicyRun(label, s, res, [], [], pcfg)
    run.steplog = steplog
    return run


def shutdown(llm) -> None:
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort: the engine-core process is ended either way
        pass
    del llm
    gc.collect()


def run_config(cfg: Config, only: str | None = None, progress: bool = True, todo: list | None = None,
               workdir: Path | None = None) -> dict:
    """Every policy variant of cfg through vLLM; {label: engine.serve.PolicyRun} (+ .steplog)."""
    setup.check()
    todo = runs.policy_variants(cfg, only) if todo is None else todo
    check_policies(cfg, todo)
    if cfg.engine.device == "cuda":
        setup.check_cuda()
    if cfg.engine.clock == "cpu" and cfg.workload.arrival != "offline":
        raise ConfigError("engine.clock = 'cpu' with engine.backend = vllm: offline arrivals only "
                          "(vLLM's arrivals are wall-clock); use engine.clock = 'wall'")
    from engine.serve import build_workload
    from engine.vllm.models import vllm_pair
    from engine.pairs import resolve_pair

    pair = vllm_pair(cfg.engine.pair)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(pair[2]))
    wl = build_workload(cfg, tokenizer, resolve_pair(cfg.engine.pair))
    check_positions(wl, pair[0])
    workdir = Path(workdir or tempfile.mkdtemp(prefix="tetris-vllm-"))

    def run_one(label: str, pcfg: PolicyConfig):
        if progress:
            print(f"tetris engine (vllm): {label} ...", file=sys.stderr, flush=True)
        return run_policy(cfg, pcfg, label, pair, wl, workdir)

    return runs.run_variants(todo, run_one)


def check_positions(wl, target_dir: Path) -> None:
    import json

    limit = json.loads((Path(target_dir) / "config.json").read_text()).get("max_position_embeddings")
    worst = max(len(p) + int(r.output_len) for r, p in zip(wl.requests, wl.prompts))
    if limit and worst > limit:
        raise ConfigError(f"workload.output_len: a request needs {worst} positions (prompt + output), "
                          f"more than the pair's max_position_embeddings = {limit}")


def step_files(results: dict) -> dict:
    """{steps-<label>.jsonl: the policy's per-step log} for engine.serve.write_run(extra_files=...)."""
    return {f"steps-{label}.jsonl": r.steplog for label, r in results.items()
            if getattr(r, "steplog", None) is not None and Path(r.steplog).is_file()}


def check_backend_args(cfg: Config, args=None, todo=None) -> None:
    """Before the run: vLLM present and 0.32.x, the policies, flags and keys the vLLM backend has."""
    setup.check()
    if todo is not None:
        check_policies(cfg, todo)
    if args is not None and getattr(args, "calibration_report", None):
        raise ConfigError("--calibration-report: not available with engine.backend = vllm")
    if cfg.engine.trace_out:
        raise ConfigError("engine.trace_out: trace mode is not available with engine.backend = vllm")
