"""Exact M/D/1 waiting times: the planner's check against queueing theory.

    p = md1_wait_cdf(t, rate, service)        # P(W <= t), FCFS, Poisson(rate), fixed service time
    r = md1_max_rate(w, service, q=0.99)      # largest rate with the q-quantile of W <= w

Erlang's (1909) closed form, with rho = rate * service and x = t / service:

    P(W <= t) = (1 - rho) * sum_{k=0}^{floor(x)} (rho (k - x))^k / k! * exp(-rho (k - x))

The terms alternate in sign and grow like exp(rho x) before they cancel, which is
what makes the formula unstable in floating point (Franx 2001 gives a stable
rearrangement). Here it is evaluated in exact decimal arithmetic with enough
digits for the cancellation (decimal, 30 + x digits), so the result is exact to
double precision for any x used in practice.
"""
from __future__ import annotations

import math
from decimal import Decimal, localcontext


def md1_wait_cdf(t: float, rate: float, service: float) -> float:
    """P(W <= t) for M/D/1 (FCFS) with arrival rate `rate` (1/s) and service time `service` (s)."""
    rho = rate * service
    if not 0 <= rho < 1:
        raise ValueError(f"rho = {rho}: M/D/1 is stable only for 0 <= rho < 1")
    if t < 0:
        return 0.0
    x = t / service
    n = int(math.floor(x))
    with localcontext() as ctx:
        ctx.prec = 40 + int(x * rho / 2.3) + n // 2  # digits lost to cancellation ~ rho x / ln 10
        r, X = Decimal(repr(rho)), Decimal(repr(x))
        total, fact = Decimal(0), Decimal(1)
        for k in range(n + 1):
            if k:
                fact *= k
            u = r * (Decimal(k) - X)  # <= 0
            total += ((u ** k) if k else Decimal(1)) / fact * (-u).exp()
        return float((1 - r) * total)


def md1_max_rate(w: float, service: float, q: float = 0.99, tol: float = 1e-10) -> float:
    """Largest Poisson rate whose q-quantile waiting time is <= w (bisection; CDF falls with rate)."""
    lo, hi = 0.0, 1.0 / service * (1 - 1e-12)
    if md1_wait_cdf(w, lo, service) < q:
        return 0.0
    while hi - lo > tol / service:
        mid = 0.5 * (lo + hi)
        if md1_wait_cdf(w, mid, service) >= q:
            lo = mid
        else:
            hi = mid
    return lo
