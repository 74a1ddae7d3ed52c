"""Steady-state metrics of one simulated run (the planner's probe), by warm-up deletion.

    m = steady_metrics(columns, slo_ttft, slo_tpot)   # columns: simulator per-request arrays

A run starts empty and ends draining, so only a middle window counts: requests
sorted by arrival, the first WARMUP share (the ramp) and the last TAIL share (the
drain: later arrivals stop, batches shrink, TPOT falls) are discarded. On the
window the p99s, means and SLO attainment are exact order statistics.

Growth test (an overloaded replica has no steady state): the window is cut into
BATCHES consecutive batches by arrival; the slope of the batch-mean TTFT against
batch index, in units of its standard error (least squares over the batch means,
the batch-means method), above GROWTH_T with the fitted rise above GROWTH_REL of
the mean TTFT, calls the run overloaded ("growing queue"). So does a delivered
request rate over the window below DELIVERED_MIN of the arrival rate.
"""
from __future__ import annotations

import math

import numpy as np

WARMUP = 0.2  # share of requests (by arrival) discarded as warm-up
TAIL = 0.1  # share discarded at the end (drain)
BATCHES = 10  # batch means for the growth test
GROWTH_T = 4.0  # slope t-statistic that counts as growth (false alarm ~1e-3 for 8 d.o.f. t-distribution)
GROWTH_REL = 0.25  # ... and the fitted rise across the window at least this share of the mean TTFT
DELIVERED_MIN = 0.95  # completions per second over the window / arrivals per second


def window(columns: dict, warmup: float = WARMUP, tail: float = TAIL) -> np.ndarray:
    """Indices of the steady-state window: requests sorted by arrival, ramp and drain cut off."""
    order = np.argsort(np.asarray(columns["arrival_s"]), kind="stable")
    n = order.size
    lo, hi = int(math.floor(warmup * n)), int(math.ceil((1.0 - tail) * n))
    if hi - lo < 2:
        lo, hi = 0, n
    return order[lo:hi]


def growth_t(ttft: np.ndarray, batches: int = BATCHES) -> tuple[float, float]:
    """(t-statistic of the batch-mean slope, fitted rise across the window in seconds)."""
    if ttft.size < 2 * batches:
        return 0.0, 0.0
    means = np.array([b.mean() for b in np.array_split(ttft, batches)])  # [batches] seconds
    x = np.arange(batches, dtype=np.float64)
    x -= x.mean()
    slope = float((x * (means - means.mean())).sum() / (x * x).sum())
    resid = means - means.mean() - slope * x
    se = math.sqrt(float((resid ** 2).sum()) / (batches - 2) / float((x * x).sum()))
    rise = slope * (batches - 1)
    if se == 0.0:
        return (math.inf if slope > 0 else 0.0), rise
    return slope / se, rise


def steady_metrics(c: dict, slo_ttft: float = 0.0, slo_tpot: float = 0.0, rate: float | None = None) -> dict:
    """p99/mean TTFT and TPOT, throughput, SLO attainment and the overload verdict on the window."""
    idx = window(c)
    arr = np.asarray(c["arrival_s"], np.float64)[idx]
    first = np.asarray(c["first_token_s"], np.float64)[idx]
    fin = np.asarray(c["finish_s"], np.float64)[idx]
    out = np.asarray(c["output_len"], np.float64)[idx]
    ttft = first - arr
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (fin - first) / (out - 1), np.nan)
    tp = tpot[np.isfinite(tpot)]
    span = float(arr[-1] - arr[0]) if arr.size > 1 else 0.0
    arrivals_rate = (arr.size - 1) / span if span > 0 else math.inf
    # completions inside the window's time span (any request), per second
    all_fin = np.asarray(c["finish_s"], np.float64)
    done = int(((all_fin >= arr[0]) & (all_fin < arr[-1])).sum())
    delivered = done / span if span > 0 else math.inf
    t_stat, rise = growth_t(ttft)
    mean_ttft = float(ttft.mean())
    growing = t_stat > GROWTH_T and rise > GROWTH_REL * max(mean_ttft, 1e-12)
    short = delivered < DELIVERED_MIN * arrivals_rate
    ok = np.ones(ttft.size, bool)
    if slo_ttft > 0:
        ok &= ttft <= slo_ttft
    if slo_tpot > 0:
        ok &= ~(tpot > slo_tpot)
    return {
        "window_requests": int(idx.size),
        "p99_ttft_s": float(np.quantile(ttft, 0.99)),
        "p99_tpot_s": float(np.quantile(tp, 0.99)) if tp.size else None,
        "mean_ttft_s": mean_ttft,
        "mean_tpot_s": float(tp.mean()) if tp.size else None,
        "request_throughput": delivered,
        "output_throughput": float(out.sum()) / span if span > 0 else None,
        "slo_attainment": float(ok.mean()),
        "growth_t": float(t_stat) if math.isfinite(t_stat) else 1e9,
        "overloaded": bool(growing or short),
    }
