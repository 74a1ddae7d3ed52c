"""Simulator speed: simulated output tokens per second, whole process, one core.

    python3 benchmarks/bench_sim.py            # default scenario, 10k Poisson, memory at 10k/100k/1M requests
    python3 benchmarks/bench_sim.py --quick    # skip the 1M-request memory run

Each case runs `tetris simulate` in a fresh child process (imports, workload
generation, simulation, run folder and all) and reports wall seconds, CPU
seconds (user + sys of the child), output tokens per wall second and per CPU
second, and the child's peak RSS. On a shared machine CPU seconds are the
steadier figure. All cases use the TETRIS policy from [policy] (k=3, extra=2)
unless they say otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# the default scenario's model (roofline 4xH100, Vicuna-33B/68M, easy/hard mix) with Poisson arrivals
POISSON_10K = ["workload.arrival=\"poisson\"", "workload.rate=18.0", "workload.num_requests=10000"]
# flat-memory runs: short requests so a million of them finish in reasonable time
SHORT = ["workload.arrival=\"poisson\"", "workload.rate=4000.0", "server.max_batch=64",
         "workload.prompt_len={dist=\"fixed\", value=16}", "workload.output_len={dist=\"fixed\", value=16}"]

CASES = [
    ("default scenario, TETRIS", ["--policy", "tetris"]),
    ("default scenario, all 11 policies", []),
    ("10k Poisson (rate 18/s), TETRIS", ["--policy", "tetris"] + [a for o in POISSON_10K for a in ("--set", o)]),
]
MEMORY = [(n, ["--policy", "tetris"] + [a for o in SHORT + [f"workload.num_requests={n}"] for a in ("--set", o)])
          for n in (10_000, 100_000, 1_000_000)]


def run_case(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", "import sys, tetris_cli; sys.exit(tetris_cli.main())", "simulate", "--quiet",
               "--json", "--no-requests", "--out", os.path.join(tmp, "run"), *args]
        code = ("import resource, subprocess, sys, time, json\n"
                "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
                "wall = time.perf_counter() - t; u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
                "print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'err': p.stderr[-2000:], 'wall': wall,"
                " 'cpu': u.ru_utime + u.ru_stime, 'rss_mb': u.ru_maxrss / 1024}))\n")
        res = json.loads(subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True,
                                        check=True).stdout)
    if res["rc"] != 0:
        raise SystemExit(f"case failed: {res['err']}")
    policies = json.loads(res["out"])["policies"]
    res["tokens"] = sum(p["output_tokens"] for p in policies.values())
    res["policies"] = policies
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 1M-request memory run")
    args = ap.parse_args()
    print(f"{'case':<42} {'tokens':>11} {'wall s':>8} {'cpu s':>8} {'tok/wall-s':>12} {'tok/cpu-s':>12} {'peak RSS MB':>12}")
    cases = CASES + [(f"{n:,} short Poisson requests (16+16 tok), TETRIS", a) for n, a in MEMORY
                     if not (args.quick and n >= 1_000_000)]
    for name, case_args in cases:
        r = run_case(case_args)
        print(f"{name:<42} {r['tokens']:>11,} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['tokens'] / r['wall']:>12,.0f} "
              f"{r['tokens'] / r['cpu']:>12,.0f} {r['rss_mb']:>12.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
