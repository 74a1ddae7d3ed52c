"""theory/policy.py and theory/budget.py: the decision both simulator and engine call."""
import numpy as np
import pytest

from theory.allocate import expected_tokens, optimal_allocate, tetris_allocate
from theory.budget import best_gain_by_capacity, goodput_capacity, goodput_uniform_k
from contract.config import PolicyConfig
from theory.policy import make_policy


def linear_cost(batch, drafts, verified):
    # 10 ms fixed, 1 ms per draft step, 0.1 ms per verified token
    return 0.010 + 0.001 * drafts + 0.0001 * (np.asarray(verified) + batch)


def test_best_gain_curve_equals_dp_at_every_capacity():
    rng = np.random.default_rng(3)
    accept = rng.uniform(0.05, 1.0, size=(5, 4))
    gain = best_gain_by_capacity(accept)
    for c in range(gain.size):
        best = expected_tokens(accept, optimal_allocate(accept, c)) - 5
        assert gain[c] == pytest.approx(best, abs=1e-9)


def test_goodput_capacity_maximises_tokens_per_second_by_enumeration():
    rng = np.random.default_rng(7)
    accept = rng.uniform(0.05, 1.0, size=(6, 5))
    chosen = goodput_capacity(accept, linear_cost)
    rates = [
        expected_tokens(accept, tetris_allocate(accept, c)) / linear_cost(6, 5, c) for c in range(31)
    ]
    assert chosen == int(np.argmax(rates))


def test_goodput_capacity_is_zero_when_verification_is_expensive():
    accept = np.full((4, 3), 0.1)
    assert goodput_capacity(accept, lambda b, d, v: 0.01 + 1.0 * np.asarray(v)) == 0


def test_uniform_k_grows_with_acceptance():
    ks = [goodput_uniform_k(a, 16, linear_cost, 8) for a in (0.1, 0.5, 0.8, 0.95)]
    assert ks == sorted(ks) and ks[0] < ks[-1]


def test_policies_windows_and_drafts():
    est = np.array([[0.9, 0.9, 0.9, 0.9, 0.9], [0.2, 0.2, 0.2, 0.2, 0.2]])
    tetris = make_policy(PolicyConfig(name="tetris", k=2, extra=3))
    assert tetris.num_drafts(2) == 5
    L = tetris.allocate(est)
    assert L.sum() == 4 and L[0] > L[1]  # budget k*N = 4 goes to the easy request
    fixed = make_policy(PolicyConfig(name="fixed", k=2))
    assert fixed.num_drafts(2) == 2 and fixed.allocate(est[:, :2]).tolist() == [2, 2]
    none = make_policy(PolicyConfig(name="none"))
    assert none.num_drafts(2) == 0 and none.allocate(est[:, :0]).tolist() == [0, 0]
    thr = make_policy(PolicyConfig(name="threshold", k=2, extra=3, tau=0.5, budget="unbounded"))
    assert thr.allocate(est).tolist() == [5, 0]  # 0.9^5 = 0.59 >= 0.5; 0.2 < 0.5
    off = make_policy(PolicyConfig(name="tetris", disable_batch=1))
    assert off.num_drafts(2) == 0 and off.num_drafts(1) == 5


def test_oracle_ranks_by_truth_and_needs_it():
    est = np.array([[0.9, 0.9], [0.1, 0.1]])
    truth = np.array([[0.0, 0.0], [1.0, 1.0]])
    oracle = make_policy(PolicyConfig(name="oracle", k=1, extra=1))
    assert oracle.allocate(est, truth).tolist() == [0, 2]
    with pytest.raises(ValueError, match="truth"):
        oracle.allocate(est)


def test_dsd_needs_cost_and_tracks_acceptance():
    with pytest.raises(ValueError, match="step-cost"):
        make_policy(PolicyConfig(name="dsd"))
    dsd = make_policy(PolicyConfig(name="dsd", interval=1, ema=0.0, max_k=8), linear_cost)
    dsd.observe(np.array([4, 4]), np.array([0, 0]))  # every first draft rejected
    k_low = dsd.num_drafts(8)
    dsd.observe(np.array([4, 4]), np.array([4, 4]))  # everything accepted
    k_high = dsd.num_drafts(8)
    assert dsd.alpha_ema == 1.0 and k_low < k_high
