"""Where does speculation stop paying? The calibrated simulator's answer per batch size (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/sim_crossover.py --validate RUN --profile PROFILE.csv
        [--batches 1,8,16,32,64] [--prompt-len 96] [--output-len 64] [--max-k 4]

RUN is a `tetris validate` folder (its config.toml and validate.json: fitted step-cost scales,
per-step overheads, Beta acceptance); PROFILE.csv a `tetris profile` table that covers the batch
sizes asked (validate's own profile stops at server.max_batch). Per batch B the simulator serves 2B
requests at t = 0 (prompt/output lengths fixed, as benchmarks/engine_sweep.py) with plain decoding,
fixed k = 1..max-k and TETRIS (k = best fixed, extra 1..3, fixed and goodput budget), and prints the
same table as engine_sweep.py: best fixed x plain, best policy x plain, and the first batch where no
speculative policy beats plain, to set beside the engine's measured one.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import calibrate as cal  # noqa: E402
from analysis.simapi import simulate  # noqa: E402
from contract.config import PolicyConfig, load_config  # noqa: E402


def calibrated(run: Path, fits: dict, table: Path, batch: int, prompt_len: int, output_len: int):
    """validate's fitted simulator (scaled cost table, overheads, Beta acceptance) on batch B offline."""
    beta = fits["beta"]
    return load_config(run / "config.toml", [
        f"server.max_batch={batch}", f"workload.num_requests={max(2 * batch, 4)}", 'workload.arrival="offline"',
        f'workload.prompt_len={{dist="fixed",value={prompt_len}}}',
        f'workload.output_len={{dist="fixed",value={output_len - 1}}}',  # engine semantics: first token from prefill
        'cost.model="table"', f'cost.table="{table}"', f"cost.overhead_s={fits['overhead_s']}", "cost.prefill_s=0.0",
        f"cost.prefill_per_token_s={fits['prefill_per_token_s']}", f"cost.prefill_call_s={fits.get('prefill_call_s', 0.0)}", 'cost.draft_mode="sequential"',
        'acceptance.model="beta"', f"acceptance.beta_a={beta['beta_a']}", f"acceptance.beta_b={beta['beta_b']}",
        f"acceptance.decay={beta['decay']}", 'acceptance.estimate="perfect"'])


def throughput(cfg, **policy) -> float:
    return simulate(dataclasses.replace(cfg, policy=PolicyConfig(**policy)))["output_throughput"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validate", required=True, type=Path, help="a `tetris validate` run folder")
    ap.add_argument("--profile", required=True, type=Path, help="a `tetris profile` CSV covering the batches")
    ap.add_argument("--batches", default="1,8,16,32,64")
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--max-k", type=int, default=4)
    args = ap.parse_args(argv)
    for p in (args.validate / "validate.json", args.validate / "config.toml", args.profile):
        if not p.is_file():
            print(f"sim_crossover: {p}: no such file", file=sys.stderr)
            return 2
    try:
        batches = [int(x) for x in args.batches.split(",")]
    except ValueError:
        print(f"sim_crossover: --batches: {args.batches!r}: expected a comma list of integers", file=sys.stderr)
        return 2
    fits = json.loads((args.validate / "validate.json").read_text())["fits"]
    print("| batch | plain tok/s | best fixed k | best fixed x plain | best TETRIS | best TETRIS x plain | TETRIS / best fixed |")
    print("|---|---|---|---|---|---|---|")
    stops = None
    with tempfile.TemporaryDirectory() as d:
        table = cal.scale_table(args.profile, Path(d) / "profile_fitted.csv", fits["target_scale"], fits["draft_scale"],
                                fits["spec_overhead_s"])
        for b in batches:
            cfg = calibrated(args.validate, fits, table, b, args.prompt_len, args.output_len)
            plain = throughput(cfg, name="none")
            fixed = {k: throughput(cfg, name="fixed", k=k) for k in range(1, args.max_k + 1)}
            kb = max(fixed, key=fixed.get)
            tet = {f"e{e}{'-goodput' if bud == 'goodput' else ''}": throughput(cfg, name="tetris", k=kb, extra=e, budget=bud)
                   for e in (1, 2, 3) for bud in ("fixed", "goodput")}
            tb = max(tet, key=tet.get)
            best = max(fixed[kb], tet[tb])
            if stops is None and best < plain:
                stops = b
            print(f"| {b} | {plain:.1f} | k{kb} | {fixed[kb] / plain:.3f}x | {tb} | {tet[tb] / plain:.3f}x | "
                  f"{tet[tb] / fixed[kb]:.3f}x |", flush=True)
    print(f"Simulated: speculation stops paying (best speculative policy < plain) at batch: {stops or 'none of ' + args.batches}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
