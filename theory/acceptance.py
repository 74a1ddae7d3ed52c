"""Acceptance math for one request's window."""
from __future__ import annotations

import numpy as np


def _probs(accept) -> np.ndarray:
    a = np.asarray(accept, dtype=np.float64).reshape(-1)
    if a.size and (np.isnan(a).any() or a.min() < 0 or a.max() > 1):
        raise ValueError("accept must hold probabilities in [0, 1]")
    return a


def expected_window_tokens(accept) -> float:
    """E[emitted tokens] for a window of L = len(accept) drafts: 1 + sum_j prod_{l<=j} a_l."""
    return float(1.0 + np.cumprod(_probs(accept)).sum())


def expected_tokens_iid(alpha: float, length: int) -> float:
    """Closed form (1 - a^(L+1)) / (1 - a); L + 1 at a = 1."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length!r}")
    if alpha == 1.0:
        return float(length + 1)
    return float((1.0 - alpha ** (length + 1)) / (1.0 - alpha))


def accepted_length_variance(accept) -> float:
    """Var[A], A = number of accepted drafts, P(A >= j) = prod_{l<=j} a_l."""
    surv = np.cumprod(_probs(accept))  # P(A >= j), j = 1..L
    j = np.arange(1, surv.size + 1)
    mean = surv.sum()
    second = ((2 * j - 1) * surv).sum()  # E[A^2] = sum_j (2j - 1) P(A >= j)
    return float(second - mean**2)
