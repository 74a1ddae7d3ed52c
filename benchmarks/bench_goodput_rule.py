"""Goodput budget: the lossless stopping rule against the all-scores argmax (the best top-C rate).

    PYTHONPATH=$PWD python3 benchmarks/bench_goodput_rule.py

Per step: a batch of N requests with K = 5 drafts, acceptance estimates Beta(2, 1.5) per request,
decaying along the window. Prints mean over 2000 steps of rate(stopping rule) / rate(argmax),
rate = (N + gain[C]) / step_time(C), for several step-time shapes, and the share of steps where
the two budgets differ. The argmax is not lossless at T > 0; it is the upper bound here.
"""
import numpy as np

from theory.budget import best_gain_by_capacity, goodput_capacity, goodput_capacity_all_scores

SHAPES = {
    "affine 1 + 0.01 C": lambda n, k, c: 1.0 + 0.01 * np.asarray(c),
    "knee (flat to N, then 0.05/token)": lambda n, k, c: 1.0 + 0.05 * np.maximum(np.asarray(c) - n, 0),
    "jump 1 + 0.3[C>0] + 0.005 C": lambda n, k, c: 1.0 + 0.3 * (np.asarray(c) > 0) + 0.005 * np.asarray(c),
    "sqrt 1 + 0.3 sqrt(C)": lambda n, k, c: 1.0 + 0.3 * np.sqrt(np.asarray(c, dtype=float)),
}


def main():
    rng = np.random.default_rng(0)
    for n in (1, 8, 32):
        for name, t in SHAPES.items():
            ratios, differ = [], 0
            for _ in range(2000):
                alpha = rng.beta(2, 1.5, size=(n, 1)) * 0.95 ** np.arange(5)
                gain = best_gain_by_capacity(alpha)
                rate = lambda c: (n + gain[c]) / float(t(n, 5, c))
                new, old = goodput_capacity(alpha, t), goodput_capacity_all_scores(alpha, t)
                ratios.append(rate(new) / rate(old))
                differ += new != old
            print(f"N={n:<3d} {name:<36s} rate(stop)/rate(argmax) mean {np.mean(ratios):.4f} "
                  f"min {np.min(ratios):.4f}  budgets differ in {differ / 20:.1f}% of steps")


if __name__ == "__main__":
    main()
