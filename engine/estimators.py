"""Acceptance estimators: the a_ij that the allocation ranks by.

  token_prob  the draft's probability of its drafted token (the paper's; greedy only:
              at T > 0 it makes the choice depend on the sampled token and biases the output)
  max_prob    the draft's largest probability at that position (safe at any temperature)
  calibrated  logistic regression on distribution features (log-odds of max prob, entropy,
              position), refitted online from the verification outcomes
  auto        token_prob at T = 0, max_prob at T > 0
"""
from __future__ import annotations

import numpy as np
import torch

NAMES = ("token_prob", "max_prob", "calibrated")


def resolve(name: str, temperature: float) -> str:
    if name == "auto":
        return "token_prob" if temperature <= 0 else "max_prob"
    return name


def features(q: torch.Tensor, drafts: torch.Tensor, entropy: bool = True) -> dict[str, torch.Tensor]:
    """One position's features from the draft distribution q [N, V] and its drafts [N]."""
    out = {"token_prob": q.gather(-1, drafts[:, None])[:, 0], "max_prob": q.max(dim=-1).values}
    if entropy:
        out["entropy"] = -(q * torch.log(q.clamp_min(1e-12))).sum(-1)
    return out


def stack_features(per_position: list[dict]) -> dict[str, np.ndarray]:
    """Per-position feature dicts -> {name: float64 [N, K]} (one device->host copy)."""
    names = list(per_position[0])
    both = torch.stack([torch.stack([f[n] for n in names]) for f in per_position], -1)  # [F, N, K]
    arr = both.double().cpu().numpy()
    return {n: arr[i] for i, n in enumerate(names)}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _design(feats: dict, k: int) -> np.ndarray:
    """[..., 4] design matrix: bias, logit(max prob), entropy, position/K."""
    mx = feats["max_prob"]
    pos = np.broadcast_to(np.arange(mx.shape[-1]) / max(k, 1), mx.shape)
    return np.stack([np.ones_like(mx), _logit(mx), feats["entropy"], pos], axis=-1)


class Calibrated:
    """Online logistic estimator of conditional acceptance from draft-distribution features."""

    def __init__(self, window: int = 20000, refit_every: int = 5, min_obs: int = 64, l2: float = 1e-3):
        self.x: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.n = 0
        self.window, self.refit_every, self.min_obs, self.l2 = window, refit_every, min_obs, l2
        self.w: np.ndarray | None = None  # [4] coefficients
        self.updates = 0

    def predict(self, feats: dict, k: int) -> np.ndarray:
        if self.w is None:
            return feats["max_prob"].copy()
        z = _design(feats, k) @ self.w
        return 1.0 / (1.0 + np.exp(-z))

    def observe(self, feats: dict, k: int, lengths: np.ndarray, accepted: np.ndarray) -> None:
        """Outcomes seen: positions j < L pass iff j < A; positions past the first failure are unseen."""
        x = _design(feats, k)
        j = np.arange(x.shape[1])[None, :]
        seen = j < np.minimum(lengths, accepted + 1)[:, None]
        if not seen.any():
            return
        self.x.append(x[seen])
        self.y.append((j < accepted[:, None])[seen].astype(np.float64))
        self.n += int(seen.sum())
        self.updates += 1
        if self.updates % self.refit_every == 0 and self.n >= self.min_obs:
            self.fit()

    def fit(self, iters: int = 8) -> None:
        x = np.concatenate(self.x)[-self.window:]
        y = np.concatenate(self.y)[-self.window:]
        self.x, self.y = [x], [y]
        self.n = len(y)
        w = np.zeros(x.shape[1]) if self.w is None else self.w.copy()
        for _ in range(iters):  # Newton steps on the L2-regularised log-likelihood
            p = 1.0 / (1.0 + np.exp(-(x @ w)))
            g = x.T @ (p - y) + self.l2 * w
            h = (x * (p * (1 - p))[:, None]).T @ x + self.l2 * np.eye(x.shape[1])
            w = w - np.linalg.solve(h, g)
        self.w = w


def estimate(name: str, feats: dict, k: int, calibrated: Calibrated | None) -> np.ndarray:
    if name == "token_prob":
        return feats["token_prob"].copy()
    if name == "max_prob":
        return feats["max_prob"].copy()
    if name == "calibrated":
        return calibrated.predict(feats, k)
    raise ValueError(f"unknown estimator {name!r}")
