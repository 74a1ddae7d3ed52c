#!/usr/bin/env python3
"""Print the table of docs/theory.md: per-step TETRIS vs the exact multi-step optimum.

    python3 scripts/theory_counterexamples.py            # the documented instances (a few seconds)
    python3 scripts/theory_counterexamples.py --search 40 --seed 0   # also a random search per category

"steps": expected cost to finish every request (unit step cost: expected steps), lower is better.
"tokens": expected tokens emitted in H steps, higher is better. Gap = how much worse per-step TETRIS
(remaining-aware variant in brackets) is than the optimum, in percent.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from theory.global_opt import Instance, compare, documented_instances  # noqa: E402


def _gap(res: dict, name: str, objective: str) -> float:
    opt, v = res["optimal"], res[name]
    return 100.0 * ((v - opt) / opt if objective == "steps" else (opt - v) / opt)


def _acc(inst: Instance) -> str:
    rows = inst.accept
    if inst.by_position:
        return "profile " + "; ".join(",".join(f"{x:g}" for x in row[:4]) + ",..." for row in rows)
    return "; ".join(",".join(f"{x:g}" for x in row) for row in rows)


def row(label, broken, inst, objective, horizon) -> str:
    res = compare(inst, objective, horizon)
    obj = "steps" if objective == "steps" else f"tokens H={horizon}"
    cost = "" if inst.step_cost == (1.0, 0.0, 0.0) else f" cost={inst.step_cost}"
    return (
        f"| {label} | {broken} | r={inst.lengths} a=[{_acc(inst)}] K={inst.max_draft} C={inst.capacity}{cost} | {obj} "
        f"| {res['optimal']:.6f} | {res['tetris']:.6f} | {res['tetris_aware']:.6f} | {res['fixed']:.6f} "
        f"| {_gap(res, 'tetris', objective):.2f} ({_gap(res, 'tetris_aware', objective):.2f}) |"
    )


def search(trials: int, seed: int) -> None:
    """Random tiny stationary instances with equal step cost: the worst gap of remaining-aware TETRIS."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    for objective in ("steps", "tokens"):
        worst = (-1.0, None, None, 0)
        for _ in range(trials):
            n, k = 2, int(rng.integers(1, 4))
            inst = Instance(tuple(int(x) for x in rng.integers(1, 7, n)), np.round(rng.uniform(0, 1, (n, k)), 1),
                            int(rng.integers(1, n * k)), k)
            h = int(rng.integers(1, 4))
            res = compare(inst, objective, h)
            g = _gap(res, "tetris_aware", objective)
            if g > worst[0]:
                worst = (g, inst, res, h)
        g, inst, res, h = worst
        print(f"search {objective}: worst aware gap {g:.2f}% at r={inst.lengths} a={inst.accept.tolist()} "
              f"K={inst.max_draft} C={inst.capacity} H={h}: {res}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search", type=int, default=0, help="random instances per objective (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| id | assumption broken | instance | objective | optimum | TETRIS | TETRIS (aware) | fixed k | gap % (aware) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in documented_instances():
        print(row(*case))
    if args.search:
        search(args.search, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
