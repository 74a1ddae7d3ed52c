"""Token sampling and the speculative acceptance rule, batched, driven by given uniforms.

All randomness comes in as U(0,1) arrays drawn from per-request numpy streams,
so runs are reproducible and two policies see the same draws per request.
"""
from __future__ import annotations

import torch


def probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax at `temperature` (1.0 when greedy: the model's own distribution)."""
    t = temperature if temperature > 0 else 1.0
    return torch.softmax(logits.float() / t, dim=-1)


def sample(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from p [..., V] with uniforms u [...]: int64 [...]."""
    cdf = torch.cumsum(p, dim=-1)
    cdf = cdf / cdf[..., -1:].clamp_min(1e-30)
    idx = torch.searchsorted(cdf, u[..., None].to(cdf.dtype), right=True)[..., 0]
    return idx.clamp_max(p.shape[-1] - 1)


def next_token(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """One token per row from logits [B, V]: argmax when greedy, else a draw."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    return sample(probs(logits, temperature), u)


def verify(
    target_logits: torch.Tensor,  # [B, T, V] at the last emitted token and drafts 1..T-1
    drafts: torch.Tensor,  # [B, K] int64 drafted tokens (K >= T-1)
    q: torch.Tensor | None,  # [B, K, V] draft distributions (sampling only)
    lengths: torch.Tensor,  # [B] int64 windows L_b <= T-1 the acceptance may use
    temperature: float,
    u_accept: torch.Tensor,  # [B, K] uniforms for the accept tests
    u_final: torch.Tensor,  # [B] uniform for the correction / bonus token
    accept_all: bool = False,  # negative control: accept every verified draft (NOT lossless)
):
    """The speculative acceptance rule over a ragged batch.

    Returns (accepted [B] int64, new_token [B] int64, truth [B, T-1] float32):
    truth[b, j] is the conditional acceptance of draft j+1 given drafts 1..j
    (greedy: 1.0 on argmax match; sampling: min(1, p/q)), for every verified position.
    """
    b, t, _ = target_logits.shape
    w = t - 1
    pos = torch.arange(w, device=drafts.device)
    d = drafts[:, :w]
    if temperature <= 0:
        top = target_logits.argmax(dim=-1)  # [B, T]
        truth = (d == top[:, :w]).float()
        passed = truth > 0.5
    else:
        p = probs(target_logits, temperature)  # [B, T, V]
        if w:
            pd = p[:, :w].gather(-1, d[..., None])[..., 0]
            qd = q[:, :w].gather(-1, d[..., None])[..., 0]
            truth = torch.clamp(pd / qd.clamp_min(1e-30), max=1.0)
        else:
            truth = p.new_zeros(b, 0)
        passed = u_accept[:, :w].to(truth.dtype) < truth
    if accept_all:
        passed = torch.ones_like(passed)
    in_window = pos[None, :] < lengths[:, None]
    accepted = torch.cumprod((passed & in_window).long(), dim=1).sum(dim=1) if w else torch.zeros(b, dtype=torch.long, device=drafts.device)
    rows = torch.arange(b, device=drafts.device)
    if temperature <= 0:
        new = top[rows, accepted]
    else:
        p_at = p[rows, accepted]  # [B, V] target distribution where the run stopped
        rejected = accepted < lengths
        if w:
            q_at = q[rows, accepted.clamp_max(max(w - 1, 0))]
            resid = torch.clamp(p_at - q_at, min=0.0)
            ok = resid.sum(-1, keepdim=True) > 0
            resid = torch.where(ok, resid, p_at)
            p_at = torch.where(rejected[:, None], resid, p_at)
        new = sample(p_at, u_final)
    return accepted, new, truth
