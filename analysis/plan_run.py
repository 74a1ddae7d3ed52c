"""`tetris plan`: SLO-meeting rate per replica for each policy, replicas for a target qps.

Outputs in --out (default runs/plan): plan.json, plan.png (SLO attainment vs
rate per policy), config.toml (the resolved base config), points/ (the sweep
cache: one JSON per simulated (policy, rate, seed), so a rerun resumes).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from analysis import plan
from analysis.sweep import atomic_write_text, run_sweep
from theory.config import Config, ConfigError, load_config, to_toml

# The scenario `tetris plan` starts from (the config file and --set go over it):
# a Vicuna-33B/68M-like pair on a 4xH100 roofline, an easy/hard acceptance mix,
# small enough that the default search runs in a minute or two on 2 cores.
PLAN_BASE = {
    "workload": {"arrival": "poisson", "num_requests": 200,
                 "prompt_len": {"dist": "uniform", "low": 64, "high": 512},
                 "output_len": {"dist": "uniform", "low": 32, "high": 256}},
    "acceptance": {"model": "mixture", "easy_alpha": 0.9, "hard_alpha": 0.3, "easy_frac": 0.5},
    "cost": {"model": "roofline", "hardware": "H100", "num_gpus": 4,
             "target_preset": "vicuna-33b", "draft_preset": "vicuna-68m"},
    "server": {"max_batch": 64},
}

PLAN_KEYS = ("output_throughput", "request_throughput", "p99_ttft_s", "p99_tpot_s", "mean_ttft_s",
             "mean_tpot_s", "acceptance_length", "draft_acceptance_rate", "slo_attainment", "goodput")


def point(config: Config) -> dict:
    """One simulated run (worker side): the metrics the plan needs."""
    from analysis.simapi import simulate

    s = simulate(config)
    return {k: (float(s[k]) if s.get(k) is not None else None) for k in PLAN_KEYS}


def _ints(text: str, flag: str, lo: int) -> list[int]:
    try:
        vals = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not vals or min(vals) < lo:
        raise ConfigError(f"{flag} {text!r}: expected integers >= {lo}")
    return sorted(set(vals))


def _with(config: Config, policy: dict, **workload) -> Config:
    data = {"policy": policy, "workload": workload}
    import dataclasses

    from theory.config import _build  # same validation as load_config

    merged = dataclasses.asdict(config)
    for sec, vals in data.items():
        merged[sec].update(vals)
    return _build(Config, merged)


def run(args) -> int:
    for flag, v in (("--qps", args.qps), ("--slo-tpot-p99", args.slo_tpot_p99), ("--slo-ttft-p99", args.slo_ttft_p99)):
        if v is None or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{flag} {v!r}: expected a number >= 0")
    if args.qps <= 0:
        raise ConfigError(f"--qps {args.qps!r}: expected a number > 0")
    if args.slo_tpot_p99 <= 0 and args.slo_ttft_p99 <= 0:
        raise ConfigError("--slo-tpot-p99 / --slo-ttft-p99: set at least one SLO > 0")
    if args.seeds < 1 or args.rounds < 1:
        raise ConfigError("--seeds and --rounds must be >= 1")
    ks = _ints(args.k, "--k", 1)
    extras = _ints(args.extra, "--extra", 1)
    tks = _ints(args.tetris_k, "--tetris-k", 1) if args.tetris_k else ks
    overrides = list(args.set or []) + [f"slo.ttft_s={args.slo_ttft_p99!r}", f"slo.tpot_s={args.slo_tpot_p99!r}"]
    base = load_config(args.config, overrides, base=PLAN_BASE)
    if base.workload.arrival not in ("poisson", "gamma"):
        raise ConfigError(f"workload.arrival {base.workload.arrival!r}: plan searches the rate of poisson or gamma arrivals")
    out = Path(args.out)
    cands = plan.candidates(ks, extras, tks)
    seeds = [base.seed + i for i in range(args.seeds)]
    from analysis.sweep import code_version

    cache = out / "points" / code_version()  # points of another simulator version are not reused
    sweep_kw = dict(scheduler=args.scheduler, progress=not args.quiet)
    client = None
    if args.scheduler not in ("serial",):
        from analysis.sweep import make_client

        client = make_client(args.scheduler, processes=True)
        sweep_kw = dict(client=client, progress=not args.quiet)
    try:
        # offline capacity (requests/s) per candidate: the bisection's first upper probe
        offline = {n: _with(base, pol, arrival="offline") for n, pol in cands.items()}
        cap = run_sweep(list(offline.values()), point, cache, desc="capacity", **sweep_kw)
        from analysis.sweep import config_key

        hi0 = {n: max(cap[config_key(c)]["request_throughput"] or 0.0, 1e-3) for n, c in offline.items()}
        evals: dict[tuple[str, float], list[dict]] = {}

        def probe(pts):
            cfgs = {(n, r, s): _seeded(_with(base, cands[n], rate=float(r)), s)
                    for n, r in pts for s in seeds}
            res = run_sweep(list(cfgs.values()), point, cache, desc="plan", **sweep_kw)
            oks = []
            for n, r in pts:
                sums = [res[config_key(cfgs[(n, r, s)])] for s in seeds]
                evals[(n, r)] = sums
                oks.append(plan.meets(sums, args.slo_ttft_p99, args.slo_tpot_p99))
            return oks

        brackets = plan.search_max_rates(list(cands), probe, hi0, rounds=args.rounds)
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
    rows = _rows(cands, brackets, evals, hi0, args.qps)
    best = _best(rows)
    result = {"qps": args.qps, "slo": {"ttft_p99_s": args.slo_ttft_p99, "tpot_p99_s": args.slo_tpot_p99},
              "seeds": seeds, "rounds": args.rounds, "best": best, "policies": rows,
              "probes": {n: [{"rate": r, **_mean(evals.get((n, r), []))} for r, _ in b.probes]
                         for n, b in brackets.items()}}
    out.mkdir(parents=True, exist_ok=True)
    _plot(result, out / "plan.png")
    atomic_write_text(out / "config.toml", to_toml(base))
    atomic_write_text(out / "plan.json", json.dumps(result, indent=1, allow_nan=False, default=str))
    _print(rows, best, args.qps)
    print(f"wrote {out}/plan.json, plan.png, config.toml")
    return 0


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


def _rows(cands, brackets, evals, hi0, qps) -> dict:
    rows = {}
    for n, pol in cands.items():
        b = brackets[n]
        at = _mean(evals.get((n, b.lo), [])) if b.lo > 0 else {}
        rows[n] = {"policy": pol, "max_rate": b.lo, "upper_rate": b.hi if math.isfinite(b.hi) else None,
                   "offline_capacity_rps": hi0[n], "replicas": _num(plan.replicas_needed(qps, b.lo)),
                   "at_max_rate": at}
    return rows


def _num(x: float):
    return x if math.isfinite(x) else None


def _best(rows: dict) -> dict | None:
    ok = [(r["max_rate"], n) for n, r in rows.items() if r["max_rate"] > 0]
    if not ok:
        return None
    rate, name = max(ok, key=lambda t: (t[0], -list(rows).index(t[1])))
    return {"candidate": name, "policy": rows[name]["policy"], "max_rate": rate, "replicas": rows[name]["replicas"]}


def _print(rows: dict, best, qps: float) -> None:
    print(f"{'policy':<18} {'max req/s':>10} {'replicas':>9} {'tok/s':>9} {'p99 TTFT':>9} {'p99 TPOT':>9} {'acc.len':>8}")
    for n, r in rows.items():
        a = r["at_max_rate"]
        rep = "inf" if r["replicas"] is None else f"{int(r['replicas'])}"
        mark = ">=" if r["upper_rate"] is None else ""  # still met at the largest rate tried
        print(f"{n:<18} {mark + format(r['max_rate'], '.3f'):>10} {rep:>9} {a.get('output_throughput', float('nan')):>9.1f} "
              f"{a.get('p99_ttft_s', float('nan')):>9.3f} {a.get('p99_tpot_s', float('nan')):>9.4f} "
              f"{a.get('acceptance_length', float('nan')):>8.2f}")
    if best:
        print(f"best: {best['candidate']}: {best['max_rate']:.3f} req/s per replica, {int(best['replicas'])} replicas for {qps:g} req/s")
    else:
        print("no policy meets the SLOs at any rate searched")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (n, probes) in enumerate(result["probes"].items()):
        pts = sorted((p["rate"], p.get("slo_attainment")) for p in probes if p.get("slo_attainment") is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=n, color=plt.cm.tab20(i % 20),
                    linestyle="--" if n.startswith("fixed") else "-")
    ax.set_xlabel("request rate per replica (req/s)")
    ax.set_ylabel("SLO attainment (share of requests meeting both SLOs)")
    s = result["slo"]
    ax.set_title(f"SLO attainment vs rate (p99 TTFT <= {s['ttft_p99_s']:g}s, p99 TPOT <= {s['tpot_p99_s']:g}s)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
