"""Table of scripts/bench_serve.sh results beside the simulator's prediction (a `tetris validate` run).

    python3 scripts/bench_serve_table.py OUT_DIR [VALIDATE_DIR]

Per policy and rate: the client's output_throughput, mean / p99 TPOT, mean / p99 TTFT (each
round, then the mean of rounds); with VALIDATE_DIR the validate run's measured (batch engine,
CPU clock) and simulated (engine-calibrated cost model) figures at the same rate.
"""
from __future__ import annotations

import glob
import json
import sys
from pathlib import Path


def main(out: str, validate: str | None = None) -> None:
    sim = {}
    if validate:
        v = json.loads((Path(validate) / "validate.json").read_text())
        for label, row in v["policies"].items():
            if row.get("rate"):
                sim[(label.split("@")[0], round(row["rate"], 3))] = row
    print("| policy | rate req/s | source | output tok/s | mean TPOT ms | p99 TPOT ms | mean TTFT ms | p99 TTFT ms | server CPU ms/token |")
    print("|---|---|---|---|---|---|---|---|---|")
    groups: dict = {}
    for f in sorted(glob.glob(f"{out}/*-r*-*.json")):
        r = json.loads(Path(f).read_text())
        pol = Path(f).name.split("-")[0]
        groups.setdefault((pol, float(r["request_rate"])), []).append(r)
    for (pol, rate), rs in sorted(groups.items()):
        for i, r in enumerate(rs):
            print(f"| {pol} | {rate:.3f} | serve, round {i + 1} ({r['completed']}/{r['num_prompts']}) | "
                  f"{r['output_throughput']:.1f} | {r['mean_tpot_ms']:.2f} | {r['p99_tpot_ms']:.2f} | "
                  f"{r['mean_ttft_ms']:.1f} | {r['p99_ttft_ms']:.1f} | {r.get('server_cpu_ms_per_output_token', float('nan')):.2f} |")
        row = sim.get((pol, round(rate, 3)))
        if row:
            for src in ("measured", "simulated"):
                m = row[src]
                print(f"| {pol} | {rate:.3f} | validate {src} | {m['output_throughput']:.1f} | "
                      f"{1e3 * m['mean_tpot_s']:.2f} | {1e3 * m.get('p99_tpot_s', float('nan')):.2f} | "
                      f"{1e3 * m.get('mean_ttft_s', float('nan')):.1f} | {1e3 * m['p99_ttft_s']:.1f} | |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
