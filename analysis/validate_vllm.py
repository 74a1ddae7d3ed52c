"""`tetris validate --set engine.backend='"vllm"'`: the simulator against vLLM on identical requests.

One vLLM engine per policy (start-ups are the cost here), each serving in turn (same engine, one
step log, split per phase by line count):
  1. calibration, on every engine (the validated policies, plus "none" and "fixed" k, started for
     calibration if not validated): the calibration requests (seed + 1000), offline;
  2. the held-out requests (the config's seed), offline, then Poisson at each --loads fraction of
     that policy's measured offline request rate.
Calibration from vLLM's own step log (engine/vllm/steps.py), never from the held-out runs:
  cost        step_s = c0 + c1 batch + c2 tokens + c3 decoders*K + c4 sum(context), non-negative
              least squares over every calibration step of every engine (prefill and mixed steps
              included: the simulator's vLLM scheduler prices prefill chunks as tokens of the same
              pass; a step lasts until the next one starts, so output handling between steps is in
              it; TETRIS's run is needed: with full windows tokens = n (1 + K), so decode tokens and
              drafts are collinear in none / fixed runs alone), written as the profile table
              (profile.csv: target_s, draft_s; overhead, prefill terms 0)
  acceptance  per-position rates of the fixed-k run (accepted at position j / drafts reaching j,
              vLLM's num_accepted_tokens_per_pos / num_drafts), fitted by bench_serve.fit_acceptance
              (iid or Beta + decay); positions past k (tetris drafts k + extra) are the fit's extrapolation
  scheduler   server.scheduler = "vllm" with max_num_batched_tokens and chunked prefill read from the
              vLLM engine; first token from the prefill step, so output_len is NOT shifted (unlike
              calibrate.simulate_like_engine for the native engine)
Clocks: engine.clock = "cpu" (CPU seconds of vLLM's processes, steady on a shared box) is offline
only; Poisson loads need wall clock (vLLM's arrivals are wall-clock): --clock wall.
  speed       per engine, its calibration phase's seconds / the shared fit's prediction of them
              (engine_scales): each policy is simulated with the fit times its engine's factor
              (profile-<policy>.csv), as the native validate rescales by a speed probe
Run folder: validate.json, validate.md, scatter.png, config.toml, profile.csv (the shared fit),
profile-<policy>.csv, workload_<load>_<policy>.jsonl, steps-<policy>.jsonl.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from analysis import bench_serve as bs
from contract.config import Config, ConfigError, to_toml

CALIBRATION = ("none", "fixed")


def check(cfg: Config, loads, clock: str) -> None:
    """One-line errors before anything runs (vLLM present, policies, clock)."""
    from engine.vllm import setup

    setup.check()
    if clock == "cpu" and any(ld != "offline" for ld in loads):
        raise ConfigError("--loads: Poisson loads through vLLM need wall-clock times (vLLM's arrivals are "
                          "wall-clock): use --clock wall, or --loads offline with the CPU clock")
    if cfg.policy.k < 1:
        raise ConfigError("policy.k: validating against vLLM needs k >= 1 (the fixed-k calibration run)")


def _split(steps_path: Path, start: int) -> tuple[list[dict], int]:
    from engine.vllm.steps import read_steps

    steps = read_steps(steps_path)
    return steps[start:], len(steps)


def _serve(llm, cfg: Config, wl, offline: bool, clock: str, steplog: Path, seen: int, k: int):
    """One workload on a running engine: (summary dict, its steps, lines seen in the log)."""
    from contract.metrics import summarize
    from engine.vllm import runner
    from engine.vllm.steps import steps_to_stats

    done, t0, _ = runner.serve(llm, cfg, wl, offline)
    _, records = runner.collect(cfg, wl, done, t0, offline)
    steps, seen = _split(steplog, seen)
    if clock == "cpu":
        records = runner.cpu_records(records, steps)
    stats = steps_to_stats(steps, k)
    s = summarize(records, stats, max(r.finish_s for r in records), cfg.slo)
    return s, steps, seen


def position_rates(steps: list[dict], k: int) -> list[float]:
    """Per-position acceptance of decode rows that verified drafts: P(accepted >= j) / P(drafts >= j)."""
    reach, acc = [0] * k, [0] * k
    for s in steps:
        for d, a, dec in zip(s["drafts"], s["accepted"], s["decode"]):
            if not dec or not d:
                continue
            for j in range(min(d, k)):
                reach[j] += 1
                acc[j] += j < a
    return [a / r for a, r in zip(acc, reach) if r]


def fit_cost(phases: list[list[dict]], clock: str) -> dict:
    """Non-negative least squares over the steps of each phase (one offline workload on one engine):
    seconds = c0 + c1 n + c2 tokens + c3 decoders*K + c4 sum(context), where a step's seconds run from
    its start to the next step's start (vLLM's output handling between steps is part of the step, as
    in the measured request times); the phase's last step: its own start to end."""
    import numpy as np
    from scipy.optimize import nnls

    from engine.vllm.steps import FEATURES

    t0, t1 = ("cpu_start_s", "cpu_end_s") if clock == "cpu" else ("start_s", "end_s")
    rows, y = [], []
    for steps in phases:
        for i, s in enumerate(steps):
            n = len(s["requests"])
            nd = sum(1 for d in s["decode"] if d)
            rows.append([1.0, n, sum(s["tokens"]), nd * s.get("k", 0), sum(max(c, 0) for c in s["context"])])
            y.append((steps[i + 1][t0] if i + 1 < len(steps) else s[t1]) - s[t0])
    a, b = np.array(rows), np.array(y)
    coef, _ = nnls(a, b)  # non-negative least squares: clipping a free fit's negative term would bias the rest
    return {"coef": dict(zip(FEATURES, map(float, coef))), "steps": len(rows),
            "rel_rmse": float(np.sqrt(np.mean((a @ coef - b) ** 2)) / np.mean(b))}


def engine_scales(fit: dict, cal_steps: dict, clock: str) -> dict:
    """Per engine: its calibration phase's measured seconds / the shared fit's prediction of them.
    The machine's speed drifts between engine start-ups on a shared box; each policy is simulated
    at the speed its own engine had on the calibration requests (never the held-out ones)."""
    out = {}
    for name, steps in cal_steps.items():
        pred = _predict(fit["coef"], steps)
        t0, t1 = ("cpu_start_s", "cpu_end_s") if clock == "cpu" else ("start_s", "end_s")
        out[name] = (steps[-1][t1] - steps[0][t0]) / pred if steps and pred > 0 else 1.0
    return out


def _predict(c: dict, steps: list[dict]) -> float:
    return sum(c["1"] + c["batch"] * len(s["requests"]) + c["tokens"] * sum(s["tokens"])
               + c["batch_x_k"] * sum(1 for d in s["decode"] if d) * s.get("k", 0)
               + c["context_tokens"] * sum(max(x, 0) for x in s["context"]) for s in steps)


def sim_config(cfg: Config, pcfg, reqs, tmp: Path, tag: str, table: Path, acceptance: dict, sched: dict) -> Config:
    """The simulator's config for one measured workload (arrivals, lengths: no output_len shift)."""
    wl = tmp / f"workload_{tag}.jsonl"
    with open(wl, "w") as fh:
        for r, p in zip(reqs.requests, reqs.prompts):
            fh.write(json.dumps({"arrival_s": float(r.arrival_s), "prompt_len": len(p), "output_len": int(r.output_len)}) + "\n")
    cost = dataclasses.replace(cfg.cost, model="table", table=str(table), overhead_s=0.0, prefill_s=0.0,
                               prefill_per_token_s=0.0, prefill_call_s=0.0, draft_mode="sequential", verify_layout="packed")
    acc = dataclasses.replace(cfg.acceptance, **acceptance)
    server = dataclasses.replace(cfg.server, scheduler="vllm", verify_layout="packed", **sched)
    w = dataclasses.replace(cfg.workload, arrival="trace", trace=str(wl), num_requests=len(reqs.requests))
    return dataclasses.replace(cfg, workload=w, cost=cost, acceptance=acc, server=server, policy=pcfg)


def simulate(scfg: Config) -> dict:
    from analysis.validate import _pick
    from sim.simulate import check as sim_check, simulate_policy

    sim_check(scfg)
    return _pick(simulate_policy(scfg, scfg.policy).summary)


def _engine_sched(llm) -> dict:
    sc = llm.llm_engine.vllm_config.scheduler_config
    return {"max_num_batched_tokens": int(sc.max_num_batched_tokens),
            "chunked_prefill": bool(getattr(sc, "enable_chunked_prefill", True))}


def validate(cfg: Config, policies, loads, tmp: Path, args, clock: str) -> dict:
    from analysis.validate import _pick, _poisson_arrivals, _policy
    from engine.pairs import resolve_pair
    from engine.serve import build_workload
    from engine.vllm import runner, setup
    from engine.vllm.models import vllm_pair
    from engine.vllm.steps import profile_rows
    from contract import profile_table
    from transformers import AutoTokenizer

    t_start = time.perf_counter()
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else (lambda msg: None)
    ecfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, clock=clock))
    pair = vllm_pair(cfg.engine.pair)
    tok = AutoTokenizer.from_pretrained(str(pair[2]))
    held = build_workload(ecfg, tok, resolve_pair(cfg.engine.pair))
    calib = build_workload(dataclasses.replace(ecfg, seed=cfg.seed + 1000), tok, resolve_pair(cfg.engine.pair))
    runner.check_positions(held, pair[0])
    runner.check_positions(calib, pair[0])
    engines = list(dict.fromkeys(list(CALIBRATION) + list(policies)))
    log(f"validate (vllm): pair {cfg.engine.pair}, {len(held.requests)} held-out + {len(calib.requests)} calibration "
        f"requests, policies {policies}, loads {loads}, clock {clock}; {len(engines)} vLLM engines")
    measured: dict = {}
    cal_steps: dict[str, list] = {}
    capacity: dict[str, float] = {}
    sched: dict = {}
    for name in engines:
        pcfg = _policy(cfg, name)
        spec, table = runner.spec_config(pcfg, pair[1], cfg.server.max_batch)
        k = 0 if spec is None else spec["num_speculative_tokens"]
        setup.prepare_env(table, cpufix=os.environ.get(setup.CPUFIX_ENV) != "0", threads=cfg.engine.threads)
        steplog = tmp / f"steps-{name}.jsonl"
        log(f"vllm engine: {name} ...")
        llm = runner.make_llm(ecfg, pair[0], pair[2], spec, steplog)
        try:
            sched = sched or _engine_sched(llm)
            seen = 0
            _, cal_steps[name], seen = _serve(llm, ecfg, calib, True, clock, steplog, seen, k)
            if name in policies:
                s, _, seen = _serve(llm, ecfg, held, True, clock, steplog, seen, k)
                capacity[name] = s["request_throughput"]
                measured[("offline", name)] = (held, _pick(s))
                for ld in loads:
                    if ld == "offline":
                        continue
                    arr = _poisson_arrivals(cfg, ld * capacity[name])
                    wl = dataclasses.replace(held, requests=[dataclasses.replace(r, arrival_s=a)
                                                             for r, a in zip(held.requests, arr)])
                    s, _, seen = _serve(llm, ecfg, wl, False, clock, steplog, seen, k)
                    measured[(ld, name)] = (wl, _pick(s))
        finally:
            runner.shutdown(llm)
    # calibration: cost from both calibration step logs, acceptance from the fixed-k one
    fit = fit_cost(list(cal_steps.values()), clock)
    rates = position_rates(cal_steps["fixed"], cfg.policy.k)
    acc = bs.fit_acceptance(rates)
    fitted_rates = acc.pop("fitted_rates")
    ctx_hi = max(len(p) + int(r.output_len) for wl in (held, calib) for r, p in zip(wl.requests, wl.prompts))
    kmax = max(1, cfg.policy.k + cfg.policy.extra)
    b = cfg.server.max_batch
    scales = engine_scales(fit, cal_steps, clock)
    grid = (sorted({1, 2, 4, b}), list(range(1, kmax + 2)), [1, ctx_hi // 2, ctx_hi])
    profile_table.write(profile_rows(fit, *grid), tmp / "profile.csv")
    profs = {}
    for name, sc in scales.items():  # the shared fit at each engine's calibration speed
        profs[name] = tmp / f"profile-{name}.csv"
        profile_table.write(profile_rows({"coef": {f: sc * c for f, c in fit["coef"].items()}}, *grid), profs[name])
    log(f"calibration: step-time fit over {fit['steps']} steps (rel RMSE {fit['rel_rmse']:.3f}): "
        + ", ".join(f"{f} {1e6 * c:.1f} us" for f, c in fit["coef"].items())
        + f"; engine speed x {', '.join(f'{n} {v:.3f}' for n, v in scales.items())}"
        + f"; acceptance rates {[round(x, 3) for x in rates]} -> {acc}; vLLM scheduler {sched}")
    rows: dict[str, dict] = {}
    for (ld, name), (wl, m) in measured.items():
        label = name if len(loads) == 1 else f"{name}@{ld}"
        scfg = sim_config(cfg, _policy(cfg, name), wl, tmp, f"{ld}_{name}", profs[name], acc, sched)
        rows[label] = {"load": ld, "rate": None if ld == "offline" else ld * capacity[name],
                       "measured": m, "simulated": simulate(scfg)}
    result = {"policies": rows, "loads": [str(x) for x in loads], "capacity_rps": capacity, "backend": "vllm",
              "fits": {"step_time": fit, "engine_scale": scales,
                       "calibration_steps": {n: len(v) for n, v in cal_steps.items()}, "acceptance": acc, "rates_measured": rates, "rates_fitted": fitted_rates,
                       "scheduler": sched},
              "pair": str(cfg.engine.pair), "clock": clock, "vllm_version": setup.installed_version(),
              "wall_s": time.perf_counter() - t_start}
    (tmp / "validate.json").write_text(json.dumps(result, indent=1, default=_json_default))
    (tmp / "config.toml").write_text(to_toml(cfg))
    (tmp / "validate.md").write_text(markdown(result))
    from analysis.report import load_run, plot_scatter

    plot_scatter([load_run(tmp)], tmp / "scatter.png")
    return result


def _json_default(x):
    import math

    if isinstance(x, float) and not math.isfinite(x):
        return None
    return float(x)


def markdown(result: dict) -> str:
    from analysis.validate import _f, _p
    from analysis.validate_math import METRICS, error_table

    f = result["fits"]
    t = error_table(result)
    lines = ["# Validation: simulator vs vLLM", "",
             f"Pair `{result['pair']}`; vLLM {result['vllm_version']}; loads {', '.join(result['loads'])}; clock "
             f"{result['clock']}; simulator server.scheduler = vllm ({f['scheduler']}).", "",
             "## Relative error of the simulation, per policy@load and metric", "",
             "| policy | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    lines += [f"| {n} | " + " | ".join(_p(t[n][m][2]) for m in METRICS) + " |" for n in t]
    for n, row in t.items():
        lines += ["", f"## {n}", "", "| metric | measured | simulated | error |", "|---|---|---|---|"]
        lines += [f"| {m} | {_f(a)} | {_f(b)} | {_p(e)} |" for m, (a, b, e) in row.items()]
    c = f["step_time"]["coef"]
    lines += ["", "## Calibration (calibration requests, seed + 1000; never the held-out runs)", "",
              f"- step time (vLLM step log, {f['step_time']['steps']} steps, rel RMSE {f['step_time']['rel_rmse']:.3f}): "
              + ", ".join(f"{k} {1e6 * v:.2f} us" for k, v in c.items()),
              "- per engine, its calibration seconds / the shared fit's (the machine's speed at that engine's "
              "run; its policy is simulated with the fit x this): "
              + ", ".join(f"{n} x{v:.3f}" for n, v in f["engine_scale"].items()),
              f"- acceptance: per-position rates measured {[round(x, 3) for x in f['rates_measured']]}, fitted "
              f"{[round(x, 3) for x in f['rates_fitted']]}: {f['acceptance']}", ""]
    return "\n".join(lines) + "\n"
