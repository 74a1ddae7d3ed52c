"""Capacity planning: the highest request rate per replica that meets the SLOs.

For each candidate policy (none, fixed k, dsd, tetris k/e) and each seed (an
independent replication), a bisection on workload.rate (Poisson arrivals) in
(0, saturation throughput) finds the largest rate whose steady-state p99 TTFT
and p99 TPOT (analysis.plan_steady) meet the SLOs without a growing queue. The
answer is the mean over replications with a Student-t confidence interval. All
(candidate, seed) pairs advance one bisection round at a time, and each round's
points run as one Dask sweep (analysis.sweep), cached in OUT/points/: a killed
plan restarted with the same arguments reruns nothing it had finished.

    br = bisect_rates(keys, probe, hi, rounds)    # probe(list[(key, rate)]) -> list[bool]
    mean, half = confidence(values)               # 95% t interval of the mean
    rates = search_max_rates(names, probe, hi0, rounds)   # older bracket-then-bisect search
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class Bracket:
    lo: float = 0.0  # highest rate known to meet the SLOs (0: none found)
    hi: float = math.inf  # lowest rate known to miss them
    probes: list = field(default_factory=list)  # [(rate, ok)] in probe order


def search_max_rates(
    names: Sequence[str],
    probe: Callable[[list[tuple[str, float]]], list[bool]],
    hi0: dict[str, float] | float,
    rounds: int = 7,
    max_doublings: int = 6,
) -> dict[str, Bracket]:
    """Bisection of every candidate at once; probe gets one batch of points per round.

    Start at hi0 (e.g. the offline capacity); while that still meets the SLOs,
    double it (at most max_doublings times). Then `rounds` halvings of [lo, hi].
    Assumes meeting the SLOs is monotone (decreasing) in the rate.
    """
    start = {n: float(hi0[n] if isinstance(hi0, dict) else hi0) for n in names}
    for n, r in start.items():
        if not r > 0:
            raise ValueError(f"initial rate for {n!r} must be > 0, got {r!r}")
    br = {n: Bracket() for n in names}
    nxt = dict(start)
    for _ in range(max_doublings + 1):  # find an upper bracket
        if not nxt:
            break
        oks = probe(list(nxt.items()))
        grow = {}
        for (n, r), ok in zip(list(nxt.items()), oks):
            br[n].probes.append((r, bool(ok)))
            if ok:
                br[n].lo = r
                grow[n] = 2.0 * r
            else:
                br[n].hi = r
        nxt = grow
    for _ in range(rounds):
        pts = [(n, 0.5 * (b.lo + b.hi)) for n, b in br.items() if math.isfinite(b.hi)]
        if not pts:
            break
        for (n, r), ok in zip(pts, probe(pts)):
            br[n].probes.append((r, bool(ok)))
            if ok:
                br[n].lo = r
            else:
                br[n].hi = r
    return br


def bisect_rates(keys: Sequence, probe: Callable[[list], list[bool]], hi: dict, rounds: int) -> dict:
    """Bisection of every key at once in (0, hi[key]): hi itself is never met (saturation).

    Each round probes the midpoint of every key's bracket in one batch. After
    `rounds` rounds each bracket is hi / 2**rounds wide; lo = 0 if nothing was met."""
    br = {k: Bracket(lo=0.0, hi=float(hi[k])) for k in keys}
    for _ in range(rounds):
        pts = [(k, 0.5 * (b.lo + b.hi)) for k, b in br.items()]
        for (k, r), ok in zip(pts, probe(pts)):
            br[k].probes.append((r, bool(ok)))
            if ok:
                br[k].lo = r
            else:
                br[k].hi = r
    return br


def confidence(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the two-sided Student-t interval); half = inf for one value."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.inf
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def family(policy: dict) -> str:
    """Policy family of a candidate (its policy overrides): the policy's registered name."""
    return policy["name"]


def replicas_needed(qps: float, max_rate: float) -> float:
    """Replicas for an aggregate qps at max_rate per replica (inf if none meets the SLOs)."""
    if max_rate <= 0:
        return math.inf
    return float(math.ceil(qps / max_rate - 1e-9))


def candidates(ks: Sequence[int], extras: Sequence[int], tetris_ks: Sequence[int] | None = None) -> dict[str, dict]:
    """name -> policy overrides: none, fixed k, dsd, tetris k/e."""
    out = {"none": {"name": "none"}}
    for k in ks:
        out[f"fixed k={k}"] = {"name": "fixed", "k": k}
    out["dsd"] = {"name": "dsd", "max_k": max(ks)}
    for k in tetris_ks or ks:
        for e in extras:
            out[f"tetris k={k} e={e}"] = {"name": "tetris", "k": k, "extra": e}
    return out


def goodput_candidates(ks: Sequence[int], extras: Sequence[int]) -> dict[str, dict]:
    """TETRIS with the goodput-sized budget (the budget search): K = max k + min e drafts."""
    k, e = max(ks), min(extras)
    return {f"tetris goodput K={k + e}": {"name": "tetris", "k": k, "extra": e, "budget": "goodput"}}


def meets(summaries: list[dict], slo_ttft: float, slo_tpot: float) -> bool:
    """Mean over seeds of p99 TTFT and p99 TPOT within the SLOs (0: that SLO unset)."""
    def mean(key):
        vals = [s[key] for s in summaries if s.get(key) is not None and math.isfinite(s[key])]
        return sum(vals) / len(vals) if vals else math.inf

    ok = True
    if slo_ttft > 0:
        ok &= mean("p99_ttft_s") <= slo_ttft
    if slo_tpot > 0:
        ok &= mean("p99_tpot_s") <= slo_tpot
    return bool(ok)
