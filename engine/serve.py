"""Run a workload config through the engine: every policy variant, same requests and draws.

    results = run_config(cfg, only=None, progress=True)   # {label: PolicyRun}
    write_run(out, cfg, results)                          # summary.json, requests.csv, config.toml
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.core import Engine, Seq
from engine.run import RunResult, run
from contract import runs
from contract.config import Config, ConfigError, PolicyConfig, to_toml, verify_layout
from contract.metrics import summarize
from theory.policy import make_policy
from contract.trace import write_trace
from contract.workload import acceptance_rng, iter_requests


@dataclass
class PolicyRun:
    label: str
    summary: dict  # metrics (contract.metrics.summarize) + engine timings
    result: RunResult
    trace: list  # TraceRecords (trace mode) or []
    calibration: list  # per-step estimator/truth arrays (calibration mode) or []
    policy: PolicyConfig | None = None  # the resolved policy it ran


@dataclass
class Workload:
    requests: list  # contract.workload.Request
    prompts: list  # [n] prompt token ids per request


def build_workload(cfg: Config, tokenizer, pair_dir: Path | None) -> Workload:
    from engine.prompts import heldout_stream, read_prompts_file, snippet

    reqs = list(iter_requests(cfg))
    if cfg.workload.prompts:
        items = read_prompts_file(cfg.workload.prompts, tokenizer)
        prompts = [items[r.id % len(items)] for r in reqs]
        reqs = [dataclasses.replace(r, prompt_len=len(p)) for r, p in zip(reqs, prompts)]
    else:
        if tokenizer is None:
            raise ConfigError("workload.prompts: the pair has no tokenizer; give prompt_ids in a prompts file")
        stream = heldout_stream(tokenizer, pair_dir, max(r.prompt_len for r in reqs))
        prompts = [snippet(stream, r.id, r.prompt_len) for r in reqs]
    return Workload(reqs, prompts)


def check_positions(wl: Workload, model) -> None:
    """Prompt + output must fit the model's position range (RoPE beyond it is untrained)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not limit:
        return
    worst = max(len(p) + int(r.output_len) for r, p in zip(wl.requests, wl.prompts))
    if worst > limit:
        raise ConfigError(f"workload.output_len: a request needs {worst} positions (prompt + output), "
                          f"more than the pair's max_position_embeddings = {limit}")


def make_seqs(cfg: Config, wl: Workload) -> list[Seq]:
    return [Seq(r.id, list(p), int(r.output_len), acceptance_rng(cfg.seed, r.id), arrival_s=float(r.arrival_s))
            for r, p in zip(wl.requests, wl.prompts)]


def step_time_for(cfg: Config, target, draft, wl: Workload):
    """StepTime for dsd / goodput budgets: the [cost] table if given, else a quick measurement here."""
    from engine.profile import profile, step_time_from_rows

    if cfg.cost.model == "table" and cfg.cost.table:
        from contract.profile_table import read_rows

        return step_time_from_rows(read_rows(cfg.cost.table, "cost.table"))
    b = cfg.server.max_batch
    ctx = int(np.mean([len(p) for p in wl.prompts])) + 1
    top = max(cfg.policy.max_k, cfg.policy.k + cfg.policy.extra) + 1
    from engine.clock import make_clock

    rows = profile(target, draft, sorted({1, b}), sorted({1, (top + 1) // 2, top}), [ctx], repeats=2,
                   clock=make_clock(cfg.engine.clock))
    return step_time_from_rows(rows)


def dtype_name(model) -> str:
    """The model's parameter dtype, e.g. "bfloat16" ("" for a model without parameters)."""
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return str(p.dtype).removeprefix("torch.") if p is not None else ""


def warmup(target, draft, cfg: Config) -> None:
    """One short untimed run so the first measured policy pays no start-up costs."""
    eng = Engine(target, draft, make_policy(PolicyConfig(name="fixed", k=2)), temperature=cfg.engine.temperature,
                 packed=verify_layout(cfg, "engine") == "packed", mixed=cfg.server.admission == "mixed")
    run(eng, [Seq(-1 - i, [1, 2, 3, 4], 4, np.random.default_rng(i)) for i in range(2)], max_batch=2)


def run_policy(cfg: Config, pcfg: PolicyConfig, label: str, target, draft, wl: Workload, step_time=None,
               progress=None, calibration: bool = False, clock=None) -> PolicyRun:
    """One policy over the workload. clock: seconds callable (default wall clock)."""
    from engine.clock import make_clock

    policy = make_policy(pcfg, step_time, layout=verify_layout(cfg, "engine"))
    e = cfg.engine
    window = max(pcfg.max_k, pcfg.k + pcfg.extra) + 2  # the longest fed row: last token + drafts (+1 spare)
    capacity = max(len(p) + int(r.output_len) for r, p in zip(wl.requests, wl.prompts)) + window
    engine = Engine(target, draft, policy, temperature=e.temperature, estimator=e.estimator,
                    trace=bool(e.trace_out), calibration=calibration, clock=clock or make_clock(e.clock),
                    packed=verify_layout(cfg, "engine") == "packed", slots=cfg.server.max_batch, capacity=capacity,
                    mixed=cfg.server.admission == "mixed")
    timed = cfg.workload.arrival != "offline"
    res = run(engine, make_seqs(cfg, wl), cfg.server.max_batch, timed=timed, progress=progress)
    s = summarize(res.records, res.stats, res.duration_s, cfg.slo)
    s["select_time_s"] = res.select_s
    s["step_time_s"] = res.step_s
    s["select_share"] = res.select_s / res.step_s if res.step_s else 0.0
    s["estimator"] = engine.estimator
    s["temperature"] = engine.temperature
    s["clock"] = e.clock if clock is None else getattr(clock, "__name__", type(clock).__name__)
    s["resolved_dtype"] = dtype_name(target)  # what engine.dtype ("auto") resolved to on this machine
    s["resolved_draft_dtype"] = dtype_name(draft)
    return PolicyRun(label, s, res, engine.trace_records, engine.calib, pcfg)


def run_config(cfg: Config, only: str | None = None, progress: bool = True, calibration: bool = False,
               models=None, todo: list | None = None) -> dict:
    """Every policy variant of the config on the engine; returns {label: PolicyRun}.

    todo: contract.runs.policy_variants(cfg, only) when the caller already has them."""
    from engine.estimators import resolve
    from engine.pairs import device_dtype, load_pair, resolve_pair

    e = cfg.engine
    todo = runs.policy_variants(cfg, only) if todo is None else todo
    device_dtype(e.device, e.dtype)  # fail early on a missing CUDA
    if e.clock == "cpu" and e.device == "cuda":
        raise ConfigError("engine.clock: 'cpu' counts this process's CPU seconds only; use 'wall' with engine.device = 'cuda'")
    if e.temperature > 0 and resolve(e.estimator, e.temperature) == "token_prob":
        print("tetris engine: warning: estimator 'token_prob' at temperature > 0 biases the output "
              "(allocation depends on the sampled token); use 'max_prob' or 'calibrated'", file=sys.stderr)
    if e.threads:
        torch.set_num_threads(e.threads)
    if models is None:
        pair_dir = resolve_pair(e.pair)
        target, draft, tokenizer = load_pair(e.pair, e.device, e.draft_dtype, e.dtype)
    else:
        target, draft, tokenizer = models
        pair_dir = None
    wl = build_workload(cfg, tokenizer, pair_dir)
    check_positions(wl, target)
    warmup(target, draft, cfg)
    needs_cost = any(runs.variant_needs_step_time(t) for _, t in todo)
    step_time = step_time_for(cfg, target, draft, wl) if needs_cost else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo) * len(wl.requests), unit="req", file=sys.stderr, desc="engine", leave=False)

    def run_one(label: str, pcfg: PolicyConfig) -> PolicyRun:
        if bar is not None:
            bar.set_postfix_str(label)
        return run_policy(cfg, pcfg, label, target, draft, wl, step_time, bar, calibration=calibration)

    try:
        results = runs.run_variants(todo, run_one)
    finally:
        if bar is not None:
            bar.close()
    add_greedy_match(results, e.temperature)
    return results


def add_greedy_match(results: dict, temperature: float) -> None:
    """Greedy runs with a plain-decoding variant: each policy's greedy_prefix_match / greedy_token_match
    against it (engine.match; 1.0 = identical, as float32 guarantees; bfloat16 rounds per batch shape)."""
    from engine.match import greedy_match

    plain = next((r for r in results.values() if r.policy is not None and r.policy.name == "none"), None)
    if temperature > 0 or plain is None:
        return
    ref = {s.id: s.out for s in plain.result.seqs}
    for r in results.values():
        m = greedy_match({s.id: s.out for s in r.result.seqs}, ref)
        r.summary["greedy_prefix_match"] = m["prefix_match"]
        r.summary["greedy_token_match"] = m["token_match"]


def summary_json(results: dict) -> str:
    return runs.summary_json({lab: r.summary for lab, r in results.items()},
                             {lab: r.policy for lab, r in results.items()})


def write_run(out, cfg: Config, results: dict, dump_outputs: str | None = None, extra_files: dict | None = None) -> Path:
    """Run folder (summary.json, requests.csv, config.toml; traces) written atomically.
    extra_files: {name in the folder: source file} copied in too (the vLLM backend's step logs)."""
    out = Path(out)
    with runs.atomic_folder(out) as tmp:
        for name, src in (extra_files or {}).items():
            import shutil

            shutil.copyfile(src, tmp / name)
        (tmp / "summary.json").write_text(summary_json(results))
        (tmp / "config.toml").write_text(to_toml(cfg))
        with open(tmp / "requests.csv", "w") as fh:
            fh.write(runs.REQUESTS_HEADER)
            for label, r in results.items():
                runs.write_request_rows(fh, label, runs.record_columns(r.result.records))
    if cfg.engine.trace_out:
        write_traces(cfg, results)
    if dump_outputs:
        write_outputs(dump_outputs, results)
    return out


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def trace_path(cfg: Config, label: str, several: bool) -> Path:
    p = Path(cfg.engine.trace_out)
    return p.with_name(f"{p.stem}-{label}{p.suffix or '.jsonl'}") if several else p


def write_traces(cfg: Config, results: dict) -> None:
    for label, r in results.items():
        header = {"pair": cfg.engine.pair or "engine/pair", "temperature": cfg.engine.temperature,
                  "K": max((len(t.estimates) for t in r.trace), default=0),
                  "estimator": r.summary["estimator"], "policy": label}
        _atomic_write(trace_path(cfg, label, len(results) > 1), lambda t: write_trace(t, r.trace, header))


def write_outputs(path, results: dict) -> None:
    several = len(results) > 1

    def write(tmp):
        with open(tmp, "w") as fh:
            for label, r in results.items():
                for s in sorted(r.result.seqs, key=lambda s: s.id):
                    rec = {"id": s.id, "prompt_ids": s.prompt, "output_ids": s.out}
                    if several:
                        rec["policy"] = label
                    fh.write(json.dumps(rec) + "\n")

    _atomic_write(Path(path), write)
