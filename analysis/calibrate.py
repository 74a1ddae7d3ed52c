"""Calibrating the simulator to the engine: trace cleaning, fitted figures, engine-faithful runs.

    clean = clean_trace(records)                 # replayable trace (valid prefixes, sim positions)
    beta = fit_beta(records)                     # {beta_a, beta_b, decay, ...}: acceptance fitted to the trace
    fit = fit_costs(m_none, s_none, m_spec, s_spec, k, prompt_tokens)  # overhead_s, scales, prefill_per_token_s
    summary = simulate_like_engine(cfg, pcfg, workload_path)  # metrics dict (+ "padding" ratios)

Two engine semantics the simulator does not share, handled here (analysis side):
  * the engine's prefill emits each request's FIRST token (as vLLM does); the
    simulator's first decode step does. So the simulator gets output_len - 1
    tokens per request, and a request's first-token time is the end of the
    prefill inside its first step (step start + prefill seconds, from the
    simulator's on_step hook); finish times are the simulator's.
  * trace positions count tokens already emitted (the prefill token included),
    simulator positions count decode-step tokens: positions shift by one.
Greedy traces record, per step, a match flag for all K drafts, but drafts after
the first mismatch were proposed on a wrong prefix; clean_trace keeps each
record up to and including its first mismatch, so every replayed position is
conditioned on the true (greedy) prefix.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from contract.config import Config, ConfigError
from contract.trace import TraceRecord


def clean_trace(records: list[TraceRecord], shift: int = 1) -> list[TraceRecord]:
    out = []
    for r in records:
        pos = r.position - shift
        if pos < 0:
            continue
        if r.matches is not None:
            m = list(r.matches)
            cut = m.index(False) + 1 if False in m else len(m)
            out.append(dataclasses.replace(r, position=pos, estimates=list(r.estimates[:cut]), matches=m[:cut]))
        else:
            out.append(dataclasses.replace(r, position=pos))
    return out


def per_request_acceptance(records: list[TraceRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(alpha_i: conditional acceptance per request over valid positions, trials_i)."""
    acc: dict[int, list] = {}
    for r in clean_trace(records, shift=0):
        t = np.asarray(r.truth(), dtype=np.float64)
        if t.size:
            a = acc.setdefault(r.request, [0.0, 0])
            a[0] += float(t.sum())
            a[1] += int(t.size)
    ids = sorted(acc)
    passed = np.array([acc[i][0] for i in ids])
    trials = np.array([acc[i][1] for i in ids], dtype=np.float64)
    return passed / np.maximum(trials, 1), trials


def position_acceptance(records: list[TraceRecord]) -> np.ndarray:
    """Conditional acceptance by window position j (valid positions only)."""
    k = max((len(r.estimates) for r in records), default=0)
    s, n = np.zeros(k), np.zeros(k)
    for r in clean_trace(records, shift=0):
        t = np.asarray(r.truth(), dtype=np.float64)
        s[: t.size] += t
        n[: t.size] += 1
    return s / np.maximum(n, 1)


def fit_beta(records: list[TraceRecord]) -> dict:
    """Beta(a, b) over per-request acceptance (method of moments, trial-weighted) + per-position decay."""
    alpha, trials = per_request_acceptance(records)
    if alpha.size < 2:
        raise ConfigError("validate: the trace has too few requests to fit an acceptance model")
    w = trials / trials.sum()
    mean = float(np.sum(w * alpha))
    var = float(np.sum(w * (alpha - mean) ** 2))
    # remove the binomial sampling noise of each request's estimate
    noise = float(np.sum(w * mean * (1 - mean) / np.maximum(trials, 1)))
    var = max(var - noise, 1e-4)
    mean = min(max(mean, 1e-3), 1 - 1e-3)
    common = mean * (1 - mean) / var - 1
    if common <= 0:
        common = 1e-2
    a, b = mean * common, (1 - mean) * common
    pos = position_acceptance(records)
    decay = 1.0
    ok = pos > 0
    if ok.sum() >= 2 and pos[0] > 0:
        j = np.arange(pos.size)[ok]
        slope = float(np.polyfit(j, np.log(pos[ok] / pos[0]), 1)[0])
        decay = float(min(1.0, max(0.5, math.exp(slope))))
    return {"beta_a": float(a), "beta_b": float(b), "decay": decay, "mean": mean, "requests": int(alpha.size)}


def at_reference_speed(m):
    """A Measured with its times divided by the machine speed probed before the run (target, draft)."""
    import dataclasses

    rt, rd = m.speed
    other = max(0.0, m.duration_s - m.prefill_s - m.draft_s - m.target_s)
    return dataclasses.replace(m, prefill_s=m.prefill_s / rt, draft_s=m.draft_s / rd, target_s=m.target_s / rt,
                               prefill_log=tuple((tok, s / rt) for tok, s in m.prefill_log),
                               step_log=tuple((*r[:5], r[5] / rt, r[6] / rd) for r in m.step_log),
                               step_s=m.step_s / rt, duration_s=(m.prefill_s + m.target_s + other) / rt + m.draft_s / rd,
                               speed=(1.0, 1.0))


def fit_costs(m_none, s_none: dict, m_spec, s_spec: dict, k_spec: int, prompt_tokens: int) -> dict:
    """Four figures from two calibration engine runs (none and fixed k) and their simulations.

    m_*: engine_io.Measured; s_*: simulate_like_engine summaries of the same
    workload with the raw profile table and no overhead. Fitted:
      overhead_s          per-step seconds outside the forward passes, plain decoding
                          (Python bookkeeping, sampling, masks): other / steps of the none run
      target_scale        in-run target pass time / profiled: (sum measured) / (sum simulated), both runs
      draft_scale         in-run draft seconds / profiled (fixed run)
      spec_overhead_s     speculation-only per-step seconds (estimates, selection, acceptance
                          bookkeeping): other / steps of the fixed run minus overhead_s; added to
                          the table's target rows with tokens_per_request >= 2
      prefill_call_s,     seconds of one admission pass = prefill_call_s + its prompt tokens x
      prefill_per_token_s prefill_per_token_s, least squares over every pass of both runs (see fit_prefill)
    """
    def other(m):
        return max(0.0, m.duration_s - m.prefill_s - m.draft_s - m.target_s)

    overhead = other(m_none) / max(m_none.num_steps, 1)
    spec_extra = max(0.0, other(m_spec) / max(m_spec.num_steps, 1) - overhead)  # per speculative step
    sim_target = (s_none["target_time_s"] or 0.0) + (s_spec["target_time_s"] or 0.0)
    target_scale = (m_none.target_s + m_spec.target_s) / sim_target if sim_target > 0 else 1.0
    sim_draft_per_step = (s_spec["draft_time_s"] or 0.0) / max(s_spec["num_steps"], 1)
    meas_draft_per_step = m_spec.draft_s / max(m_spec.num_steps, 1)
    draft_scale = meas_draft_per_step / sim_draft_per_step if sim_draft_per_step > 0 else 1.0
    call, per_token = fit_prefill(m_none, m_spec, prompt_tokens)
    return {"overhead_s": overhead, "target_scale": target_scale, "draft_scale": draft_scale,
            "spec_overhead_s": spec_extra, "k_calibration": k_spec,
            "prefill_call_s": call, "prefill_per_token_s": per_token}


def fit_prefill(m_a, m_b, prompt_tokens: int) -> tuple[float, float]:
    """(seconds per admission pass, seconds per prompt token): non-negative least squares of each
    pass's seconds on [1, its prompt tokens] over the passes of both runs (Measured.prefill_log).
    Passes differ in size (a wave of requests joining at once, or one request as another finishes),
    which separates the pass's fixed cost (weights read once, per-layer overhead) from the per-token
    one. With fewer than two distinct pass sizes: no fixed part, the pooled seconds per token.
    (A speculative run's passes include the draft's prefill: it folds into both figures.)"""
    from scipy.optimize import nnls

    log = np.array(list(m_a.prefill_log) + list(m_b.prefill_log), dtype=np.float64).reshape(-1, 2)
    if np.unique(log[:, 0]).size < 2:
        return 0.0, (m_a.prefill_s + m_b.prefill_s) / max(2 * prompt_tokens, 1)
    (a, b), _ = nnls(np.column_stack([np.ones(len(log)), log[:, 0]]), log[:, 1])
    return float(a), float(b)


def fit_mixed(m_mix, fallback: float) -> float:
    """Seconds per prompt token of a join riding in a running batch's pass (server.admission = "mixed"),
    from a mixed calibration run (engine_io.Measured.step_log, engine.run.STEP_LOG). The engine times a
    riding prompt only inside the step's verification pass and, for the draft's prefill, inside the next
    step's draft pass, so it is read off the steps of ONE run (the machine's drift between runs would
    swamp it): least squares of each step's target + draft seconds on [1, batch, batch x drafts, verified
    tokens, context tokens, riding tokens, the previous step's riding tokens]; the answer is the sum of
    the last two coefficients (floored at 0). Fewer than 3 steps with riders: `fallback`."""
    log = np.asarray(m_mix.step_log, dtype=np.float64).reshape(-1, 7)
    if np.count_nonzero(log[:, 4]) < 3:
        return fallback
    batch, drafts, verified, context, riding, target, draft = log.T
    before = np.concatenate([[0.0], riding[:-1]])  # their draft prefill goes in this step's draft pass
    x = np.column_stack([np.ones_like(batch), batch, batch * drafts, verified, context, riding, before])
    coef, *_ = np.linalg.lstsq(x, target + draft, rcond=None)
    return max(0.0, float(coef[5] + coef[6]))


def speed_cost(cost, fit: dict, speed: tuple, tmp: Path, tag: str):
    """The fitted cost section rescaled to the machine speed (target, draft) probed before a run."""
    import dataclasses

    rt, rd = speed
    mixed = fit.get("mixed_prefill_per_token_s", -1.0)
    table = scale_table(fit["profile"], Path(tmp) / f"profile_at_speed{tag}.csv", fit["target_scale"] * rt,
                        fit["draft_scale"] * rd, fit["spec_overhead_s"] * rt)
    return dataclasses.replace(cost, table=str(table), overhead_s=fit["overhead_s"] * rt,
                               prefill_call_s=fit.get("prefill_call_s", 0.0) * rt,
                               prefill_per_token_s=fit["prefill_per_token_s"] * rt,
                               mixed_prefill_per_token_s=mixed * rt if mixed >= 0 else -1.0)


def scale_table(src: str | Path, dst: str | Path, target_scale: float, draft_scale: float,
                spec_overhead_s: float = 0.0) -> Path:
    """Copy a profile CSV: target_s and draft_s times the fitted scales, + spec_overhead_s on speculative rows."""
    import csv

    from contract.profile_table import write

    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        d = r.get("draft_s")
        r["draft_s"] = "" if d in (None, "") else float(d) * draft_scale
        r["target_s"] = float(r["target_s"]) * target_scale + (spec_overhead_s if float(r["tokens_per_request"]) >= 2 else 0.0)
    return write(rows, dst, fmt=".7g")


def write_workload(path: str | Path, requests) -> Path:
    """The simulator's workload trace (JSONL): arrival_s, prompt_len, output_len - 1 (engine semantics)."""
    path = Path(path)
    with open(path, "w") as fh:
        for r in requests:
            if r.output_len < 2:
                raise ConfigError("workload.output_len: validate needs outputs of at least 2 tokens")
            fh.write(json.dumps({"arrival_s": r.arrival_s, "prompt_len": len(r.prompt), "output_len": r.output_len - 1}) + "\n")
    return path


def simulate_like_engine(cfg: Config, pcfg, workload_path: str | Path) -> dict:
    """Simulate pcfg on the workload file with the engine's first-token semantics; summary dict."""
    from sim.simulate import check, simulate_policy
    from contract.metrics import summarize

    cfg = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, arrival="trace", trace=str(workload_path)),
                              policy=pcfg)
    cfg.workload.num_requests = sum(1 for line in Path(workload_path).read_text().splitlines() if line.strip())
    check(cfg)
    first: dict[int, float] = {}
    pad = {"ctx_max": 0.0, "ctx_mean": 0.0, "win_max": 0.0, "win_mean": 0.0, "steps": 0}

    def hook(rep, info):
        ctx = rep.contexts() + 1  # engine context: prompt + prefill token + decoded
        if ctx.size:
            pad["ctx_max"] += float(ctx.max())
            pad["ctx_mean"] += float(ctx.mean())
        if info["drafts"]:
            pad["win_max"] += float(info["lengths"].max()) + 1
            pad["win_mean"] += float(info["lengths"].mean()) + 1
        pad["steps"] += 1
        for rid in info.get("first_ids", ()):  # mixed admission: the first token comes out of this pass
            first.setdefault(int(rid), info["start_s"] + info["dt"])
        fresh = info["pos"] == 0
        if fresh.any():  # separate admission: out of the prefill pass before this step
            t = info["start_s"] + info["prefill_s"]
            for rid in info["ids"][fresh].tolist():
                first.setdefault(int(rid), t)

    res = simulate_policy(cfg, pcfg, on_step=hook, first_outside=True)
    c = res.columns
    cols = dict(c)
    cols["first_token_s"] = np.array([first[int(i)] for i in c["id"]])
    cols["output_len"] = c["output_len"] + 1
    duration = float(c["finish_s"].max())
    s = summarize(cols, res.stats, duration, cfg.slo)
    s["target_time_s"] = res.summary.get("target_time_s")
    s["draft_time_s"] = res.summary.get("draft_time_s")
    s["prefill_time_s"] = res.summary.get("prefill_time_s")
    # what the engine's padding would make the cost model see (the simulator uses the means):
    # KV width ~ the longest context in the batch; verify width = the longest window + 1
    s["padding"] = {"context_max_over_mean": pad["ctx_max"] / max(pad["ctx_mean"], 1e-9),
                    "window_max_over_mean": pad["win_max"] / max(pad["win_mean"], 1e-9)}
    return s
