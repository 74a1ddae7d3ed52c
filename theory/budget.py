"""Budget-size policies: how many draft tokens the batch verifies this step.

Budget SIZE (this file) and budget SPLIT (allocate.py) are separate decisions and
combine freely, e.g. a TETRIS split under a goodput-sized budget.

A step-cost function has the signature
    step_time(batch: int, drafts: int, verified) -> seconds
for one step of `batch` running requests that each drafted `drafts` tokens and
verify `verified` draft tokens in total (an int or an int array, vectorised).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from theory.acceptance import expected_tokens_iid
from theory.allocate import cumulative_scores
from theory.layout import LAYOUTS

StepTime = Callable[[int, int, "int | np.ndarray"], "float | np.ndarray"]


def fixed_capacity(k: int, batch: int) -> int:
    """The paper's budget: what fixed-k SD verifies, C = k * N."""
    if k < 0 or batch < 0:
        raise ValueError(f"k and batch must be >= 0, got k={k}, batch={batch}")
    return int(k) * int(batch)


def best_gain_by_capacity(accept: np.ndarray) -> np.ndarray:
    """gain[C] = max expected accepted drafts with C verified tokens, C = 0..#valid.

    The top-C cumulative scores are an optimal prefix-closed choice, so the curve
    is the running sum of the scores sorted high to low (concave in C).
    """
    scores = cumulative_scores(accept).reshape(-1)
    ranked = np.sort(scores[scores >= 0.0])[::-1]
    return np.concatenate([[0.0], np.cumsum(ranked)])


def ranked_scores(accept: np.ndarray) -> np.ndarray:
    """Valid cumulative scores in TETRIS's rank order (high to low; ties: shallower, then lower index)."""
    return ranked_slots(accept)[0]


def ranked_slots(accept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64 [M], depths int64 [M]) of the M valid slots in TETRIS's rank order.

    depth = the slot's position j + 1 (1..K). The order is prefix-closed per request (a
    deeper score is <= and ties go to the shallower slot), so the windows of the first r
    slots are L_i = the deepest of request i's slots among them.
    """
    scores = cumulative_scores(accept)
    n = scores.shape[0]
    flat = scores.T.reshape(-1)  # position-major: flat index j*N + i is the tie order
    order = np.argsort(-flat, kind="stable")
    ranked = flat[order]
    keep = ranked >= 0.0
    return ranked[keep], (order[keep] // max(n, 1) + 1).astype(np.int64)


def goodput_capacity(accept: np.ndarray, step_time: StepTime, drafts: int | None = None,
                     layout: str = "packed") -> int:
    """The goodput budget as a STOPPING RULE along the ranked order (lossless at T > 0).

    Slots are taken one at a time in TETRIS's rank order (high score first). Before slot
    r+1 (score s) is added, with r slots taken at rate(r) = (N + gain[r]) / step_time(N, K, r):
    it is added iff some run of m >= 1 slots each as good as s could raise the rate,
    max_m (N + gain[r] + m s) / step_time(N, K, r + m) > rate(r); C is the first r where
    not. The decision on slot r+1 reads only slots 1..r+1 and the step time, none of
    which depend on the slot's own draft d_ij (deeper scores of request i rank after
    it; proof in docs/engine.md). Affine step time: the same as "add while the next slot
    pays", and as the global argmax over all scores (gain is concave); the look-ahead
    over m lets it pass a fixed cost (a jump at C > 0, a concave curve) as the argmax would.

    layout (theory.layout): what the pass scores. "packed": r slots cost step_time(N, K, r).
    "padded": the first r slots give windows L_i (their deepest slot per request), so they
    cost step_time(N, K, N * D_r), D_r = the deepest slot among them. The look-ahead prices
    r + m slots by a bound read from slots 1..r+1 only, N * max(D_(r+1), ceil((r+m)/N))
    (<= the true N * D_(r+m): r+m slots over N rows put ceil((r+m)/N) in some row), so the
    decision on slot r+1 still reads no deeper slot of its request (the same proof).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "padded":
        return _goodput_capacity_padded(accept, step_time, drafts)
    accept = np.asarray(accept, dtype=np.float64)
    n, k = accept.shape
    ranked = ranked_scores(accept)
    gain = np.concatenate([[0.0], np.cumsum(ranked)])
    m_all = ranked.size
    caps = np.arange(m_all + 1)
    seconds = np.asarray(step_time(n, k if drafts is None else drafts, caps), dtype=np.float64)
    seconds = np.broadcast_to(seconds, caps.shape)
    if np.any(seconds <= 0):
        raise ValueError("step_time must be positive")
    if m_all == 0:
        return 0
    rate = (n + gain) / seconds
    r = np.arange(m_all)[:, None]  # slots taken so far
    m = np.arange(1, m_all + 1)[None, :]  # a run of m more slots, each scored like slot r+1
    end = r + m
    ok = end <= m_all
    hope = np.where(ok, (n + gain[r] + m * ranked[r]) / seconds[np.minimum(end, m_all)], -np.inf).max(axis=1)
    stops = np.flatnonzero(hope <= rate[:-1])
    return int(stops[0]) if stops.size else int(m_all)


def _goodput_capacity_padded(accept: np.ndarray, step_time: StepTime, drafts: int | None, peek: bool = False) -> int:
    """goodput_capacity for a right-padded pass (see its docstring); vectorised over (r, m).

    peek: NEGATIVE CONTROL only (tests/test_theory_budget_lossless.py): price the look-ahead
    by the true N * D_(r+m), which reads slots deeper than r+1 (not lossless at T > 0)."""
    accept = np.asarray(accept, dtype=np.float64)
    n, k = accept.shape
    ranked, depth = ranked_slots(accept)
    gain = np.concatenate([[0.0], np.cumsum(ranked)])
    m_all = ranked.size
    # a padded pass verifies N * d drafts, d = 0..K: one step time per depth
    seconds = np.asarray(step_time(n, k if drafts is None else drafts, n * np.arange(k + 1)), dtype=np.float64)
    seconds = np.broadcast_to(seconds, (k + 1,))
    if np.any(seconds <= 0):
        raise ValueError("step_time must be positive")
    if m_all == 0:
        return 0
    deepest = np.concatenate([[0], np.maximum.accumulate(depth)])  # D_r, r = 0..M
    rate = (n + gain) / seconds[deepest]
    r = np.arange(m_all)[:, None]  # slots taken so far
    m = np.arange(1, m_all + 1)[None, :]  # a run of m more slots, each scored like slot r+1
    end = r + m
    ok = end <= m_all
    bound = np.minimum(np.maximum(deepest[r + 1], -(-end // n)), k)  # reads slots 1..r+1 only
    if peek:
        bound = deepest[np.minimum(end, m_all)]
    hope = np.where(ok, (n + gain[r] + m * ranked[r]) / seconds[bound], -np.inf).max(axis=1)
    stops = np.flatnonzero(hope <= rate[:-1])
    return int(stops[0]) if stops.size else int(m_all)


def goodput_capacity_all_scores(accept: np.ndarray, step_time: StepTime, drafts: int | None = None) -> int:
    """NOT LOSSLESS at T > 0; test-only negative control (the rule before issue 10).

    The global argmax of (N + gain[C]) / step_time over ALL the scores: the budget then
    depends on scores deeper than position j, which depend on the sampled d_j.
    """
    accept = np.asarray(accept, dtype=np.float64)
    n, k = accept.shape
    gain = best_gain_by_capacity(accept)
    caps = np.arange(gain.size)
    seconds = np.asarray(step_time(n, k if drafts is None else drafts, caps), dtype=np.float64)
    seconds = np.broadcast_to(seconds, caps.shape)
    if np.any(seconds <= 0):
        raise ValueError("step_time must be positive")
    return int(np.argmax((n + gain) / seconds))  # first maximum: smallest such budget


def goodput_uniform_k(alpha: float, batch: int, step_time: StepTime, max_k: int) -> int:
    """DSD/SmartSpec: one window k for the whole batch maximising predicted goodput.

    Expected tokens N * (1 - a^(k+1)) / (1 - a) over predicted step time
    step_time(N, k, k*N), for k = 0..max_k, with one global acceptance rate.
    """
    if batch <= 0:
        return 0
    best_k, best = 0, -1.0
    for k in range(max_k + 1):
        rate = batch * expected_tokens_iid(alpha, k) / float(step_time(batch, k, k * batch))
        if rate > best + 1e-12:
            best_k, best = k, rate
    return best_k
