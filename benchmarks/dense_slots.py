"""Do dense slots pay? The engine with and without compaction on finish (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/dense_slots.py [--pair smollm|tiny|DIR] [--batch 8] [--num-requests 32]
        [--policies none,fixed] [--k 2] [--load 0.5] [--repeats 2] [--set KEY=TOML ...]

When a request finishes, its slot frees; Engine(compact=True) (the default) moves the running request of
the highest slot into the hole, so a step's rows are slots 0..n-1. compact=False leaves the hole until a
join fills it, and a decoding pass computes every row of the slot span lo..hi-1, empty ones included. The
holes appear where requests finish at different steps and nobody joins at once: under load and in the
drain at the end of an offline run. The validate scenario's requests (prompts 32-96, outputs 24-64),
one torch thread, CPU clock; per policy the offline capacity (requests/s, compact) is measured first,
then Poisson arrivals at --load x that rate; runs interleaved compact, holes, compact, holes ...
(--repeats pairs), the median of each reported and the paired ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run_once(pair, cfg, pcfg, reqs, timed: bool, compact: bool) -> dict:
    import numpy as np

    from analysis import engine_io as eio
    from contract.metrics import summarize
    from engine.clock import make_clock
    from engine.run import run

    eng = eio._engine(pair, cfg, pcfg, clock=make_clock("cpu"))
    eng.compact = compact
    res = run(eng, eio._seqs(cfg, reqs), cfg.server.max_batch, timed=timed)
    s = summarize(res.records, res.stats, res.duration_s, cfg.slo)
    log = np.asarray(res.step_log, dtype=float).reshape(-1, 7)
    return {"tok_s": s["output_throughput"], "tpot_ms": 1e3 * s["mean_tpot_s"], "req_s": s["request_throughput"],
            "ms_step": 1e3 * float((log[:, 5] + log[:, 6]).mean()), "batch": float(log[:, 0].mean()),
            "steps": len(log)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", default="smollm")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--policies", default="none,fixed")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--load", type=float, default=0.5, help="Poisson rate as a fraction of the offline capacity")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=TOML")
    args = ap.parse_args(argv)
    from analysis import engine_io as eio
    from analysis.validate import VALIDATE_BASE, _poisson_arrivals
    from contract.config import ConfigError, load_config, with_layout

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    try:
        for flag, value, ok in (("--batch", args.batch, args.batch >= 1), ("--num-requests", args.num_requests, args.num_requests >= 1),
                                ("--k", args.k, args.k >= 1), ("--load", args.load, 0 < args.load < 1),
                                ("--repeats", args.repeats, args.repeats >= 1),
                                ("--policies", args.policies, bool(policies) and set(policies) <= {"none", "fixed"})):
            if not ok:
                raise ConfigError(f"{flag}: {value!r} is out of range")
        sets = [f"engine.pair={args.pair!r}".replace("'", '"'), f"server.max_batch={args.batch}",
                f"workload.num_requests={args.num_requests}", f"policy.k={args.k}", *args.set]
        cfg = with_layout(load_config(None, sets, base=VALIDATE_BASE), "engine")
    except ConfigError as e:
        print(f"dense_slots: error: {e}", file=sys.stderr)
        return 2
    pair = eio.load(cfg)
    reqs = eio.build_requests(cfg, pair.tokenizer, pair.path)
    print(f"| policy | arrivals | compact tok/s | holes tok/s | compact / holes | TPOT ms compact / holes "
          f"| ms per step compact / holes | mean batch |")
    print("|---|---|---|---|---|---|---|---|")
    for name in policies:
        pcfg = dataclasses.replace(cfg.policy, name=name, k=args.k)
        cap = run_once(pair, cfg, pcfg, reqs, False, True)["req_s"]
        loaded = eio.with_arrivals(reqs, _poisson_arrivals(cfg, args.load * cap))
        for label, rq, timed in (("offline", reqs, False), (f"Poisson {args.load:g} x {cap:.2f} req/s", loaded, True)):
            runs = {True: [], False: []}
            for _ in range(args.repeats):
                for compact in (True, False):
                    runs[compact].append(run_once(pair, cfg, pcfg, rq, timed, compact))
            med = {c: {k: statistics.median(r[k] for r in runs[c]) for k in runs[c][0]} for c in runs}
            ratio = statistics.median(a["tok_s"] / b["tok_s"] for a, b in zip(runs[True], runs[False]))
            print(f"| {name}{'' if name == 'none' else f' k={args.k}'} | {label} | {med[True]['tok_s']:.1f} | "
                  f"{med[False]['tok_s']:.1f} | {ratio:.3f}x | {med[True]['tpot_ms']:.1f} / {med[False]['tpot_ms']:.1f} | "
                  f"{med[True]['ms_step']:.1f} / {med[False]['ms_step']:.1f} | {med[True]['batch']:.2f} / "
                  f"{med[False]['batch']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
