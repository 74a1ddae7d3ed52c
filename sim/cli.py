"""`tetris simulate`: the simulator's command line (the project's main job)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from contract.runs import add_run_arguments

DEFAULT_SCENARIO = Path(__file__).with_name("default.toml")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate batched speculative-decoding serving and compare policies",
        description="Simulate batched speculative decoding (discrete-event, simpy). Without --config it runs the "
        "embedded default scenario (512 requests at t=0, batch 64, Vicuna-33B/68M on 4xH100, easy/hard mix) for "
        "no speculation, fixed k=1..6, DSD and TETRIS (e=1..3), prints a comparison table and writes a run folder.",
    )
    add_run_arguments(p, "scenario file (default: the embedded paper-like scenario)")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>-<scenario>); must be new, "
                   "or a previous run folder with --force")
    p.add_argument("--force", action="store_true", help="replace --out if it is a previous run folder of this tool")
    p.add_argument("--steps", action="store_true", help="also write steps.csv (one row per step)")
    p.add_argument("--no-requests", action="store_true", help="do not write requests.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate)


def _simulate(args) -> int:
    import tomllib

    from contract.config import load_config
    from contract.outpaths import check_out_dir, default_run_folder
    from sim.simulate import check, comparison_table, run_to_folder, size_warning, summary_json

    base = None if args.config else tomllib.loads(DEFAULT_SCENARIO.read_text())
    cfg = load_config(args.config, args.overrides, base=base)
    name = Path(args.config).stem if args.config else "default"
    out = Path(args.out) if args.out else default_run_folder(name)
    check_out_dir(out, force=args.force)
    prepared = check(cfg, args.policy)  # one cost model, request count and set of variants for the whole run
    note = size_warning(cfg, len(prepared.todo), prepared)
    if note:
        print(note, file=sys.stderr)
    t0 = time.perf_counter()
    results = run_to_folder(out, cfg, only=args.policy, progress=not args.quiet, requests=not args.no_requests,
                            steps=args.steps, prepared=prepared)
    wall = time.perf_counter() - t0
    if args.json:
        sys.stdout.write(summary_json(results))
    else:
        tokens = sum(r.summary["output_tokens"] for r in results.values())
        print(comparison_table(results))
        print(f"\n{len(results)} policies, {tokens} simulated output tokens in {wall:.2f} s "
              f"({tokens / max(wall, 1e-9):,.0f} tokens/s); run folder: {out}")
    return 0
