"""The goodput budget is lossless at T > 0: an exact (enumerated) check, no sampling.

One speculative step of request 0 (first-order tabular target p and draft q over V tokens,
K sampled drafts, max-prob estimates a_j = max q(. | d_{j-1})), optionally beside other
requests whose estimates are fixed. Every draft sequence is enumerated with its
probability, and so are the accept tests, so the distribution of the first two emitted
tokens is exact. A lossless budget gives exactly p(x1 | x0) p(x2 | x1) (to rounding,
1e-12). The old all-scores sizing (goodput_capacity_all_scores) must show a bias:
it is the negative control, and with the issue's step time 1 + 0.6 [C > 0] its TV is
above 0.01 on these tables. Power: any TV above 1e-12 fails.

Both verify layouts (theory.layout): layout="padded" prices the first r slots as
N * (their deepest position) and its look-ahead by a bound read from slots 1..r+1 only.
Its negative control peeks at the true depth of slots r+2..r+m (the `peek` hook of
theory.budget._goodput_capacity_padded): TV 0.0015 on the knee step time beside a request
with estimates 0.6, 0.6, 0.6 (seeds 0..7), far above the 1e-12 the check resolves.
"""
import itertools

import numpy as np
import pytest

from theory.allocate import tetris_allocate
from theory.budget import _goodput_capacity_padded, goodput_capacity, goodput_capacity_all_scores

V, K = 4, 3

STEP_TIMES = {
    "flag 1 + 0.6[C>0]": lambda n, k, c: 1.0 + 0.6 * (np.asarray(c) > 0),
    "knee": lambda n, k, c: 1.0 + 0.3 * np.maximum(np.asarray(c) - 2, 0),
    "sqrt": lambda n, k, c: 1.0 + 0.5 * np.sqrt(np.asarray(c, dtype=float)),
    "affine": lambda n, k, c: 1.0 + 0.2 * np.asarray(c),
    "step 2": lambda n, k, c: 1.0 + 0.5 * (np.asarray(c) > 1) + 0.4 * (np.asarray(c) > 3),
}


def _resid(p, q):
    r = np.maximum(p - q, 0.0)
    return r / r.sum() if r.sum() > 0 else p


def exact_two_tokens(p, q, x0, size, step_time, others=None):
    """Exact joint [V, V] of the first two tokens request 0 emits (its next step uses p)."""
    out = np.zeros((V, V))
    for d in itertools.product(range(V), repeat=K):
        w = q[x0, d[0]] * q[d[0], d[1]] * q[d[1], d[2]]
        prev = (x0,) + d[:-1]
        est = np.array([[q[prev[j]].max() for j in range(K)]])
        if others is not None:
            est = np.vstack([est, others])
        L = int(tetris_allocate(est, size(est, step_time))[0])
        if L == 0:
            out += w * p[x0][:, None] * p
            continue
        r1 = min(1.0, p[x0, d[0]] / q[x0, d[0]])
        rej = (1 - r1) * _resid(p[x0], q[x0])  # x1 after a rejection, then x2 ~ p(. | x1)
        out += w * rej[:, None] * p
        if L == 1:
            out[d[0]] += w * r1 * p[d[0]]  # bonus token from p
        else:
            r2 = min(1.0, p[d[0], d[1]] / q[d[0], d[1]])
            out[d[0], d[1]] += w * r1 * r2
            out[d[0]] += w * r1 * (1 - r2) * _resid(p[d[0]], q[d[0]])
    return out


def tables(seed):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(V), size=V), rng.dirichlet(np.ones(V), size=V)


OTHERS = (None, np.array([[0.8, 0.5, 0.3]]), np.array([[0.6, 0.6, 0.6]]))
CASES = [(seed, name, others, layout) for seed in range(4) for name in STEP_TIMES
         for others in OTHERS for layout in ("packed", "padded")]


@pytest.mark.parametrize("seed,name,others,layout", CASES)
def test_stopping_rule_goodput_is_exactly_lossless(seed, name, others, layout):
    p, q = tables(seed)
    want = p[0][:, None] * p
    size = lambda est, st: goodput_capacity(est, st, layout=layout)
    got = exact_two_tokens(p, q, 0, size, STEP_TIMES[name], others)
    assert np.abs(got - want).sum() / 2 < 1e-12


def test_negative_control_padded_lookahead_that_peeks_is_biased():
    """The padded rule with the look-ahead priced by the true deeper depths is off."""
    peek = lambda est, st: _goodput_capacity_padded(est, st, None, peek=True)
    worst = 0.0
    for seed in range(8):
        p, q = tables(seed)
        got = exact_two_tokens(p, q, 0, peek, STEP_TIMES["knee"], np.array([[0.6, 0.6, 0.6]]))
        worst = max(worst, np.abs(got - p[0][:, None] * p).sum() / 2)
    assert worst > 1e-4  # measured 0.0015 (max over seeds 0..7)


def test_negative_control_all_scores_goodput_is_biased():
    """The old rule is off on the issue's step time (and the test can see it)."""
    worst = 0.0
    for seed in range(8):
        p, q = tables(seed)
        got = exact_two_tokens(p, q, 0, goodput_capacity_all_scores, STEP_TIMES["flag 1 + 0.6[C>0]"])
        worst = max(worst, np.abs(got - p[0][:, None] * p).sum() / 2)
    assert worst > 0.05  # measured 0.180 (max over seeds 0..7)


def test_stopping_rule_equals_argmax_for_affine_time():
    """Concave gain over affine time: the first non-improving slot is the global optimum."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        est = rng.uniform(0, 1, size=(rng.integers(1, 6), rng.integers(1, 5)))
        t = lambda n, k, c, a=rng.uniform(0.1, 2), b=rng.uniform(0, 1): a + b * np.asarray(c)
        assert goodput_capacity(est, t) == goodput_capacity_all_scores(est, t)
