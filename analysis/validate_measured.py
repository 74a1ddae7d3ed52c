"""`tetris validate --measured RESULT.json [--metrics PROM.txt]`: the simulator against a user's vLLM run.

Reads a `vllm bench serve --save-result` JSON (analysis/bench_serve.py) and, optionally, a text dump
of the server's /metrics, rebuilds that workload, simulates it with the configured cost model and
policy, and reports per metric measured, simulated and the relative error, with the same table,
goals and verdict as `tetris validate`. What the simulation takes from where:
  requests      the result's successful requests (input_lens / output_lens with --save-detailed),
                else `completed` requests with the config's workload.prompt_len / output_len, which
                default to fixed lengths at the result's means (total_*_tokens / completed)
  arrivals      start_times (--save-detailed: the client's send times, shifted to start at 0); else
                request_rate and burstiness: "inf" -> offline, burstiness 1 -> poisson, else gamma
                with cv = 1 / sqrt(burstiness) (vLLM's gamma shape), seeded by the config's seed
  concurrency   max_concurrency without start_times: server.max_batch is capped at it (the
                client's queue then sits in the simulated server: TTFT includes it, vLLM's excludes it)
  acceptance    fitted to the per-position acceptance rates (counters from --metrics, else the
                result's spec_decode_per_position_acceptance_rates; bench_serve.fit_acceptance);
                without rates, the config's [acceptance]
  policy        the config's [policy]; by default fixed k = the number of measured positions (none
                without spec-decode fields)
  scheduler     by default server.scheduler = "vllm" (sim/vllm_sched.py) with server.max_batch = 256
                (vLLM's max_num_seqs default below 70 GiB; set 1024 for an H100/H200 server) and
                vLLM's max_num_batched_tokens default for `vllm serve` on such GPUs (8192)
Run folder: validate.json, validate.md, scatter.png, config.toml (resolved, as simulated),
workload.csv (when the result had per-request lengths), measured.json (a copy of the result).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

from analysis import bench_serve as bs
from analysis.validate_math import METRICS, error_table
from contract.config import Config, load_config, to_toml

MEASURED_BASE = {"seed": 1, "server": {"scheduler": "vllm", "max_batch": 256}}


def base_config(result: dict, rates) -> dict:
    """Defaults for the simulation of this result (under --config / --set)."""
    n = int(result["completed"])
    base = json.loads(json.dumps(MEASURED_BASE))
    lens = {}
    for key, field in (("prompt_len", "total_input_tokens"), ("output_len", "total_output_tokens")):
        if bs._num(result.get(field)) and result[field] > 0:
            lens[key] = {"dist": "fixed", "value": max(1, round(result[field] / n))}
    base["workload"] = lens
    base["policy"] = {"name": "fixed", "k": len(rates)} if rates else {"name": "none"}
    return base


def build_config(result: dict, counters, config_path, sets, trace_path: Path) -> tuple[Config, dict, list[str]]:
    """(the resolved config to simulate, what came from where, notes for the user)."""
    rates = bs.position_rates(result, counters)
    cfg = load_config(config_path, list(sets or []), base=base_config(result, rates))
    notes: list[str] = []
    rows = bs.detailed_requests(result)
    src: dict = {"requests": "", "arrivals": "", "acceptance": "", "rates_measured": rates}
    w = cfg.workload
    if rows is not None:
        if rows[0][0] is None:  # lengths without send times: make the arrivals from rate / burstiness
            arr = _arrivals(cfg, bs.arrival_table(result), len(rows))
            rows = [(a, p, o) for a, (_, p, o) in zip(arr, rows)]
            src["arrivals"] = f"request_rate / burstiness ({bs.arrival_table(result)['arrival']})"
        else:
            src["arrivals"] = "start_times (--save-detailed)"
        with open(trace_path, "w") as fh:
            fh.write("arrival_s,prompt_len,output_len\n")
            fh.writelines(f"{a!r},{p},{o}\n" for a, p, o in rows)
        w = dataclasses.replace(w, arrival="trace", trace=str(trace_path), num_requests=len(rows))
        src["requests"] = f"{len(rows)} requests: input_lens / output_lens (--save-detailed)"
    else:
        w = dataclasses.replace(w, num_requests=int(result["completed"]), trace="", **bs.arrival_table(result))
        src["arrivals"] = f"request_rate / burstiness ({w.arrival})"
        src["requests"] = (f"{w.num_requests} requests (completed); lengths from workload.prompt_len / output_len "
                           "(default: fixed at the result's means)")
    server = cfg.server
    mc = result.get("max_concurrency")
    if mc is not None and not (rows is not None and src["arrivals"].startswith("start_times")):
        if int(mc) < server.max_batch:
            server = dataclasses.replace(server, max_batch=int(mc))
        notes.append(f"max_concurrency {mc} without start_times: server.max_batch = {server.max_batch}; the simulated "
                     "TTFT includes the client-side queue, vLLM's does not")
    acc = cfg.acceptance
    if rates:
        fit = bs.fit_acceptance(rates)
        src["rates_fitted"] = fit.pop("fitted_rates")
        acc = dataclasses.replace(acc, **fit)
        src["acceptance"] = (f"fitted to the per-position rates ({'--metrics counters' if counters else 'the result'}): "
                             + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in fit.items()))
    else:
        src["acceptance"] = "the config's [acceptance] (the result has no spec-decode fields)"
        if cfg.policy.name != "none":
            notes.append(f"policy {cfg.policy.name!r} speculates but the result has no spec-decode rates: "
                         "acceptance from the config")
    if rates and cfg.policy.name == "fixed" and cfg.policy.k != len(rates):
        notes.append(f"policy.k = {cfg.policy.k} but the result measured {len(rates)} draft positions")
    if server.scheduler != "vllm":
        notes.append("server.scheduler = 'simple': the first token comes from the first decode step, not the prefill")
    return dataclasses.replace(cfg, workload=w, acceptance=acc, server=server), src, notes


def _arrivals(cfg: Config, table: dict, n: int) -> list[float]:
    from contract.workload import iter_requests

    c = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, num_requests=n, trace="", **table))
    return [r.arrival_s for r in iter_requests(c)]


def simulate(cfg: Config):
    """The simulation of the measured workload: (metrics dict, PolicyResult)."""
    from analysis.validate import _pick
    from sim.simulate import check, simulate_policy

    check(cfg)
    res = simulate_policy(cfg, cfg.policy)
    return _pick(res.summary), res, bs.sim_position_rates(res.summary)


def measure(args, tmp: Path, trace_name: str = "workload.csv"):
    """The result dict of one --measured validation (files written into tmp)."""
    result = bs.read_result(args.measured)
    counters = bs.read_metrics(args.metrics) if args.metrics else None
    cfg, src, notes = build_config(result, counters, args.config, args.set, tmp / trace_name)
    sim, res, sim_rates = simulate(cfg)
    label = f"fixed k={cfg.policy.k}" if cfg.policy.name == "fixed" else cfg.policy.name
    measured = {m: v for m, v in bs.measured_metrics(result).items() if m in METRICS + ("request_throughput",)}
    src["rates_simulated"] = sim_rates
    return cfg, {"policies": {label: {"measured": measured, "simulated": sim}},
                 "measured_file": str(args.measured), "metrics_file": str(args.metrics or ""),
                 "sources": src, "notes": notes, "mode": "measured"}


def run_measured(args) -> int:
    from analysis.validate import print_verdict
    from contract.outpaths import check_in_file, check_out_dir, default_run_folder
    from contract.runs import atomic_folder

    check_in_file(args.measured, "--measured")
    if args.metrics:
        check_in_file(args.metrics, "--metrics")
    bs.read_result(args.measured)  # bad inputs are reported before an output folder is touched
    if args.metrics:
        bs.read_metrics(args.metrics)
    out = check_out_dir(args.out or default_run_folder("validate"), force=getattr(args, "force", False))
    with atomic_folder(out) as tmp:
        cfg, result = measure(args, tmp)
        shutil.copyfile(args.measured, tmp / "measured.json")
        if cfg.workload.arrival == "trace":  # the saved config names the trace where it will live
            cfg = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, trace=str(out / "workload.csv")))
        (tmp / "validate.json").write_text(json.dumps(result, indent=1, default=_json_default))
        (tmp / "config.toml").write_text(to_toml(cfg))
        (tmp / "validate.md").write_text(markdown(result))
        from analysis.report import load_run, plot_scatter

        plot_scatter([load_run(tmp)], tmp / "scatter.png")
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return print_verdict(result, out, args)


def _json_default(x):
    import math

    if isinstance(x, float) and not math.isfinite(x):
        return None
    return float(x)


def markdown(result: dict) -> str:
    from analysis.validate import _f, _p

    lines = ["# Validation: simulator vs a measured vLLM run", "",
             f"Measured: `{result['measured_file']}`" + (f"; counters `{result['metrics_file']}`" if result["metrics_file"] else ""), ""]
    for name, t in error_table(result).items():
        lines += [f"## {name}", "", "| metric | measured | simulated | error |", "|---|---|---|---|"]
        lines += [f"| {m} | {_f(a)} | {_f(b)} | {_p(e)} |" for m, (a, b, e) in t.items()]
        lines.append("")
    s = result["sources"]
    lines += ["## Where the simulation's inputs come from", "", f"- requests: {s['requests']}", f"- arrivals: {s['arrivals']}",
              f"- acceptance: {s['acceptance']}"]
    if s.get("rates_measured"):
        fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs or [])
        lines += [f"- per-position acceptance rates (accepted at j / drafts): measured {fmt(s['rates_measured'])}; "
                  f"fitted {fmt(s.get('rates_fitted'))}; simulated {fmt(s.get('rates_simulated'))}"]
    lines += [f"- note: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
