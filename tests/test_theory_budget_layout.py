"""The goodput budget in the run's verify layout (theory.budget.goodput_capacity(layout=...)).

- packed (the default) is today's rule, unchanged;
- padded prices the first r ranked slots by theory.layout.verified_tokens of their windows
  (N * the deepest), checked against a plain loop that builds those windows slot by slot,
  and on a hand-computed batch where packed and padded choose different budgets;
- the simulator and the policy object pass the layout through (server.verify_layout).
Power: exact comparisons (no sampling) on 300 random instances and the hand example; the
plumbing tests fail if the layout is dropped anywhere between the config and the budget.
Losslessness of the padded rule: tests/test_theory_budget_lossless.py.
"""
import dataclasses
import math

import numpy as np
import pytest

import theory.policy
from contract.config import PolicyConfig, load_config
from sim.simulate import simulate_policy
from theory.allocate import cumulative_scores
from theory.budget import goodput_capacity, ranked_slots
from theory.layout import verified_tokens
from theory.policy import make_policy


def affine(n, k, c):
    return 1.0 + 0.2 * np.asarray(c, dtype=float)


def random_time(rng):
    a, b, c, knee = rng.uniform(0.1, 2), rng.uniform(0, 0.5), rng.uniform(0, 1), rng.integers(0, 6)
    return lambda n, k, v: a + b * np.maximum(np.asarray(v, dtype=float) - knee, 0) + c * (np.asarray(v) > 0)


def padded_by_loop(accept, step_time):
    """The padded stopping rule written out: windows of the first r slots, one slot at a time."""
    accept = np.asarray(accept, dtype=np.float64)
    n, k = accept.shape
    scores = cumulative_scores(accept)
    slots = sorted(((-scores[i, j], j, i) for i in range(n) for j in range(k) if scores[i, j] >= 0))
    windows = np.zeros(n, dtype=np.int64)
    gain = 0.0
    for r, (neg, j, i) in enumerate(slots):
        s = -neg
        rate = (n + gain) / float(step_time(n, k, verified_tokens(windows, "padded")))
        nxt = windows.copy()
        nxt[i] = max(nxt[i], j + 1)
        deepest = int(nxt.max())  # slots 1..r+1 only
        hope = max((n + gain + m * s) / float(step_time(n, k, n * max(deepest, math.ceil((r + m) / n))))
                   for m in range(1, len(slots) - r + 1))
        if hope <= rate:
            return r
        windows, gain = nxt, gain + s
    return len(slots)


def test_packed_default_is_unchanged():
    rng = np.random.default_rng(1)
    for _ in range(300):
        est = rng.uniform(0, 1, size=(rng.integers(1, 7), rng.integers(1, 5)))
        est[rng.random(est.shape) < 0.1] = np.nan
        t = random_time(rng)
        assert goodput_capacity(est, t) == goodput_capacity(est, t, layout="packed")


def test_padded_matches_the_plain_loop_and_equals_packed_at_batch_1():
    rng = np.random.default_rng(2)
    differ = 0
    for _ in range(300):
        n = int(rng.integers(1, 7))
        est = rng.uniform(0, 1, size=(n, rng.integers(1, 5)))
        est[rng.random(est.shape) < 0.1] = np.nan
        t = random_time(rng)
        got = goodput_capacity(est, t, layout="padded")
        assert got == padded_by_loop(est, t)
        if n == 1:  # one row: N * max(L) == sum(L)
            assert got == goodput_capacity(est, t)
        differ += got != goodput_capacity(est, t)
    assert differ > 10  # the layouts do disagree (measured 97 of 300)


def test_padded_prices_the_pass_hand_example():
    """Scores: request 0: 0.9, 0.81; request 1: 0.1, 0.01; step time 1 + 0.2 verified.

    packed: rates 2, 2.9/1.2, 3.71/1.4 = 2.65, then 3.81/1.6 = 2.38: C = 2.
    padded: the pass verifies 2 * max(L): rates 2, 2.9/1.4 = 2.07, 3.71/1.8 = 2.06 (the
    look-ahead, two more slots as good as 0.81 at depth 2: 4.52/1.8 = 2.51, passes it),
    3.81/1.8 = 2.12, 3.82/1.8 = 2.12: request 1's slots are free under padding, C = 4.
    """
    est = np.array([[0.9, 0.9], [0.1, 0.1]])
    assert goodput_capacity(est, affine) == 2
    assert goodput_capacity(est, affine, layout="padded") == 4
    scores, depths = ranked_slots(est)
    np.testing.assert_allclose(scores, [0.9, 0.81, 0.1, 0.01])
    assert depths.tolist() == [1, 2, 1, 2]
    with pytest.raises(ValueError, match="layout"):
        goodput_capacity(est, affine, layout="ragged")


def test_policy_sizes_the_budget_in_its_layout():
    est = np.array([[0.9, 0.9], [0.1, 0.1]])
    pcfg = PolicyConfig(name="tetris", k=1, extra=1, budget="goodput")
    assert make_policy(pcfg, affine).capacity(est) == 2
    assert make_policy(pcfg, affine, layout="padded").capacity(est) == 4
    assert make_policy(pcfg, affine, layout="padded").allocate(est).tolist() == [2, 2]
    with pytest.raises(ValueError, match="layout"):
        make_policy(pcfg, affine, layout="ragged")


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_simulator_sizes_the_goodput_budget_in_server_verify_layout(monkeypatch, layout):
    """Every goodput budget the simulator sizes uses server.verify_layout, and on this run
    the padded sizing picks a different budget than packed on some steps."""
    seen, differ = [], []
    real = theory.policy.goodput_capacity

    def spy(est, step_time, drafts=None, layout="packed"):
        seen.append(layout)
        got = real(est, step_time, drafts=drafts, layout=layout)
        differ.append(got != real(est, step_time, drafts=drafts, layout="packed" if layout == "padded" else "padded"))
        return got

    monkeypatch.setattr(theory.policy, "goodput_capacity", spy)
    cfg = load_config(None, ["workload.num_requests=16", "workload.arrival='offline'",
                             "workload.output_len={dist='fixed', value=24}", "server.max_batch=8",
                             "cost.model='knee'", "cost.per_token_s=0.002", "cost.knee_tokens=8",
                             "acceptance.model='mixture'", f"server.verify_layout='{layout}'"])
    pcfg = dataclasses.replace(cfg.policy, name="tetris", k=2, extra=2, budget="goodput")
    r = simulate_policy(cfg, pcfg, "tetris-goodput")
    assert r.summary["num_requests"] == 16
    assert seen and set(seen) == {layout}
    assert any(differ)
