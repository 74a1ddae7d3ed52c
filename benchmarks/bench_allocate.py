#!/usr/bin/env python3
"""Time one step's selection: microseconds per call of tetris_allocate (and contrasts).

    python3 benchmarks/bench_allocate.py [--repeat 40] [--number 200]

Columns: TETRIS (the public tetris_allocate: NaN-free fast path), TETRIS with NaN
(a matrix with absent drafts: the general path), the general path on the NaN-free
matrix (cumulative scores + tie-ordered top-C + per-row depth, as before the fast
path), and optimal_allocate (the exact DP, for contrast). Capacity C = 3*N
(k = 3, as standard SD would verify). Best of --repeat timings of --number calls,
pinned to one core. The TETRIS paper reports < 0.3 ms (300 us) of selection overhead per step.
"""
from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from theory.allocate import (  # noqa: E402
    _lengths_from_mask,
    _top_c_by_rank,
    cumulative_scores,
    optimal_allocate,
    tetris_allocate,
)


def general_path(accept, capacity):
    return _lengths_from_mask(_top_c_by_rank(cumulative_scores(accept), capacity))


def per_call_us(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=40, help="timings per cell; the best is kept")
    ap.add_argument("--number", type=int, default=200, help="calls per timing")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    rng = np.random.default_rng(np.random.SeedSequence(0))
    print(f"numpy {np.__version__}; us per call, best of {args.repeat} x {args.number}; paper: < 300 us per step")
    print(f"{'N':>4} {'K':>3} {'C':>5} {'TETRIS':>9} {'w/ NaN':>9} {'general':>9} {'DP optimal':>11} {'DP/TETRIS':>10} {'300us/TETRIS':>13}")
    for n in (8, 64, 256):
        for k in (4, 8):
            accept = rng.uniform(0.0, 1.0, (n, k))
            holed = accept.copy()
            holed[rng.random(n) < 0.25, k // 2:] = np.nan  # a quarter of requests drafted only k/2 tokens
            capacity = 3 * n
            assert np.array_equal(tetris_allocate(accept, capacity), general_path(accept, capacity))
            t = per_call_us(lambda: tetris_allocate(accept, capacity), args.number, args.repeat)
            t_nan = per_call_us(lambda: tetris_allocate(holed, capacity), args.number, args.repeat)
            t_gen = per_call_us(lambda: general_path(accept, capacity), args.number, args.repeat)
            t_dp = per_call_us(lambda: optimal_allocate(accept, capacity), max(1, args.number // 100), args.repeat)
            print(f"{n:>4} {k:>3} {capacity:>5} {t:>9.1f} {t_nan:>9.1f} {t_gen:>9.1f} {t_dp:>11.1f} {t_dp / t:>10.0f}x {300.0 / t:>12.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
