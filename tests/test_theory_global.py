"""The exact multi-step checker: brute force agreement, paper assumptions, counterexamples."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from theory import expected_window_tokens, optimal_allocate, expected_tokens
from theory.global_opt import (
    POLICIES,
    Instance,
    actions,
    brute_force_steps,
    compare,
    documented_instances,
    mask_useless,
    next_remaining_dist,
    simulate_steps,
    solve_steps,
    solve_tokens,
)


def _random_instance(rng, n, max_len, max_k, by_position=False, cost=False, min_len=0):
    k = int(rng.integers(1, max_k + 1))
    lengths = tuple(int(x) for x in rng.integers(min_len, max_len + 1, n))
    cols = max(lengths) + k if by_position else k
    accept = np.round(rng.uniform(0, 1, (n, cols)), 1)  # one decimal: ties happen
    step_cost = (1.0, float(rng.choice([0.0, 0.3])), float(rng.choice([0.0, 0.5]))) if cost else (1.0, 0.0, 0.0)
    return Instance(lengths, accept, int(rng.integers(0, n * k + 1)), k, by_position=by_position, step_cost=step_cost)


@pytest.mark.parametrize("seed", range(12))
def test_dp_agrees_with_brute_force(seed):
    """Smallest instances: the DP optimum equals the best of ALL stationary policies."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    checked = 0
    while checked < 3:
        inst = _random_instance(rng, 2, 2, 2, by_position=seed % 3 == 1, cost=seed % 3 == 2, min_len=1)
        states = itertools.product(*[range(x + 1) for x in inst.lengths])
        if np.prod([len(actions(inst, s)) for s in states if sum(s)]) < 8:
            continue  # (almost) no choice to make: not a test of the DP
        try:
            bf = brute_force_steps(inst, max_policies=5000)
        except ValueError:
            continue  # too many policies to enumerate
        assert solve_steps(inst).value == pytest.approx(bf, abs=1e-9)
        checked += 1


@pytest.mark.parametrize("seed", range(6))
def test_optimum_bounds_every_policy(seed):
    rng = np.random.default_rng(np.random.SeedSequence(100 + seed))
    inst = _random_instance(rng, 2 + seed % 2, 4, 2, by_position=seed % 2 == 0, cost=seed % 3 == 0)
    res = compare(inst, "steps")
    assert all(res["optimal"] <= v + 1e-9 for v in res.values())
    tok = compare(inst, "tokens", 2)
    assert all(tok["optimal"] >= v - 1e-9 for v in tok.values())


@pytest.mark.parametrize("seed", range(8))
def test_paper_assumptions_full_batch_coincide(seed):
    """Stationary acceptance, equal step cost, nobody finishes within H: TETRIS every step is optimal,
    and both equal H times the one-step optimum."""
    rng = np.random.default_rng(np.random.SeedSequence(200 + seed))
    n = 2 if seed < 6 else 3
    k = int(rng.integers(1, 4 if n == 2 else 3))
    horizon = int(rng.integers(1, 4 if n == 2 else 3))
    accept = np.round(rng.uniform(0, 1, (n, k)), 1)
    capacity = int(rng.integers(0, n * k + 1))
    inst = Instance((horizon * (k + 1),) * n, accept, capacity, k)
    opt = solve_tokens(inst, horizon).value
    per_step = expected_tokens(accept, optimal_allocate(accept, capacity))
    assert opt == pytest.approx(horizon * per_step, abs=1e-9)
    assert solve_tokens(inst, horizon, POLICIES["tetris"]).value == pytest.approx(opt, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_paper_assumptions_no_contention_or_single_request(seed):
    """Stationary acceptance and equal cost, with C >= N*K (or N = 1): TETRIS minimises expected steps."""
    rng = np.random.default_rng(np.random.SeedSequence(300 + seed))
    inst = _random_instance(rng, 1 if seed % 2 else 3, 5, 3, min_len=1)
    if inst.n > 1:
        inst = Instance(inst.lengths, inst.accept, inst.n * inst.max_draft, inst.max_draft)
    assert solve_steps(inst, POLICIES["tetris"]).value == pytest.approx(solve_steps(inst).value, abs=1e-9)


def test_documented_identical_requests_counterexample_exact():
    """E1: two requests, 3 tokens each, a = 0.8, K = 1, C = 1 (checked by hand).

    TETRIS breaks the tie toward request 0 every step, so request 1 never speculates: exactly 3 steps.
    Optimal: draft for request 0, then for request 1: 2 steps iff both drafts pass (0.8^2), else 3.
    """
    inst = Instance((3, 3), [[0.8], [0.8]], 1, 1)
    res = compare(inst, "steps")
    assert res["tetris"] == pytest.approx(3.0, abs=1e-12)
    assert res["optimal"] == pytest.approx(2 * 0.8**2 + 3 * (1 - 0.8**2), abs=1e-12)  # 2.36
    assert res["tetris_aware"] == pytest.approx(2.36, abs=1e-12)  # masking useless drafts fixes this one


def test_documented_position_counterexample_exact():
    """Q1: acceptance depends on output position; 2 steps, K = 1, C = 1 (checked by hand).

    A: 0.6 everywhere. B: 0.5 at token 0, 0.1 at token 1, 0.99 after. TETRIS picks A twice: 2 (2 + 0.6).
    Optimal: B first (2 + 0.5); then B sits at the easy stretch w.p. 0.5 (0.99), else A (0.6).
    """
    inst = documented_instances()[5][2]
    assert inst.by_position
    res = compare(inst, "tokens", 2)
    assert res["tetris"] == pytest.approx(2 * 2.6, abs=1e-12)
    assert res["optimal"] == pytest.approx(2.5 + 2 + 0.5 * 0.99 + 0.5 * 0.6, abs=1e-12)


def test_documented_table_shape():
    """Rows P* keep the paper's assumptions (gap 0); every other row is a strict counterexample."""
    for label, _, inst, objective, horizon in documented_instances():
        res = compare(inst, objective, horizon)
        sign = 1 if objective == "steps" else -1
        gap = sign * (res["tetris"] - res["optimal"]) / res["optimal"]
        if label.startswith("P"):
            assert gap == pytest.approx(0.0, abs=1e-12), label
        else:
            assert gap > 0.01, label


def test_dp_value_matches_monte_carlo():
    inst = documented_instances()[3][2]  # E2
    dp = solve_steps(inst, POLICIES["tetris"]).value
    samples = simulate_steps(inst, POLICIES["tetris"], runs=3000, seed=5)
    se = samples.std(ddof=1) / np.sqrt(samples.size)
    assert abs(samples.mean() - dp) < 4 * se  # tolerance: 4 standard errors, fixed seed


def test_one_step_pieces():
    dist = next_remaining_dist([0.5, 0.5, 0.5], 3, 10)
    assert dist.sum() == pytest.approx(1.0)
    emitted = 10 - np.arange(11) @ dist
    assert emitted == pytest.approx(expected_window_tokens([0.5, 0.5, 0.5]))
    # cannot emit past the end: 2 tokens left, a certain draft chain still emits 2
    assert next_remaining_dist([1.0, 1.0, 1.0], 3, 2).tolist() == [1.0, 0.0, 0.0]
    m = mask_useless(np.full((3, 3), 0.5), (1, 2, 5))
    assert np.isnan(m).sum(axis=1).tolist() == [3, 2, 0]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lengths=(), accept=np.zeros((0, 1)), capacity=1, max_draft=1), "lengths"),
        (dict(lengths=(2, -1), accept=[[0.5], [0.5]], capacity=1, max_draft=1), "lengths"),
        (dict(lengths=(2, 2), accept=[[0.5], [1.5]], capacity=1, max_draft=1), "accept"),
        (dict(lengths=(2, 2), accept=[[0.5, 0.5]], capacity=1, max_draft=2), "accept"),
        (dict(lengths=(2, 2), accept=[[0.5], [0.5]], capacity=-1, max_draft=1), "capacity"),
        (dict(lengths=(2, 2), accept=[[0.5], [0.5]], capacity=1, max_draft=-1), "max_draft"),
        (dict(lengths=(2, 2), accept=[[0.5], [0.5]], capacity=1, max_draft=1, step_cost=(0, 0, 0)), "step_cost"),
    ],
)
def test_bad_instance_raises_naming_it(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Instance(**kwargs)
