"""Allocation policies: how one step's verification budget is split across a batch.

Every policy is a pure function of an (N, K) array `accept` of estimated
conditional acceptance probabilities: accept[i, j] is the probability that
request i's draft j+1 passes given drafts 1..j passed. NaN marks "no draft
here"; every position after a NaN is invalid too. A policy returns the window
lengths L, int64 [N], with 0 <= L_i <= number of valid drafts of request i.
"""
from __future__ import annotations

import numpy as np


def _as_float64(accept) -> np.ndarray:
    if type(accept) is np.ndarray and accept.dtype == np.float64:
        return accept
    try:
        return np.asarray(accept, dtype=np.float64)
    except (TypeError, ValueError) as err:  # ragged rows, strings, ...
        raise ValueError(f"accept must be a 2-D (N, K) array of probabilities: {err}") from None


def _check_accept(accept) -> np.ndarray:
    a = _as_float64(accept)
    if a.ndim != 2:
        raise ValueError(f"accept must be a 2-D (N, K) array, got shape {a.shape}")
    finite = a[~np.isnan(a)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError("accept must hold probabilities in [0, 1] (or NaN for no draft)")
    return a


def _check_capacity(capacity) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise ValueError(f"capacity must be an integer, got {capacity!r}")
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    return int(capacity)


def cumulative_scores(accept) -> np.ndarray:
    """P[i, j] = prod_{l<=j} accept[i, l]: probability that drafts 1..j+1 all pass.

    Returns float64 [N, K]; invalid positions (a NaN at or before j) are -1.0,
    below every valid score, so they sort last.
    """
    a = _check_accept(accept)
    invalid = np.logical_or.accumulate(np.isnan(a), axis=1)
    scores = np.cumprod(np.where(invalid, 1.0, a), axis=1)
    scores[invalid] = -1.0
    return scores


def valid_lengths(accept) -> np.ndarray:
    """Number of valid leading drafts per request, int64 [N]."""
    a = _check_accept(accept)
    return np.argmax(np.isnan(np.hstack([a, np.full((a.shape[0], 1), np.nan)])), axis=1).astype(np.int64)


def _lengths_from_mask(selected: np.ndarray) -> np.ndarray:
    """Deepest selected position + 1 per row (0 when nothing is selected)."""
    n, k = selected.shape
    if k == 0:
        return np.zeros(n, dtype=np.int64)
    depth = np.where(selected, np.arange(1, k + 1), 0)
    return depth.max(axis=1).astype(np.int64)


def _top_c_by_rank(scores: np.ndarray, capacity: int) -> np.ndarray:
    """Boolean [N, K] mask of the `capacity` best valid entries.

    Order: higher score, then shallower position, then lower request index.
    Because rows are non-increasing, the chosen set is a union of prefixes.
    Vectorised: one argpartition on the flattened scores plus a tie fill.
    """
    n, k = scores.shape
    flat = scores.T.reshape(-1)  # position-major: flat index j*N + i encodes the tie order
    valid = flat >= 0.0
    n_valid = int(valid.sum())
    take = min(capacity, n_valid)
    chosen = np.zeros(flat.shape, dtype=bool)
    if take == n_valid:
        chosen = valid
    elif take > 0:
        kth = np.partition(flat, flat.size - take)[flat.size - take]  # take-th largest value
        above = flat > kth
        chosen |= above
        ties = np.flatnonzero(flat == kth)[: take - int(above.sum())]  # shallowest, lowest index first
        chosen[ties] = True
    return chosen.reshape(k, n).T


def tetris_allocate(accept: np.ndarray, capacity: int) -> np.ndarray:
    """TETRIS: verify the `capacity` highest cumulative scores over the whole batch.

    Returns int64 [N] window lengths, prefix-closed, sum(L) <= capacity, never
    selecting an invalid (NaN) position. Deterministic on ties.
    """
    a = _as_float64(accept)
    if a.ndim == 2 and a.size:
        # one reduction proves "all in [+0, 1], no NaN": the bit patterns of non-negative
        # floats order like their values, and NaN / negative ones lie above that of 1.0
        if np.maximum.reduce(a.view(np.uint64), axis=None) <= _ONE_BITS:
            return _tetris_fast(a, _check_capacity(capacity), has_nan=False)
        lo, hi = np.fmin.reduce(a, axis=None), np.fmax.reduce(a, axis=None)  # ignore NaN; NaN if all NaN
        if lo >= 0.0 and hi <= 1.0:
            return _tetris_fast(a, _check_capacity(capacity), has_nan=True)
    scores = cumulative_scores(a)  # validates (raises), or an all-NaN / empty matrix
    capacity = _check_capacity(capacity)
    return _lengths_from_mask(_top_c_by_rank(scores, capacity))


_ONE_BITS = np.float64(1.0).view(np.uint64)


def _tetris_fast(a: np.ndarray, capacity: int, has_nan: bool) -> np.ndarray:
    """tetris_allocate on a validated (N, K) matrix: same result, fewer numpy calls.

    Works position-major (K, N), so the flat order is the tie order. NaN
    propagates along the cumulative product, so every position at or after a
    NaN becomes -1 in one fmax. The cut is the capacity-th largest score; the
    selection per request is a prefix, so its length is a count.
    """
    n, k = a.shape
    if capacity == 0:
        return np.zeros(n, dtype=np.int64)
    scores = np.multiply.accumulate(a.T, axis=0, out=np.empty((k, n)))  # [K, N] C-order, non-increasing in j
    if has_nan:
        np.fmax(scores, -1.0, out=scores)  # NaN (invalid) -> -1, below every valid score
    if capacity >= n * k:
        return np.add.reduce(scores >= 0.0, axis=0)
    flat = scores.ravel()  # position-major: index j*N + i
    kth = np.partition(flat, flat.size - capacity)[flat.size - capacity]  # capacity-th largest score
    if kth < 0.0:  # capacity >= number of valid drafts: take them all
        return np.add.reduce(scores >= 0.0, axis=0)
    chosen = scores >= kth
    if np.count_nonzero(chosen) != capacity:  # ties at the cut: shallowest, then lowest index
        chosen = flat > kth
        chosen[np.flatnonzero(flat == kth)[: capacity - np.count_nonzero(chosen)]] = True
        chosen = chosen.reshape(k, n)
    return np.add.reduce(chosen, axis=0)


def fixed_allocate(accept: np.ndarray, k: int) -> np.ndarray:
    """Standard SD: every request verifies min(k, its valid drafts)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    return np.minimum(valid_lengths(accept), int(k))


def no_speculation(accept: np.ndarray) -> np.ndarray:
    """Plain decoding: every window is 0 (one target token per request per step)."""
    a = _check_accept(accept)
    return np.zeros(a.shape[0], dtype=np.int64)


def threshold_allocate(accept: np.ndarray, tau: float, capacity: int | None = None) -> np.ndarray:
    """Per-request threshold (SpecDec++/DISCO-style dynamic lookahead).

    Request i stops its window where its cumulative score drops under tau; if the
    total exceeds `capacity`, the highest-scoring of those positions are kept.
    """
    if not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau!r}")
    scores = cumulative_scores(accept)
    keep = scores >= float(tau)  # rows non-increasing: a prefix per row
    if capacity is None:
        return _lengths_from_mask(keep)
    capacity = _check_capacity(capacity)
    return _lengths_from_mask(_top_c_by_rank(np.where(keep, scores, -1.0), capacity))


_EXACT_SHIFT = 1074  # every float64 >= 0 is an integer multiple of 2^-1074


def exact_units(x: float) -> int:
    """x >= 0 (float64) as the exact integer x * 2^1074 (sums of these are exact)."""
    num, den = float(x).as_integer_ratio()
    return num * ((1 << _EXACT_SHIFT) // den)


def optimal_allocate(accept: np.ndarray, capacity: int) -> np.ndarray:
    """Exact per-step optimum by dynamic programming over requests (a knapsack).

    max sum_i sum_{j<=L_i} P_ij  s.t.  sum_i L_i <= capacity, 0 <= L_i <= valid_i.
    Does not rely on the greedy exchange argument; O(N * C * K). EXACT: the scores
    P_ij (float64, as cumulative_scores gives them) are summed and compared as exact
    integers in units of 2^-1074, so no gain is too small to count (1e-13, subnormals)
    and no rounding decides a tie. Among optimal allocations it returns one with the
    fewest verified tokens (ties: shorter windows for later requests).
    """
    scores = cumulative_scores(accept)
    capacity = _check_capacity(capacity)
    n, k = scores.shape
    valid = valid_lengths(accept)
    cap = min(capacity, int(valid.sum()))
    gains = np.zeros((n, k + 1), dtype=object)  # exact integers: gains[i, L] = sum_{j<L} P_ij
    for i in range(n):
        total = 0
        for j in range(int(valid[i])):
            total += exact_units(max(scores[i, j], 0.0))  # -0.0 counts as 0
            gains[i, j + 1] = total
    unreachable = -(1 << 4000)  # below any reachable sum, stays so after adding gains
    # best[c] = best value of requests so far using exactly c tokens
    best = np.full(cap + 1, unreachable, dtype=object)
    best[0] = 0
    choice = np.zeros((n, cap + 1), dtype=np.int64)
    for i in range(n):
        new = best.copy()  # L_i = 0
        arg = np.zeros(cap + 1, dtype=np.int64)
        for length in range(1, min(int(valid[i]), cap) + 1):
            cand = np.full(cap + 1, unreachable, dtype=object)
            cand[length:] = best[: cap + 1 - length] + gains[i, length]
            better = np.asarray(cand > new, dtype=bool)  # strict: a tie keeps the shorter window
            new = np.where(better, cand, new)
            arg = np.where(better, length, arg)
        best, choice[i] = new, arg
    top = max(best.tolist())
    c = next(i for i, v in enumerate(best.tolist()) if v == top)  # fewest tokens among optima
    lengths = np.zeros(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        lengths[i] = choice[i, c]
        c -= lengths[i]
    return lengths


def exact_gain(accept: np.ndarray, lengths: np.ndarray) -> int:
    """sum_i sum_{j<L_i} P_ij as an exact integer in units of 2^-1074 (for exact comparisons)."""
    scores = cumulative_scores(accept)
    return sum(exact_units(max(scores[i, j], 0.0)) for i in range(scores.shape[0]) for j in range(int(lengths[i])))


def expected_tokens(accept: np.ndarray, lengths: np.ndarray) -> float:
    """Expected emitted tokens of one step: sum_i (1 + sum_{j<=L_i} P_ij)."""
    scores = cumulative_scores(accept)
    lengths = np.asarray(lengths)
    n = scores.shape[0]
    if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be an integer array of shape ({n},), got {lengths.dtype} {lengths.shape}")
    valid = valid_lengths(accept)
    if np.any(lengths < 0) or np.any(lengths > valid):
        raise ValueError("lengths must satisfy 0 <= L_i <= number of valid drafts of request i")
    mask = np.arange(scores.shape[1]) < lengths[:, None]
    return float(n + np.where(mask, scores, 0.0).sum())
