"""`tetris plan`: SLO-meeting rate per replica for each policy, replicas for a target qps.

Steps (analysis/plan.py, analysis/plan_steady.py; docs/planning.md):
1. saturation: an offline run (all requests at t=0) per candidate gives its
   saturation throughput; no answer may reach it.
2. screen: every candidate, one seed, `screen` bisection rounds in (0, saturation).
3. refine: the best `keep` candidates of each family (none, fixed, dsd, tetris),
   every seed, --rounds rounds; each seed is an independent replication and the
   answer is their mean with a 95% Student-t interval.
Each probe is judged at steady state (warm-up and drain deleted, a growing queue
fails). Outputs in --out (default runs/plan): plan.json, plan.png (p99 TTFT and
p99 TPOT vs rate, one panel per SLO, chosen rate per family marked), config.toml,
points/ (the sweep cache: one JSON per simulated point, so a rerun resumes).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from analysis import plan
from analysis.sweep import atomic_write_text, run_sweep
from contract.config import Config, ConfigError, load_config, to_toml

# The scenario `tetris plan` starts from (the config file and --set go over it):
# a Vicuna-33B/68M-like pair on a 4xH100 roofline, an easy/hard acceptance mix;
# 3000 requests per probe (~90 s of simulated serving at the answer) so the
# queue has settled or visibly grown within the steady-state window.
PLAN_BASE = {
    "workload": {"arrival": "poisson", "num_requests": 3000,
                 "prompt_len": {"dist": "uniform", "low": 64, "high": 512},
                 "output_len": {"dist": "uniform", "low": 32, "high": 256}},
    "acceptance": {"model": "mixture", "easy_alpha": 0.9, "hard_alpha": 0.3, "easy_frac": 0.5},
    "cost": {"model": "roofline", "hardware": "H100", "num_gpus": 4,
             "target_preset": "vicuna-33b", "draft_preset": "vicuna-68m"},
    "server": {"max_batch": 64},
}

PLAN_KEYS = ("output_throughput", "request_throughput", "p99_ttft_s", "p99_tpot_s", "mean_ttft_s",
             "mean_tpot_s", "acceptance_length", "draft_acceptance_rate", "slo_attainment", "goodput")
SCREEN_ROUNDS = 5  # bisection rounds of the one-seed screen of every candidate
KEEP = 2  # candidates per family refined with every seed


def point(config: Config) -> dict:
    """One simulated run (worker side): steady-state metrics on the warm-up-deleted window."""
    from analysis.plan_steady import steady_metrics
    from analysis.simapi import simulate_result

    r = simulate_result(config)
    m = steady_metrics(r.columns, config.slo.ttft_s, config.slo.tpot_s)
    for k in ("acceptance_length", "draft_acceptance_rate"):
        v = r.summary.get(k)
        m[k] = float(v) if v is not None and math.isfinite(v) else None
    return m


def capacity_point(config: Config) -> dict:
    """Saturation throughput (worker side): an offline run's request and token throughput."""
    from analysis.simapi import simulate

    s = simulate(config)
    return {k: float(s[k]) for k in ("request_throughput", "output_throughput")}


def meets_steady(m: dict, slo_ttft: float, slo_tpot: float) -> bool:
    """A probe passes: no growing queue, and each set SLO met by the window's p99."""
    if m.get("overloaded"):
        return False
    if slo_ttft > 0 and not (m.get("p99_ttft_s") is not None and m["p99_ttft_s"] <= slo_ttft):
        return False
    if slo_tpot > 0 and not (m.get("p99_tpot_s") is None or m["p99_tpot_s"] <= slo_tpot):
        return False
    return True


def _ints(text: str, flag: str, lo: int) -> list[int]:
    parts = str(text).split(",")
    if any(not x.strip() for x in parts):
        raise ConfigError(f"{flag} {text!r}: empty item; expected comma-separated integers such as 1,2,3")
    try:
        vals = [int(x) for x in parts]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not vals or min(vals) < lo:
        raise ConfigError(f"{flag} {text!r}: expected integers >= {lo}")
    return sorted(set(vals))


def _with(config: Config, policy: dict, **workload) -> Config:
    data = {"policy": policy, "workload": workload}
    import dataclasses

    from contract.config import build  # same validation as load_config

    merged = dataclasses.asdict(config)
    for sec, vals in data.items():
        merged[sec].update(vals)
    return build(Config, merged)


def run(args) -> int:
    for flag, v in (("--slo-tpot-p99", args.slo_tpot_p99), ("--slo-ttft-p99", args.slo_ttft_p99)):
        if v is None or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{flag} {v!r}: expected a number >= 0 (0 = no such SLO)")
    if args.qps is None or not math.isfinite(args.qps) or args.qps <= 0:
        raise ConfigError(f"--qps {args.qps!r}: expected a number > 0")
    if args.slo_tpot_p99 <= 0 and args.slo_ttft_p99 <= 0:
        raise ConfigError("--slo-tpot-p99 / --slo-ttft-p99: set at least one SLO > 0")
    if args.seeds < 2:
        raise ConfigError(f"--seeds {args.seeds}: expected >= 2 (the confidence interval needs replications)")
    if args.rounds < 1:
        raise ConfigError(f"--rounds {args.rounds}: expected >= 1")
    ks = _ints(args.k, "--k", 1)
    extras = _ints(args.extra, "--extra", 1)
    tks = _ints(args.tetris_k, "--tetris-k", 1) if args.tetris_k else ks
    from contract.outpaths import check_out_dir

    out = check_out_dir(args.out, flag="--out", resume=True)  # an earlier plan folder resumes from its cache
    overrides = list(args.set or []) + [f"slo.ttft_s={args.slo_ttft_p99!r}", f"slo.tpot_s={args.slo_tpot_p99!r}"]
    base = load_config(args.config, overrides, base=PLAN_BASE)
    if base.workload.arrival not in ("poisson", "gamma"):
        raise ConfigError(f"workload.arrival {base.workload.arrival!r}: plan searches the rate of poisson or gamma arrivals")
    from sim.simulate import check

    check(base)
    cands = plan.candidates(ks, extras, tks) | plan.goodput_candidates(ks, extras)
    seeds = [base.seed + i for i in range(args.seeds)]
    result = search(base, cands, seeds, args.rounds, out, args.scheduler, progress=not args.quiet,
                    screen_rounds=min(SCREEN_ROUNDS, args.rounds), keep=KEEP)
    rows, best = result["policies"], result["best"]
    for r in rows.values():
        r["replicas"] = _num(plan.replicas_needed(args.qps, r["max_rate"]))
        lo = r["max_rate"] - r["ci95"] if r["ci95"] is not None else 0.0
        r["replicas_at_lower_bound"] = _num(plan.replicas_needed(args.qps, lo))
    result = {"qps": args.qps, "slo": {"ttft_p99_s": args.slo_ttft_p99, "tpot_p99_s": args.slo_tpot_p99}} | result
    if best:
        best |= {"replicas": rows[best["candidate"]]["replicas"],
                 "replicas_at_lower_bound": rows[best["candidate"]]["replicas_at_lower_bound"]}
    out.mkdir(parents=True, exist_ok=True)
    from contract.outpaths import MARKER

    (out / MARKER).write_text("tetris plan folder: a rerun with the same --out resumes from points/\n")
    _plot(result, out / "plan.png")
    atomic_write_text(out / "config.toml", to_toml(base))
    atomic_write_text(out / "plan.json", json.dumps(result, indent=1, allow_nan=False, default=str))
    _print(result, args.qps)
    t = result["points"]
    if t["already_on_disk"]:
        print(f"resumed: {t['already_on_disk']} simulated points were already in {out}/points from an earlier run; "
              f"{t['computed']} computed now")
    print(f"wrote {out}/plan.json, plan.png, config.toml")
    return 0


def search(base: Config, cands: dict, seeds: list[int], rounds: int, out: Path, scheduler=None,
           progress: bool = True, screen_rounds: int = SCREEN_ROUNDS, keep: int = KEEP) -> dict:
    """Saturation, one-seed screen, all-seed refinement (module docstring); the plan.json body."""
    from analysis.sweep import code_version, config_key

    cache = out / "points" / code_version()  # points of another simulator version are not reused
    tally: dict = {"already_on_disk": len(list(cache.glob("*.json"))) if cache.is_dir() else 0}
    sweep_kw = dict(scheduler=scheduler, progress=progress, tally=tally)
    client = None
    if scheduler != "serial":
        from analysis.sweep import make_client

        client = make_client(scheduler, processes=True)
        sweep_kw = dict(client=client, progress=progress, tally=tally)
    slo_ttft, slo_tpot = base.slo.ttft_s, base.slo.tpot_s
    evals: dict = {}
    try:
        offline = {n: _with(base, pol, arrival="offline") for n, pol in cands.items()}
        cap = run_sweep(list(offline.values()), capacity_point, cache, desc="saturation", **sweep_kw)
        sat = {n: max(cap[config_key(c)]["request_throughput"] or 0.0, 1e-6) for n, c in offline.items()}

        def probe(pts):
            cfgs = {(key, r): _seeded(_with(base, cands[key[0]], rate=float(r)), key[1]) for key, r in pts}
            res = run_sweep(list(cfgs.values()), point, cache, desc="plan", **sweep_kw)
            oks = []
            for key, r in pts:
                m = res[config_key(cfgs[(key, r)])]
                evals[(key, r)] = m
                oks.append(meets_steady(m, slo_ttft, slo_tpot))
            return oks

        screen = plan.bisect_rates([(n, seeds[0]) for n in cands], probe, {(n, seeds[0]): sat[n] for n in cands},
                                   screen_rounds)
        chosen = _chosen(cands, {n: screen[(n, seeds[0])].lo for n in cands}, keep)
        keys = [(n, s) for n in chosen for s in seeds]
        refined = plan.bisect_rates(keys, probe, {k: sat[k[0]] for k in keys}, rounds)
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    rows = _rows(cands, chosen, seeds, screen, refined, evals, sat)
    fam_best, best = _best(cands, rows, chosen)
    probes = {n: [{"seed": s, "rate": r, **evals[((n, s), r)]} for s in (seeds if n in chosen else seeds[:1])
                  for r, _ in (refined if n in chosen else screen)[(n, s)].probes]
              for n in cands}
    return {"seeds": seeds, "rounds": rounds, "screen_rounds": screen_rounds, "best": best,
            "family_best": fam_best, "policies": rows, "probes": probes, "points": tally,
            "method": {"warmup_share": _steady("WARMUP"), "tail_share": _steady("TAIL"),
                       "requests_per_probe": base.workload.num_requests, "interval": "95% Student-t over seeds"}}


def _chosen(cands: dict, screened: dict[str, float], keep: int) -> list[str]:
    """The `keep` best screened candidates of each policy family (by screened max rate)."""
    chosen = []
    for fam in dict.fromkeys(plan.family(pol) for pol in cands.values()):
        names = sorted((n for n in cands if plan.family(cands[n]) == fam), key=lambda n: -screened[n])
        chosen += names[:keep]
    return chosen


def _rows(cands: dict, chosen: list, seeds: list, screen: dict, refined: dict, evals: dict, sat: dict) -> dict:
    """plan.json "policies": per candidate, its max rate (mean over seeds when refined) and CI."""
    rows = {}
    for n, pol in cands.items():
        if n in chosen:
            per_seed = [refined[(n, s)] for s in seeds]
            stage = "refined"
        else:
            per_seed = [screen[(n, seeds[0])]]
            stage = "screened (1 seed)"
        rates = [b.lo for b in per_seed]
        mean, half = plan.confidence(rates)
        at = _mean([evals[((n, s), b.lo)] for s, b in zip(seeds, per_seed) if b.lo > 0])
        rows[n] = {"policy": pol, "family": plan.family(pol), "stage": stage, "max_rate": mean,
                   "ci95": None if not math.isfinite(half) else half, "per_seed": rates,
                   "resolution": max(b.hi - b.lo for b in per_seed), "saturation_rps": sat[n],
                   "offline_capacity_rps": sat[n], "at_max_rate": at}
    return rows


def _best(cands: dict, rows: dict, chosen: list) -> tuple[dict, dict | None]:
    """({family: its best refined candidate}, the best overall with the candidates tied within the CI)."""
    fam_best = {}
    for n in chosen:
        f = plan.family(cands[n])
        if f not in fam_best or rows[n]["max_rate"] > rows[fam_best[f]]["max_rate"]:
            fam_best[f] = n
    best = None
    if any(rows[n]["max_rate"] > 0 for n in fam_best.values()):
        name = max(fam_best.values(), key=lambda n: rows[n]["max_rate"])
        ties = [n for n in fam_best.values() if n != name and rows[n]["ci95"] is not None
                and rows[n]["max_rate"] + rows[n]["ci95"] >= rows[name]["max_rate"] - rows[name]["ci95"]]
        best = {"candidate": name, "policy": rows[name]["policy"], "max_rate": rows[name]["max_rate"],
                "ci95": rows[name]["ci95"], "tied_within_ci": ties}
    return fam_best, best


def _steady(name: str):
    from analysis import plan_steady

    return getattr(plan_steady, name)


def _seeded(config: Config, seed: int) -> Config:
    import dataclasses

    return dataclasses.replace(config, seed=seed)


def _mean(sums: list[dict]) -> dict:
    out = {}
    for k in PLAN_KEYS:
        vals = [s[k] for s in sums if s.get(k) is not None and math.isfinite(s[k])]
        if vals:
            out[k] = sum(vals) / len(vals)
    return out


def _num(x: float):
    return x if math.isfinite(x) else None


def _print(result: dict, qps: float) -> None:
    rows, best = result["policies"], result["best"]
    print(f"{'policy':<22} {'max req/s':>10} {'+-95%':>7} {'sat.':>7} {'replicas':>9} {'tok/s':>8} {'p99 TTFT':>9} "
          f"{'p99 TPOT':>9} {'acc.len':>8}  stage")
    for n, r in rows.items():
        a = r["at_max_rate"]
        rep = "inf" if r["replicas"] is None else f"{int(r['replicas'])}"
        ci = "-" if r["ci95"] is None else f"{r['ci95']:.2f}"
        print(f"{n:<22} {r['max_rate']:>10.2f} {ci:>7} {r['saturation_rps']:>7.2f} {rep:>9} "
              f"{a.get('output_throughput', float('nan')):>8.0f} {a.get('p99_ttft_s', float('nan')):>9.3f} "
              f"{a.get('p99_tpot_s', float('nan')):>9.4f} {a.get('acceptance_length', float('nan')):>8.2f}  {r['stage']}")
    fb = result["family_best"]
    print("best per family: " + "; ".join(f"{f}: {n} {rows[n]['max_rate']:.2f} +- {rows[n]['ci95'] or float('nan'):.2f}"
                                          for f, n in fb.items()))
    if best:
        tie = f" (tied within the 95% intervals with {', '.join(best['tied_within_ci'])})" if best["tied_within_ci"] else ""
        print(f"best: {best['candidate']}: {best['max_rate']:.2f} +- {best['ci95'] or float('nan'):.2f} req/s per replica "
              f"(95% CI over {len(result['seeds'])} seeds), {int(best['replicas'])} replicas for {qps:g} req/s "
              f"({int(best['replicas_at_lower_bound']) if best['replicas_at_lower_bound'] else 'inf'} at the lower bound){tie}")
    else:
        print("no policy meets the SLOs at any rate below saturation")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["slo"]
    panels = [(k, lab, slo) for k, lab, slo in (("p99_ttft_s", "p99 TTFT (s)", s["ttft_p99_s"]),
                                                 ("p99_tpot_s", "p99 TPOT (s)", s["tpot_p99_s"])) if slo > 0]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    fams = result["family_best"]
    colors = dict(zip(fams, plt.cm.tab10.colors))
    for ax, (key, label, slo) in zip(axes[0], panels):
        for f, n in fams.items():
            pts = sorted((p["rate"], p[key]) for p in result["probes"][n] if p.get(key) is not None and not p.get("overloaded"))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=colors[f], alpha=0.6, label=f"{f}: {n}")
            r = result["policies"][n]
            if r["max_rate"] > 0:
                ax.axvline(r["max_rate"], color=colors[f], lw=1.2)
                if r["ci95"]:
                    ax.axvspan(r["max_rate"] - r["ci95"], r["max_rate"] + r["ci95"], color=colors[f], alpha=0.12)
        ax.axhline(slo, color="k", ls="--", lw=1, label=f"SLO {slo:g} s")
        if key == "p99_ttft_s":
            ax.set_yscale("log")
        ax.set_xlabel("request rate per replica (req/s)")
        ax.set_ylabel(label + " (steady-state window)")
        ax.set_title(f"{label}: probes (dots), chosen rate +- 95% CI (line, band)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(wspace=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
