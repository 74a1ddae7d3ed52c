"""The planner against queueing theory: batch 1, no speculation, Poisson arrivals and a
fixed step time is M/D/1, whose waiting-time distribution is known exactly (analysis.md1).

The planner's maximum rate for a p99 waiting-time SLO (TTFT = wait + one step) must
contain the exact M/D/1 answer within its stated uncertainty (95% t interval over the
seeds, plus the bisection resolution). Measured (seeds fixed, so deterministic): fast
variant (8000 requests x 5 seeds x 8 rounds, ~11 s) 62.81 +- 4.32 req/s, slow variant
(20000 x 8 x 9, ~46 s) 63.57 +- 1.13 req/s, exact 62.95 req/s. Power: the deliberate
break (negative control) is a step time off by 10% (fast: exact answer 54.64 lies outside
the band) or 5% (slow: 58.58 lies outside); smaller model errors are not detected.
"""
import math

import pytest

from analysis.md1 import md1_max_rate, md1_wait_cdf
from analysis.plan_run import search
from contract.config import load_config

D = 0.01  # step time (s)
W = 0.05  # p99 waiting-time SLO (s)


def _base(n: int):
    return load_config(None, [], base={
        "workload": {"arrival": "poisson", "num_requests": n, "prompt_len": {"dist": "fixed", "value": 1},
                     "output_len": {"dist": "fixed", "value": 1}},
        "cost": {"model": "constant", "step_s": D, "draft_step_s": 0.0},
        "server": {"max_batch": 1}, "policy": {"name": "none"}, "slo": {"ttft_s": W + D}})


def test_md1_formula_against_lindley_recursion():
    """The closed form against a direct simulation of the waiting-time recursion (4e5 customers)."""
    import numpy as np

    rate = 70.0
    gaps = np.random.default_rng(3).exponential(1 / rate, 400_000)
    w, waits = 0.0, np.empty(gaps.size)
    for i, g in enumerate(gaps):
        waits[i] = w
        w = max(0.0, w + D - g)
    for t in (0.0, 0.005, 0.02, 0.05):
        assert abs((waits <= t).mean() - md1_wait_cdf(t, rate, D)) < 0.01
    assert md1_wait_cdf(0.0, rate, D) == pytest.approx(1 - rate * D)
    assert md1_wait_cdf(0.5 * D, rate, D) == pytest.approx((1 - rate * D) * math.exp(rate * 0.5 * D))  # t < D
    assert md1_wait_cdf(W, md1_max_rate(W, D), D) == pytest.approx(0.99, abs=1e-9)


def _check(tmp_path, n, seeds, rounds):
    res = search(_base(n), {"none": {"name": "none"}}, list(range(seeds)), rounds, tmp_path, scheduler="serial",
                 progress=False, screen_rounds=min(5, rounds), keep=1)
    row = res["policies"]["none"]
    band = row["ci95"] + row["resolution"]
    assert row["saturation_rps"] == pytest.approx(1 / D, rel=1e-6)
    return row["max_rate"], band


def test_planner_matches_md1_fast(tmp_path):
    exact = md1_max_rate(W, D)  # 62.95 req/s
    got, band = _check(tmp_path, n=8000, seeds=5, rounds=8)
    assert abs(got - exact) <= band, (got, band, exact)
    assert abs(got - md1_max_rate(W, 1.10 * D)) > band  # negative control: a 10% step-time error is caught


@pytest.mark.slow
def test_planner_matches_md1_long_runs(tmp_path):
    exact = md1_max_rate(W, D)
    got, band = _check(tmp_path, n=20000, seeds=8, rounds=9)
    assert abs(got - exact) <= band, (got, band, exact)
    assert abs(got - md1_max_rate(W, 1.05 * D)) > band
