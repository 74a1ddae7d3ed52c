"""Early-stopped drafting gives the windows of full drafting (theory.policy.Policy.windows_if_done).

The engine drafts depth by depth and, for a prefix-decided policy (tetris, threshold), asks after
each depth j < K whether any window could still reach deeper than j. The claim: whenever the
check stops at depth j, its windows equal allocate() on all K drafts, and it stops exactly at
j = max(L) + 1 (Policy.drafted_depth, which the simulator prices; never deeper than a request can
still emit). Why: depths j+1..K are scored 0,
and a real deeper score is <= its depth-j parent and ranks after it; when no window reaches j,
every depth-j slot lies outside the chosen prefix, so the chosen slots, the next slot in the rank
order, the slot count and the step times (read at K drafts) are the same in both.

Checked over random estimates (ties, NaN tails, zeros) for every budget and layout, 600 cases
each. Negative controls (Policy.windows_if_done's `control`): "one-early" also stops when windows
reach depth j, and breaks the equality on 54-92% of the cases of the ranked budgets (none for
unbounded and fixed, whose windows reach every depth a request can emit); "uncounted" scores the
deeper depths NaN, so a goodput budget counts fewer slots: 3.8-12% of the cases on the non-affine
step times and the padded layout (none on the fixed and affine budgets, where the slot count is
not read). With 600 cases per budget the test has power 1 - (1 - p)^600 > 0.999 against a rule
that differs on p >= 1.2% of the cases.
"""
import numpy as np
import pytest

from contract.config import PolicyConfig
from theory.policy import make_policy

STEP_TIMES = {
    "affine": lambda n, k, c: 1.0 + 0.05 * k + 0.02 * np.asarray(c),
    "flag": lambda n, k, c: 1.0 + 0.3 * (np.asarray(c) > 0),
    "knee": lambda n, k, c: 1.0 + 0.1 * np.maximum(np.asarray(c) - 6, 0),
}
CASES = 600

POLICIES = [(PolicyConfig(name="tetris", k=k, extra=e, budget=b), t, lay)
            for k, e in ((1, 2), (2, 2), (1, 4))
            for b, t, lay in (("fixed", None, "packed"), ("unbounded", None, "packed"),
                              ("goodput", "affine", "packed"), ("goodput", "flag", "packed"),
                              ("goodput", "knee", "padded"), ("goodput", "affine", "padded"))]
POLICIES += [(PolicyConfig(name="fixed", k=3, extra=0), None, "packed")]
POLICIES += [(PolicyConfig(name="threshold", k=2, extra=2, tau=tau, budget=b), t, "packed")
             for tau in (0.3, 0.0) for b, t in (("fixed", None), ("goodput", "knee"))]


def _estimates(rng, n, k):
    """[n, k] acceptance estimates with ties (a coarse grid), zeros, ones and NaN tails."""
    a = rng.choice([0.0, 0.2, 0.5, 0.5, 0.8, 0.9, 1.0], size=(n, k)) if rng.random() < 0.5 else rng.random((n, k))
    usable = rng.integers(0, k + 2, size=n)  # drafts each request can still use (may exceed k)
    return np.where(np.arange(k)[None, :] < usable[:, None], a, np.nan), np.minimum(usable, k)


def _drafting(policy, est, valid, control="", check=True):
    """(depth drafted, windows) as the engine's depth-by-depth loop gets them (check: after each depth)."""
    k = est.shape[1]
    depth = min(k, int(valid.max(initial=0)))  # no deeper than a request can emit (Engine._depth_cap)
    for j in range(1, depth if check else 0):
        got = policy.windows_if_done(est[:, :j], k, valid, control)
        if got is not None:
            return j, got
    return depth, policy.allocate(est)


def _mismatches(cfg, t, layout, control="", seed=0):
    policy = make_policy(cfg, STEP_TIMES.get(t), layout)
    rng = np.random.default_rng(seed)
    bad = 0
    for _ in range(CASES):
        n, k = int(rng.integers(1, 7)), cfg.k + cfg.extra
        est, valid = _estimates(rng, n, k)
        full = policy.allocate(est)
        depth, lengths = _drafting(policy, est, valid, control)
        expect = min(k, int(valid.max(initial=0)), int(full.max(initial=0)) + 1)
        bad += (not np.array_equal(lengths, full)) or depth != expect
    return bad


@pytest.mark.parametrize("cfg,t,layout", POLICIES, ids=lambda x: getattr(x, "name", x))
def test_early_stop_windows_equal_full_drafting(cfg, t, layout):
    assert _mismatches(cfg, t, layout) == 0


@pytest.mark.parametrize("cfg,t,layout", [POLICIES[0], POLICIES[6], POLICIES[4], POLICIES[-1]],
                         ids=lambda x: getattr(x, "name", x))
def test_negative_control_one_depth_early_is_caught(cfg, t, layout):
    assert _mismatches(cfg, t, layout, "one-early") > CASES // 10


@pytest.mark.parametrize("cfg,t,layout", [POLICIES[3], POLICIES[4], POLICIES[11]], ids=lambda x: getattr(x, "name", x))
def test_negative_control_uncounted_slots_is_caught(cfg, t, layout):
    assert _mismatches(cfg, t, layout, "uncounted") > CASES // 50


def test_stops_and_saves_drafts():
    """Not vacuous: with k = 1, extra = 3 at batch 8 most steps stop before K = 4."""
    policy = make_policy(PolicyConfig(name="tetris", k=1, extra=3))
    rng = np.random.default_rng(1)
    depths = [_drafting(policy, rng.uniform(0.3, 0.95, (8, 4)), np.full(8, 4))[0] for _ in range(200)]
    assert np.mean(depths) < 3.5 and min(depths) <= 2


@pytest.mark.parametrize("cfg,t,layout", [POLICIES[0], POLICIES[6], POLICIES[12]], ids=lambda x: getattr(x, "name", x))
def test_negative_control_a_pre_test_off_by_one_is_caught(cfg, t, layout, monkeypatch):
    """Tetris.may_stop skips the check while fewer than C = k*N slots lie above the depth; with `>`
    for `>=` it also skips checks that would stop (drafts one depth too deep): 10-27% of the cases."""
    from theory.budget import fixed_capacity
    from theory.policies import tetris

    monkeypatch.setattr(tetris.Tetris, "may_stop", lambda self, cfg, depth, valid: int(
        np.minimum(valid, depth - 1).sum()) > fixed_capacity(cfg.k, len(valid)))
    assert _mismatches(cfg, t, layout) > CASES // 20


@pytest.mark.parametrize("cfg,t,layout", POLICIES, ids=lambda x: getattr(x, "name", x))
def test_drafted_depth_is_what_the_engine_drafts(cfg, t, layout):
    """Policy.drafted_depth (the simulator's price) = the engine loop's depth, with the checks where
    checks_depth says (tetris / threshold with a fixed budget) and the cap alone elsewhere."""
    policy = make_policy(cfg, STEP_TIMES.get(t), layout)
    rng = np.random.default_rng(2)
    for _ in range(200):
        n, k = int(rng.integers(1, 7)), cfg.k + cfg.extra
        est, valid = _estimates(rng, n, k)
        depth, lengths = _drafting(policy, est, valid, check=policy.checks_depth)
        assert depth == policy.drafted_depth(k, lengths, valid)
    assert policy.checks_depth == (cfg.name != "fixed" and cfg.budget == "fixed")


def test_other_policies_draft_all_k():
    for cfg in (PolicyConfig(name="dsd"), PolicyConfig(name="tetris", early_stop=False),
                PolicyConfig(name="oracle")):
        assert make_policy(cfg, STEP_TIMES["affine"]).drafted_depth(5, np.array([0, 1]), np.array([0, 0])) == 5
    tetris = make_policy(PolicyConfig(name="tetris"))
    assert tetris.drafted_depth(5, np.array([0, 1]), np.array([9, 9])) == 2
    assert tetris.drafted_depth(5, np.array([0, 1]), np.array([1, 1])) == 1  # no request can emit a second
    goodput = make_policy(PolicyConfig(name="tetris", budget="goodput"), STEP_TIMES["affine"])
    assert goodput.drafted_depth(5, np.array([0, 1]), np.array([3, 2])) == 3  # the cap only
    assert tetris.drafted_depth(5, np.array([0, 0]), np.array([0, 0])) == 0
    assert tetris.drafted_depth(0, np.zeros(2, int), np.array([9, 9])) == 0
