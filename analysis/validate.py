"""`tetris validate`: the simulator against the real engine on identical requests.

Steps (all outputs in --out, written to a temp folder and renamed at the end):
  1. profile the engine (or reuse --profile CSV): profile.csv, the "table" cost model;
  2. record an acceptance trace in trace mode (tetris, K = the largest K validated):
     trace.jsonl, and trace_replay.jsonl (cleaned for replay, see analysis/calibrate.py);
     a Beta(a, b) acceptance model is fitted to it;
  3. calibration runs (none and fixed k, offline, separate admission) on a DIFFERENT request set
     (seed + 1000) fit the cost figures (calibrate.fit_costs), once before and once after step 4;
     each figure is averaged over the two (the shared machine's speed drifts);
  4. per load (offline; Poisson at a fraction of the policy's measured offline capacity)
     and policy: the engine run (measured);
  5. the simulator on the same prompts, lengths and arrivals, replaying the trace
     (simulated) and with the fitted Beta model (simulated_parametric);
  6. validate.json, validate.md (per policy and metric: measured, simulated, error),
     scatter.png, config.toml.
`--json` prints {"policies": {name: {"measured": {...}, "simulated": {...}}}}; names
are the policy (one load) or "policy@load".
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

from analysis import calibrate as cal
from analysis import engine_io as eio
from analysis.validate_math import GOALS, METRICS, error_table, format_table
from contract.runs import atomic_folder
from contract.config import POLICIES, Config, ConfigError, PolicyConfig, load_config, to_toml, with_layout
from theory.policies import kind

VALIDATED = tuple(n for n in POLICIES if not kind(n).needs_truth)  # the engine runs them as deployed

# The default validation scenario: small enough for a few minutes on 2 CPU cores.
VALIDATE_BASE = {
    "seed": 1,
    "workload": {"arrival": "offline", "num_requests": 32,
                 "prompt_len": {"dist": "uniform", "low": 32, "high": 96},
                 "output_len": {"dist": "uniform", "low": 24, "high": 64}},
    "server": {"max_batch": 8},
    "policy": {"k": 3, "extra": 2},
    "engine": {"threads": 1},
}

def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise ConfigError("--policies: empty")
    for n in names:
        if n not in VALIDATED:
            raise ConfigError(f"--policies: {n!r} is not one of {', '.join(VALIDATED)}")
    return list(dict.fromkeys(names))


def parse_loads(text: str) -> list:
    out = []
    for p in str(text).split(","):
        p = p.strip()
        if not p:
            continue
        if p == "offline":
            out.append("offline")
            continue
        try:
            f = float(p)
        except ValueError:
            raise ConfigError(f"--loads: {p!r} is neither 'offline' nor a fraction of capacity") from None
        if not (0 < f <= 1.5):
            raise ConfigError(f"--loads: {p!r} must be in (0, 1.5]")
        out.append(f)
    if not out:
        raise ConfigError("--loads: empty")
    return list(dict.fromkeys(out))


def _policy(cfg: Config, name: str) -> PolicyConfig:
    return dataclasses.replace(cfg.policy, name=name)


def _max_drafts(cfg: Config, names) -> int:
    return max([0] + [kind(n).max_drafts(cfg.policy) for n in names])


def _profile_grid(cfg: Config, reqs, kmax: int):
    b = cfg.server.max_batch
    batches = sorted({1, 2, 4, b} | {x for x in (8, 16, 32, 64) if x < b})
    tokens = list(range(1, kmax + 2))
    longest = max(len(r.prompt) + r.output_len for r in reqs)
    shortest = min(len(r.prompt) for r in reqs)
    contexts = sorted({max(1, shortest), (shortest + longest) // 2, longest})
    return batches, tokens, contexts


def _profile(pair, cfg, reqs, kmax: int, path: Path, given: str, clock: str) -> tuple[Path, str]:
    if given:
        if not Path(given).is_file():
            raise ConfigError(f"--profile: {given!r} not found")
        shutil.copyfile(given, path)
        return path, f"reused {given}"
    batches, tokens, contexts = _profile_grid(cfg, reqs, kmax)
    if clock == "wall":  # the engine's own `tetris profile` API
        from engine.profile import profile, write_csv

        write_csv(profile(pair.target, pair.draft, batches, tokens, contexts, repeats=5), path)
        return path, f"engine.profile.profile (wall clock; batches {batches}, tokens/request {tokens}, contexts {contexts})"
    eio.profile_table(pair, path, batches, tokens, contexts, clock=clock)
    return path, f"analysis.engine_io.profile_table (batches {batches}, tokens/request {tokens}, contexts {contexts})"


def _poisson_arrivals(cfg: Config, rate: float):
    from contract.workload import iter_requests

    c = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, arrival="poisson", rate=float(rate)))
    return [r.arrival_s for r in iter_requests(c)]


def _pick(summary: dict) -> dict:
    return {m: summary.get(m) for m in METRICS + ("request_throughput", "num_steps")}


def run(args) -> int:
    if getattr(args, "measured", ""):
        from analysis.validate_measured import run_measured

        return run_measured(args)
    if getattr(args, "metrics", ""):
        raise ConfigError("--metrics: only with --measured RESULT.json")
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: expected >= 1")
    policies = parse_policies(args.policies)
    loads = parse_loads(args.loads)
    # the engine's verify layout, resolved once: every engine run and simulation below prices the same pass
    cfg = with_layout(load_config(args.config, list(args.set or []), base=VALIDATE_BASE), "engine")
    vllm = cfg.engine.backend == "vllm"  # docs/vllm.md; analysis/validate_vllm.py; never a silent native run
    if vllm:
        from engine.vllm.validate_route import check_validate

        check_validate(cfg, policies, loads, resolve_clock(args.clock, cfg), args)
    if cfg.workload.arrival != "offline":
        raise ConfigError("workload.arrival: validate makes its own arrivals (--loads); leave it 'offline'")
    if cfg.server.scheduler != "simple" and not vllm:  # calibrate.simulate_like_engine maps the native engine onto the simple loop
        raise ConfigError(f"server.scheduler: {cfg.server.scheduler!r} is not supported against the native engine "
                          "(it models vLLM: use it with --measured); leave it 'simple'")
    if cfg.engine.temperature > 0:
        print("note: temperature > 0: outputs differ between runs, so the trace replay is approximate", file=sys.stderr)
    from contract.outpaths import check_out_dir, default_run_folder

    out = check_out_dir(args.out or default_run_folder("validate"), force=getattr(args, "force", False))
    if args.profile:
        from contract.outpaths import check_in_file

        check_in_file(args.profile, "--profile")
        from contract.profile_table import ProfileTable

        ProfileTable.read(args.profile, key="--profile")  # a bad table is reported under the user's path, before the run
    with atomic_folder(out) as tmp:
        if vllm:
            from analysis.validate_vllm import validate as validate_vllm

            result = validate_vllm(cfg, policies, loads, tmp, args, resolve_clock(args.clock, cfg))
        else:
            result = _validate(cfg, policies, loads, tmp, args)
    return print_verdict(result, out, args)


def print_verdict(result: dict, out, args) -> int:
    """The error table (or --json contract), goal line and verdict; the exit code (--strict: 1 on a miss)."""
    missed, total = goal_counts(result)
    verdict = (f"verdict: all {total} accuracy goals met" if not missed else
               f"verdict: {missed} of {total} accuracy goals MISSED (the simulator is not validated for these)"
               + ("; exit 1 (--strict)" if getattr(args, "strict", False) else "; exit 0 (the run finished; "
                  "--strict exits 1)"))
    if args.json:
        print(json.dumps(_contract(result)))
        print(verdict, file=sys.stderr)
    else:
        print(format_table(error_table(result)))
        print(_goal_line(result))
        print(f"wrote {out}/validate.json, validate.md, scatter.png")
        print(verdict)
    return 1 if (missed and getattr(args, "strict", False)) else 0


def goal_counts(result: dict) -> tuple[int, int]:
    """(goals missed, goals checked): one goal per (policy-point, metric in GOALS) with a value."""
    t = error_table(result)
    checked = [(n, m) for n in t for m in GOALS if m in t[n] and t[n][m][2] is not None]
    missed = [(n, m) for n, m in checked if abs(t[n][m][2]) > GOALS[m]]
    return len(missed), len(checked)


def _contract(result: dict) -> dict:
    return {"policies": {n: {"measured": v["measured"], "simulated": v["simulated"]} for n, v in result["policies"].items()}}


def _goal_line(result: dict) -> str:
    t = error_table(result)
    bad = [f"{n}:{m} {100 * t[n][m][2]:+.1f}%" for n in t for m, tol in GOALS.items()
           if t[n][m][2] is not None and abs(t[n][m][2]) > tol]
    return "goals (throughput 5%, mean TPOT 10%): " + ("all met" if not bad else "missed: " + ", ".join(bad))


def record_replay(pair, cfg: Config, reqs, kmax: int, tmp: Path, tag: str = ""):
    """Trace mode over reqs (tetris selection, K = kmax drafts all verified): paths + fitted Beta."""
    from contract.trace import write_trace

    tpcfg = dataclasses.replace(cfg.policy, name="tetris", k=min(cfg.policy.k, kmax), extra=max(kmax - cfg.policy.k, 0))
    header, records = eio.record_trace(pair, cfg, tpcfg, reqs)
    raw, clean = tmp / f"trace{tag}.jsonl", tmp / f"trace_replay{tag}.jsonl"
    write_trace(raw, records, header)
    write_trace(clean, cal.clean_trace(records), header | {"cleaned": "valid prefixes, position - 1"})
    return clean, records, cal.fit_beta(records)


def _beta_acceptance(cfg: Config, beta: dict):
    return dataclasses.replace(cfg.acceptance, model="beta", beta_a=beta["beta_a"], beta_b=beta["beta_b"],
                               decay=beta["decay"], estimate="perfect")


def calibrate_costs(pair, cfg: Config, prof_path: Path, beta: dict, tmp: Path, clock: str, repeats: int):
    """Calibration runs (none and fixed k, offline) on OTHER requests (seed + 1000): the fitted cost section.
    They admit separately whatever server.admission says: every prefill is then a pass of its own, timed
    apart from the verification passes, which is what separates the prefill figures from target_scale.
    With server.admission = "mixed" a third run (fixed k, mixed) fits mixed_prefill_per_token_s, the cost
    of a prompt riding in a running pass (calibrate.fit_mixed)."""
    ccfg = dataclasses.replace(cfg, seed=cfg.seed + 1000, server=dataclasses.replace(cfg.server, admission="separate"))
    creqs = eio.build_requests(ccfg, pair.tokenizer, pair.path)
    cwl = cal.write_workload(tmp / "workload_calibration.jsonl", creqs)
    raw = dataclasses.replace(cfg.cost, model="table", table=str(prof_path), overhead_s=0.0, prefill_s=0.0,
                              prefill_per_token_s=0.0, prefill_call_s=0.0, draft_mode="sequential")
    cal_sim = dataclasses.replace(ccfg, cost=raw, acceptance=_beta_acceptance(cfg, beta))
    m_none = cal.at_reference_speed(eio.measure_best(pair, ccfg, _policy(cfg, "none"), creqs, False, repeats, clock))
    m_spec = cal.at_reference_speed(eio.measure_best(pair, ccfg, _policy(cfg, "fixed"), creqs, False, repeats, clock))
    fit = cal.fit_costs(m_none, cal.simulate_like_engine(cal_sim, _policy(cfg, "none"), cwl),
                        m_spec, cal.simulate_like_engine(cal_sim, _policy(cfg, "fixed"), cwl),
                        cfg.policy.k, sum(len(r.prompt) for r in creqs))
    if cfg.server.admission == "mixed":  # one more fixed-k run, mixed: the riding prompts' cost
        mcfg = dataclasses.replace(ccfg, server=cfg.server)
        m_mix = cal.at_reference_speed(eio.measure_best(pair, mcfg, _policy(cfg, "fixed"), creqs, False, repeats, clock))
        fit["mixed_prefill_per_token_s"] = cal.fit_mixed(m_mix, fit["prefill_per_token_s"])
    fit["calibration_seed"] = ccfg.seed
    fit["profile"] = str(prof_path)
    fitted = cal.scale_table(prof_path, tmp / "profile_fitted.csv", fit["target_scale"], fit["draft_scale"],
                             fit["spec_overhead_s"])
    return _fitted_cost(raw, fitted, fit), fit


def _fitted_cost(raw, table: Path, fit: dict):
    """The raw cost section with the fitted figures and the fitted table."""
    return dataclasses.replace(raw, table=str(table), overhead_s=fit["overhead_s"], prefill_call_s=fit["prefill_call_s"],
                               prefill_per_token_s=fit["prefill_per_token_s"],
                               mixed_prefill_per_token_s=fit.get("mixed_prefill_per_token_s", -1.0))


def compare(pair, cfg: Config, cost, trace_path: Path, beta: dict, pcfg, reqs, timed: bool, workload_path: Path,
            clock: str, repeats: int, fit: dict | None = None) -> dict:
    """One policy on one request list: engine (measured), trace replay and Beta-fit simulations."""
    m = eio.measure_best(pair, dataclasses.replace(cfg, cost=cost), pcfg, reqs, timed, repeats, clock)
    return simulate_point(cfg, cost, trace_path, beta, pcfg, reqs, workload_path, m, repeats, fit)


def simulate_point(cfg: Config, cost, trace_path: Path, beta: dict, pcfg, reqs, workload_path: Path, m,
                   repeats: int, fit: dict | None = None) -> dict:
    """The row for one measured engine run m: its metrics beside the two simulations of the same requests."""
    eng_cfg = dataclasses.replace(cfg, cost=cost)
    wl = cal.write_workload(workload_path, reqs)
    if fit is not None and m.speed != (1.0, 1.0):  # the fitted table at the machine speed probed before the run
        eng_cfg = dataclasses.replace(eng_cfg, cost=cal.speed_cost(cost, fit, m.speed, workload_path.parent,
                                                                   "_" + workload_path.stem))
    replay = dataclasses.replace(eng_cfg, acceptance=dataclasses.replace(cfg.acceptance, model="trace", trace=str(trace_path)))
    param = dataclasses.replace(eng_cfg, acceptance=_beta_acceptance(cfg, beta))
    s_rep = cal.simulate_like_engine(replay, pcfg, wl)
    s_par = cal.simulate_like_engine(param, pcfg, wl)
    return {
        "measured": _pick(m.summary), "simulated": _pick(s_rep), "simulated_parametric": _pick(s_par),
        "noise": {"throughput_spread": m.spread, "repeats": repeats, "speed": list(m.speed)},
        "components": {"measured": {"prefill_s": m.prefill_s, "draft_s": m.draft_s, "target_s": m.target_s,
                                    "other_s": m.duration_s - m.prefill_s - m.draft_s - m.target_s,
                                    "num_steps": m.num_steps, "duration_s": m.duration_s},
                       "simulated": {"prefill_s": s_rep.get("prefill_time_s"), "draft_s": s_rep.get("draft_time_s"),
                                     "target_s": s_rep.get("target_time_s"), "num_steps": s_rep.get("num_steps"),
                                     "duration_s": s_rep.get("duration_s")},
                       "padding": s_rep.get("padding")},
    }


def average_fits(prof_path: Path, raw_cost, fits: list[dict], tmp: Path):
    """The mean of each fitted figure over calibrations (before and after the measured runs: linear drift cancels)."""
    keys = ("overhead_s", "target_scale", "draft_scale", "spec_overhead_s", "prefill_call_s", "prefill_per_token_s")
    keys += ("mixed_prefill_per_token_s",) if all("mixed_prefill_per_token_s" in f for f in fits) else ()
    fit = dict(fits[0]) | {k: sum(f[k] for f in fits) / len(fits) for k in keys}
    fit["calibrations"] = [{k: f[k] for k in keys} for f in fits]
    table = cal.scale_table(prof_path, tmp / "profile_fitted.csv", fit["target_scale"], fit["draft_scale"], fit["spec_overhead_s"])
    return _fitted_cost(raw_cost, table, fit), fit


def resolve_clock(args_clock, cfg: Config) -> str:
    clock = args_clock or ("cpu" if cfg.engine.device == "cpu" else "wall")
    if clock == "cpu" and cfg.engine.threads != 1:
        raise ConfigError("engine.threads: --clock cpu needs a one-thread engine (engine.threads = 1)")
    return clock


def _validate(cfg: Config, policies, loads, tmp: Path, args) -> dict:
    t_start = time.perf_counter()
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else (lambda msg: None)
    clock = resolve_clock(args.clock, cfg)
    pair = eio.load(cfg)
    reqs = eio.build_requests(cfg, pair.tokenizer, pair.path)
    kmax = max(_max_drafts(cfg, policies), 1)
    log(f"validate: pair {pair.path}, {len(reqs)} requests, policies {policies}, loads {loads}")
    # 1. profile
    prof_path, prof_src = _profile(pair, cfg, reqs, kmax, tmp / "profile.csv", args.profile, clock)
    log(f"profile: {prof_src}; clock: {clock}")
    if args.speed_probe:  # the machine's speed when the profile was taken; each run is rescaled to its own
        ref = eio.set_speed_reference(pair, clock)
        log(f"speed probe {1e3 * ref[0]:.3f} / {1e3 * ref[1]:.3f} ms (target / draft)")
    # 2. acceptance trace (tetris selection, all K verified) + Beta fit
    trace_path, records, beta = record_replay(pair, cfg, reqs, kmax, tmp)
    log(f"trace: {len(records)} request-steps; fitted Beta(a={beta['beta_a']:.3f}, b={beta['beta_b']:.3f}), decay {beta['decay']:.3f}")
    # 3. fitted cost figures from calibration runs on other requests (again after step 4: drift)
    def fit_log(when, f):
        log(f"calibration {when} (none + fixed k={cfg.policy.k}, seed {f['calibration_seed']}): overhead "
            f"{1e3 * f['overhead_s']:.3f} ms/step, target x{f['target_scale']:.3f}, draft x{f['draft_scale']:.3f}, "
            f"spec +{1e3 * f['spec_overhead_s']:.3f} ms/step, prefill {1e3 * f['prefill_call_s']:.2f} ms/pass + {1e6 * f['prefill_per_token_s']:.2f} us/token")

    cost0, fit0 = calibrate_costs(pair, cfg, prof_path, beta, tmp, clock, args.repeats)
    fit_log("before", fit0)
    # 4. per load and policy: the engine runs
    measured, capacity = measure_points(pair, dataclasses.replace(cfg, cost=cost0), reqs, policies, loads, clock, args)
    _, fit1 = calibrate_costs(pair, cfg, prof_path, beta, tmp, clock, args.repeats)
    fit_log("after", fit1)
    cost, fit = average_fits(prof_path, cost0, [fit0, fit1], tmp)
    # 5. the simulations of the same requests
    rows: dict[str, dict] = {}
    for (ld, name), (pcfg, rq, m) in measured.items():
        if ld not in loads:
            continue
        row = simulate_point(cfg, cost, trace_path, beta, pcfg, rq, tmp / f"workload_{ld}_{name}.jsonl", m, args.repeats, fit)
        label = name if len(loads) == 1 else f"{name}@{ld}"
        rows[label] = {"load": ld, "rate": None if ld == "offline" else ld * capacity[name], **row}
    result = {"policies": rows, "loads": [str(x) for x in loads], "capacity_rps": capacity,
              "fits": {"beta": beta, **fit}, "sources": _sources(prof_src, args.speed_probe, cfg.server.admission),
              "pair": pair.path, "clock": clock, "repeats": args.repeats, "wall_s": time.perf_counter() - t_start}
    (tmp / "validate.json").write_text(json.dumps(result, indent=1, default=_json_default))
    (tmp / "config.toml").write_text(to_toml(cfg))
    (tmp / "validate.md").write_text(_markdown(result))
    from analysis.report import load_run, plot_scatter

    plot_scatter([load_run(tmp)], tmp / "scatter.png")
    return result


def measure_points(pair, cfg: Config, reqs, policies, loads, clock: str, args):
    """The engine runs, per load (offline first: Poisson loads are fractions of its capacity) and policy:
    ({(load, name): (pcfg, requests, Measured)}, {name: offline requests/s})."""
    from tqdm import tqdm

    measured: dict = {}
    capacity: dict[str, float] = {}
    order = ["offline"] + [x for x in loads if x != "offline"] if any(x != "offline" for x in loads) else loads
    points = [(ld, p) for ld in order for p in policies]
    for ld, name in tqdm(points, desc="validate", file=sys.stderr, leave=False, disable=None if not args.json else True):
        pcfg = _policy(cfg, name)
        if ld == "offline":
            rq, timed = reqs, False
        else:
            rq, timed = eio.with_arrivals(reqs, _poisson_arrivals(cfg, ld * capacity[name])), True
        m = eio.measure_best(pair, cfg, pcfg, rq, timed, args.repeats, clock)
        if ld == "offline":
            capacity[name] = m.summary["request_throughput"]
        measured[(ld, name)] = (pcfg, rq, m)
    return measured, capacity


def _sources(prof_src: str, speed_probe: bool, admission: str = "separate") -> dict:
    """Where each figure of validate.json comes from."""
    return {"profile": prof_src,
            "target_s, draft_s": "profile table (multilinear in batch, tokens/request, context) x fitted scales",
            "calibration": "two calibrations (before and after the measured runs), each figure averaged",
            "target_scale": "fitted: in-run / profiled target seconds, calibration runs (none, fixed)",
            "draft_scale": "fitted: in-run / profiled draft seconds, calibration run (fixed)",
            "spec_overhead_s": "fitted: calibration run (fixed): other seconds per step - overhead_s; on speculative table rows",
            "overhead_s": "fitted: calibration run (none): (duration - prefill - draft - target) / steps",
            "prefill_call_s": "fitted: each admission pass's seconds = prefill_call_s + its prompt tokens x prefill_per_token_s, "
                              "non-negative least squares over every pass of both calibration runs",
            "prefill_per_token_s": "fitted with prefill_call_s (calibrate.fit_prefill)",
            "mixed_prefill_per_token_s": ("server.admission = mixed: fitted from a third, mixed calibration run (fixed k): "
                                          "least squares of each step's target + draft seconds on its batch, drafts, "
                                          "verified and context tokens and the prompt tokens riding in it and in the "
                                          "step before (calibrate.fit_mixed)"
                                          if admission == "mixed" else "not used (server.admission = separate)"),
            "speed": ("every figure x (probe before the measured run / probe at profiling); probe = a fixed target "
                      "pass and draft forward" if speed_probe else "not rescaled (--speed-probe off)"),
            "acceptance (simulated)": "engine trace replay (trace_replay.jsonl)",
            "acceptance (simulated_parametric)": "Beta fitted to the trace's per-request acceptance"}


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return float(x)


def _markdown(result: dict) -> str:
    from analysis.validate_math import error_table

    lines = ["# Validation: simulator vs engine", "", f"Pair: `{result['pair']}`; loads {', '.join(result['loads'])}; "
             f"clock {result['clock']}; fastest of {result['repeats']} runs per point.", "",
             "## Relative error of the simulation (trace replay), per policy@load and metric", ""]
    summary = error_table(result)
    cols = list(METRICS)
    lines += ["| policy | noise | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, t in summary.items():
        nz = result["policies"][name].get("noise", {}).get("throughput_spread")
        lines.append(f"| {name} | {_p(nz).lstrip('+')} | " + " | ".join(_p(t[m][2]) for m in cols) + " |")
    lines += ["", "noise: spread (max - min) / fastest of the measured output throughput over the repeated runs.", ""]
    par = error_table({"policies": {n: {"measured": v["measured"], "simulated": v["simulated_parametric"]}
                                    for n, v in result["policies"].items()}})
    for name, t in error_table(result).items():
        lines += [f"## {name}", "", "| metric | measured | simulated (replay) | error | simulated (Beta fit) | error |",
                  "|---|---|---|---|---|---|"]
        for metric, (m, s, e) in t.items():
            _, sp, ep = par[name][metric]
            lines.append(f"| {metric} | {_f(m)} | {_f(s)} | {_p(e)} | {_f(sp)} | {_p(ep)} |")
        c = result["policies"][name]["components"]
        nz = result["policies"][name].get("noise", {})
        if nz.get("speed") and list(nz["speed"]) != [1.0, 1.0]:
            lines += ["", f"Machine speed before the run (probe / probe at profiling): target x{nz['speed'][0]:.3f}, "
                      f"draft x{nz['speed'][1]:.3f}."]
        pd = c.get("padding") or {}
        if pd:
            win = (f", longest / mean verify width {pd['window_max_over_mean']:.2f}" if pd["window_max_over_mean"] > 0 else "")
            lines += ["", f"Engine padding the simulator does not model: longest / mean context in the batch "
                      f"{pd['context_max_over_mean']:.2f}{win} (per-step means)."]
        lines += ["", f"Measurement noise: output_throughput spread (max - min) / fastest over {nz.get('repeats')} runs = "
                  f"{100 * nz.get('throughput_spread', 0.0):.1f}%."]
        lines += ["", "| seconds | prefill | draft | target | other | steps | duration |", "|---|---|---|---|---|---|---|",
                  "| measured | " + " | ".join(_f(c["measured"].get(k)) for k in ("prefill_s", "draft_s", "target_s", "other_s", "num_steps", "duration_s")) + " |",
                  "| simulated | " + " | ".join(_f(c["simulated"].get(k)) for k in ("prefill_s", "draft_s", "target_s")) + " | (in target) | "
                  + " | ".join(_f(c["simulated"].get(k)) for k in ("num_steps", "duration_s")) + " |", ""]
    lines += ["## Where the figures come from", ""] + [f"- {k}: {v}" for k, v in result["sources"].items()]
    f = result["fits"]
    lines += ["", f"Fitted: overhead_s = {f['overhead_s']:.6f} s/step, target x{f['target_scale']:.3f}, draft x{f['draft_scale']:.3f}, "
              f"prefill_call_s = {f.get('prefill_call_s', 0.0):.3e} s, prefill_per_token_s = {f['prefill_per_token_s']:.3e} s, "
              f"Beta(a={f['beta']['beta_a']:.3f}, b={f['beta']['beta_b']:.3f}), decay {f['beta']['decay']:.3f}.", ""]
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _p(e) -> str:
    return "-" if e is None else f"{100 * e:+.1f}%"
