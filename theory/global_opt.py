"""Exact global checker: a multi-step dynamic program over a tiny batch.

TETRIS is optimal *per step* (it maximises one step's expected tokens). This
module asks whether applying that choice every step is optimal for the whole
run, by solving the multi-step problem exactly for 2-3 requests.

Model of one step, state r = remaining output tokens per request (0 = done):
- every unfinished request i has K drafts; the policy picks windows L_i in
  0..K with sum_i L_i <= capacity (finished requests take no budget);
- request i accepts A_i drafts, P(A_i >= m) = prod_{l<=m} a_il, independently
  across requests, and emits min(A_i + 1, r_i) tokens (it cannot emit past
  its end);
- the step costs c_step + c_draft * sum(L) + c_request * (#unfinished).
The true conditional acceptance a_il is either stationary (a window matrix
W[i, l], the paper's assumption) or depends on the output position of the
token the draft would become (a profile prof[i, p]): easy and hard stretches.

Objectives: "steps" = minimise the expected total cost until every request is
done (with unit step cost: expected number of steps, the makespan); "tokens" =
maximise the expected tokens emitted in H steps. States only move down in
sum(r) (every unfinished request emits >= 1 token per step), so one pass in
increasing sum(r) solves the Bellman equation exactly; no value iteration.

`brute_force_steps` re-solves the smallest instances a second, independent way:
enumerate every deterministic stationary policy and evaluate each by a linear
solve of its absorbing Markov chain.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from theory.allocate import fixed_allocate, tetris_allocate


@dataclass(frozen=True, eq=False)
class Instance:
    lengths: tuple  # initial remaining output tokens per request, tokens, (N,)
    accept: np.ndarray  # [N, K] stationary window acceptance, or [N, T] per-output-position profile
    capacity: int  # verified drafts per step over the batch, tokens
    max_draft: int  # K: drafts per request per step
    by_position: bool = False  # accept is a profile: a[i, p] for the draft that becomes output token p
    step_cost: tuple = (1.0, 0.0, 0.0)  # (per step, per verified draft, per unfinished request), cost units
    name: str = field(default="", compare=False)

    def __post_init__(self):
        lengths = tuple(int(x) for x in self.lengths)
        object.__setattr__(self, "lengths", lengths)
        if not lengths or any(x < 0 for x in lengths):
            raise ValueError(f"lengths must be a non-empty sequence of integers >= 0, got {lengths}")
        a = np.array(self.accept, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != len(lengths) or a.shape[1] == 0:
            raise ValueError(f"accept must have shape (N={len(lengths)}, K or T), got {a.shape}")
        if np.isnan(a).any() or a.min() < 0 or a.max() > 1:
            raise ValueError("accept must hold probabilities in [0, 1] (no NaN in a checker instance)")
        a.setflags(write=False)
        object.__setattr__(self, "accept", a)
        if isinstance(self.max_draft, bool) or int(self.max_draft) != self.max_draft or self.max_draft < 0:
            raise ValueError(f"max_draft must be an integer >= 0, got {self.max_draft!r}")
        object.__setattr__(self, "max_draft", int(self.max_draft))
        if not self.by_position and a.shape[1] != self.max_draft:
            raise ValueError(f"accept must have max_draft={self.max_draft} columns when stationary, got {a.shape[1]}")
        if isinstance(self.capacity, bool) or int(self.capacity) != self.capacity or self.capacity < 0:
            raise ValueError(f"capacity must be an integer >= 0, got {self.capacity!r}")
        object.__setattr__(self, "capacity", int(self.capacity))
        cost = tuple(float(c) for c in self.step_cost)
        if len(cost) != 3 or min(cost) < 0 or cost[0] <= 0:
            raise ValueError(f"step_cost must be (per step > 0, per draft >= 0, per request >= 0), got {cost}")
        object.__setattr__(self, "step_cost", cost)

    @property
    def n(self) -> int:
        return len(self.lengths)


# ---------------------------------------------------------------- one step


def window_accept(inst: Instance, r) -> np.ndarray:
    """True conditional acceptance of each request's K drafts in state r, float64 [N, K].

    Rows of finished requests are NaN (no drafts: the request left the batch).
    With a profile, draft j of request i becomes output token p = done_i + j
    (done_i = tokens already emitted); past the profile's end its last value holds.
    """
    k = inst.max_draft
    out = np.full((inst.n, k), np.nan)
    for i, ri in enumerate(r):
        if ri == 0:
            continue
        if inst.by_position:
            done = inst.lengths[i] - ri
            cols = np.minimum(done + np.arange(k), inst.accept.shape[1] - 1)
            out[i] = inst.accept[i, cols]
        else:
            out[i] = inst.accept[i]
    return out


def mask_useless(matrix: np.ndarray, r) -> np.ndarray:
    """NaN out drafts that can never be emitted: request i emits at most r_i tokens, so drafts past r_i - 1."""
    m = np.array(matrix, dtype=np.float64)
    cols = np.arange(m.shape[1])
    m[cols[None, :] >= np.asarray(r)[:, None] - 1] = np.nan
    return m


def next_remaining_dist(a, length: int, remaining: int) -> np.ndarray:
    """Distribution of the next remaining tokens of one request, float64 [remaining + 1].

    a: conditional acceptance of its drafts (at least `length` values); it
    emits min(A + 1, remaining) tokens, P(A >= m) = prod_{l<=m} a_l, A <= length.
    """
    dist = np.zeros(remaining + 1)
    if remaining == 0:
        dist[0] = 1.0
        return dist
    surv = np.concatenate([[1.0], np.cumprod(np.asarray(a[:length], dtype=np.float64)), [0.0]])
    for accepted in range(length + 1):  # P(A = m) = P(A >= m) - P(A >= m + 1)
        emitted = min(accepted + 1, remaining)
        dist[remaining - emitted] += surv[accepted] - surv[accepted + 1]
    return dist


def step_cost(inst: Instance, r, lengths) -> float:
    c_step, c_draft, c_req = inst.step_cost
    return c_step + c_draft * float(sum(lengths)) + c_req * sum(1 for x in r if x > 0)


def actions(inst: Instance, r) -> list:
    """Every allocation in state r: L_i in 0..K for unfinished requests (0 for done ones), sum <= capacity."""
    ranges = [range(inst.max_draft + 1) if ri > 0 else range(1) for ri in r]
    return [L for L in itertools.product(*ranges) if sum(L) <= inst.capacity]


# ---------------------------------------------------------------- policies (one step each)


def policy_tetris(inst: Instance, r) -> tuple:
    """Per-step TETRIS on the true acceptance matrix, unaware of remaining lengths."""
    return tuple(int(x) for x in tetris_allocate(window_accept(inst, r), inst.capacity))


def policy_tetris_aware(inst: Instance, r) -> tuple:
    """Per-step TETRIS that never spends budget on drafts past a request's end."""
    return tuple(int(x) for x in tetris_allocate(mask_useless(window_accept(inst, r), r), inst.capacity))


def policy_fixed(inst: Instance, r) -> tuple:
    """Standard SD: k = capacity // N (initial batch size) drafts for every unfinished request."""
    k = min(inst.capacity // inst.n, inst.max_draft)
    return tuple(int(x) for x in fixed_allocate(window_accept(inst, r), k))


POLICIES = {"tetris": policy_tetris, "tetris_aware": policy_tetris_aware, "fixed": policy_fixed}


# ---------------------------------------------------------------- exact DP


def _states(inst: Instance) -> list:
    """All states, ordered by total remaining (successors come first)."""
    grid = itertools.product(*[range(x + 1) for x in inst.lengths])
    return sorted(grid, key=sum)


def _dists(inst: Instance, r, lengths) -> list:
    m = window_accept(inst, r)
    return [next_remaining_dist(m[i], lengths[i], r[i]) for i in range(inst.n)]


def _expect(values: np.ndarray, r, dists) -> float:
    """E[values[r']] where r'_i ~ dists[i] independently (dists[i] covers 0..r_i)."""
    sub = values[tuple(slice(0, ri + 1) for ri in r)]
    for d in reversed(dists):  # contract the last axis each time
        sub = sub @ d
    return float(sub)


def _emitted(r, dists) -> float:
    return float(sum(ri - np.arange(ri + 1) @ d for ri, d in zip(r, dists)))


@dataclass
class Solution:
    value: float  # objective at the initial state (expected cost, or expected tokens)
    values: np.ndarray  # [R_1 + 1, ..., R_N + 1] value of every state (last horizon for "tokens")
    policy: dict  # state -> chosen allocation (tuple); for "tokens": (steps_left, state) -> allocation


def solve_steps(inst: Instance, policy=None) -> Solution:
    """Expected cost to finish every request: optimal (policy=None) or of a given one-step policy.

    policy: callable(inst, r) -> allocation tuple, e.g. POLICIES["tetris"].
    Ties among optimal actions go to the first in `actions` order.
    """
    values = np.zeros(tuple(x + 1 for x in inst.lengths))
    chosen = {}
    for r in _states(inst):
        if sum(r) == 0:
            continue
        candidates = [tuple(policy(inst, r))] if policy else actions(inst, r)
        best, best_a = np.inf, None
        for L in candidates:
            v = step_cost(inst, r, L) + _expect(values, r, _dists(inst, r, L))
            if v < best - 1e-12:
                best, best_a = v, L
        values[r], chosen[r] = best, best_a
    return Solution(float(values[inst.lengths]), values, chosen)


def solve_tokens(inst: Instance, horizon: int, policy=None) -> Solution:
    """Expected tokens emitted in `horizon` steps: optimal (policy=None) or of a given policy."""
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 0:
        raise ValueError(f"horizon must be an integer >= 0, got {horizon!r}")
    states = _states(inst)
    values = np.zeros(tuple(x + 1 for x in inst.lengths))
    chosen = {}
    for h in range(1, int(horizon) + 1):
        new = np.zeros_like(values)
        for r in states:
            if sum(r) == 0:
                continue
            candidates = [tuple(policy(inst, r))] if policy else actions(inst, r)
            best, best_a = -np.inf, None
            for L in candidates:
                d = _dists(inst, r, L)
                v = _emitted(r, d) + _expect(values, r, d)
                if v > best + 1e-12:
                    best, best_a = v, L
            new[r], chosen[(h, r)] = best, best_a
        values = new
    return Solution(float(values[inst.lengths]), values, chosen)


def compare(inst: Instance, objective: str = "steps", horizon: int = 0) -> dict:
    """Optimum and every per-step policy's value on one instance: {"optimal": v, "tetris": v, ...}."""
    if objective == "steps":
        out = {"optimal": solve_steps(inst).value}
        out.update({name: solve_steps(inst, fn).value for name, fn in POLICIES.items()})
    elif objective == "tokens":
        out = {"optimal": solve_tokens(inst, horizon).value}
        out.update({name: solve_tokens(inst, horizon, fn).value for name, fn in POLICIES.items()})
    else:
        raise ValueError(f"objective must be 'steps' or 'tokens', got {objective!r}")
    return out


# ---------------------------------------------------------------- brute force (independent)


def _joint_outcomes(inst: Instance, r, lengths):
    """Yield (probability, next state) over every joint outcome, by direct enumeration."""
    m = window_accept(inst, r)
    per_request = []
    for i, ri in enumerate(r):
        if ri == 0:
            per_request.append([(1.0, 0)])
            continue
        outs = []
        for accepted in range(lengths[i] + 1):
            p = 1.0
            for l in range(accepted):
                p *= m[i, l]
            if accepted < lengths[i]:
                p *= 1.0 - m[i, accepted]
            outs.append((p, ri - min(accepted + 1, ri)))
        per_request.append(outs)
    for combo in itertools.product(*per_request):
        prob = float(np.prod([c[0] for c in combo]))
        if prob > 0:
            yield prob, tuple(c[1] for c in combo)


def brute_force_steps(inst: Instance, max_policies: int = 200_000) -> float:
    """Minimum expected cost to finish, over ALL deterministic stationary policies.

    Each policy is evaluated by solving (I - P) v = c on the unfinished states.
    Exponential: for the smallest instances only (raises ValueError past max_policies).
    """
    states = [s for s in itertools.product(*[range(x + 1) for x in inst.lengths]) if sum(s) > 0]
    index = {s: j for j, s in enumerate(states)}
    options = [actions(inst, s) for s in states]
    total = int(np.prod([len(o) for o in options], dtype=np.float64))
    if total > max_policies:
        raise ValueError(f"max_policies: instance has {total} policies, more than {max_policies}")
    # transition rows and costs per (state, action), computed once
    rows = []
    for s, opts in zip(states, options):
        per = []
        for L in opts:
            row = np.zeros(len(states))
            for p, nxt in _joint_outcomes(inst, s, L):
                if sum(nxt) > 0:
                    row[index[nxt]] += p
            per.append((row, step_cost(inst, s, L)))
        rows.append(per)
    start = index[inst.lengths] if sum(inst.lengths) > 0 else None
    if start is None:
        return 0.0
    eye = np.eye(len(states))
    best = np.inf
    for pick in itertools.product(*[range(len(o)) for o in options]):
        P = np.array([rows[j][a][0] for j, a in enumerate(pick)])
        c = np.array([rows[j][a][1] for j, a in enumerate(pick)])
        best = min(best, float(np.linalg.solve(eye - P, c)[start]))
    return best


# ---------------------------------------------------------------- Monte Carlo (for tests)


def simulate_steps(inst: Instance, policy, runs: int, seed: int = 0) -> np.ndarray:
    """Sampled cost to finish under a one-step policy, float64 [runs] (checks the DP by sampling)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    out = np.empty(runs)
    for run in range(runs):
        r, cost = list(inst.lengths), 0.0
        while sum(r) > 0:
            L = policy(inst, tuple(r))
            m = window_accept(inst, tuple(r))
            cost += step_cost(inst, r, L)
            for i in range(inst.n):
                if r[i] == 0:
                    continue
                passed = rng.random(L[i]) < m[i, : L[i]]
                accepted = int(np.argmin(np.append(passed, False)))  # first failure
                r[i] -= min(accepted + 1, r[i])
        out[run] = cost
    return out


# ---------------------------------------------------------------- documented instances


def documented_instances() -> list:
    """The instances of docs/theory.md: (label, broken assumption, Instance, objective, horizon).

    The first two keep the paper's assumptions (per-step TETRIS must be optimal);
    the rest break one assumption each. scripts/theory_counterexamples.py prints them.
    """
    w = np.array
    return [
        ("P1", "none (full batch: nobody finishes in H)", Instance((20, 20), w([[0.9, 0.8], [0.6, 0.3]]), 2, 2), "tokens", 3),
        ("P2", "none (no contention: C = N*K)", Instance((4, 5), w([[0.7, 0.6], [0.5, 0.9]]), 4, 2), "steps", 0),
        ("E1", "batch empties (identical requests)", Instance((3, 3), w([[0.8], [0.8]]), 1, 1), "steps", 0),
        ("E2", "batch empties (heterogeneous)", Instance((2, 6), w([[0.8], [0.7]]), 1, 1), "steps", 0),
        ("E3", "batch empties (tokens in H steps)", Instance((6, 2, 5), w([[0.8], [0.9], [0.6]]), 1, 1), "tokens", 2),
        ("Q1", "acceptance depends on output position",
         Instance((10, 10), w([[0.6] * 10, [0.5, 0.1] + [0.99] * 8]), 1, 1, by_position=True), "tokens", 2),
        ("C1", "step cost grows with verified drafts (0.3/draft)",
         Instance((4, 4), w([[0.9, 0.9], [0.3, 0.3]]), 4, 2, step_cost=(1.0, 0.3, 0.0)), "steps", 0),
        ("C2", "step cost grows with batch size (0.2 + 1/request)",
         Instance((1, 3, 5), w([[0.9, 0.1], [0.7, 0.8], [1.0, 0.8]]), 1, 2, step_cost=(0.2, 0.0, 1.0)), "steps", 0),
    ]
