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
    """Inverse-CDF draw from p [..., V] with uniforms u [...] in [0, 1): int64 [...].

    float64 throughout (p's float32 values are exact in float64; the cumulative sum's
    rounding is below V * 2^-53 ~ 5e-12 of the mass at V = 49,152). Guards: the draw
    is the first token whose CDF exceeds u * total, so a token with p = 0 is never
    returned; if u * total rounds up to the total, the last token with p > 0 is.
    """
    p64 = p.double()
    cdf = torch.cumsum(p64, dim=-1)
    total = cdf[..., -1:]
    x = u[..., None].to(torch.float64) * total
    idx = torch.searchsorted(cdf, x, right=True)[..., 0]
    v = p.shape[-1]
    over = idx >= v
    if bool(over.any()):  # u * total rounded up to the total (~1e-16 per draw): the last token with p > 0
        last = v - 1 - torch.flip(p64 > 0, dims=[-1]).to(torch.int8).argmax(dim=-1)
        idx = torch.where(over, last, idx)
    return idx


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
    u_final: torch.Tensor,  # [B] or [B, T] uniforms for the correction / bonus token ([b, a]: after a accepted)
    accept_all: bool = False,  # negative control: accept every verified draft (NOT lossless)
    p_temperature: float | None = None,  # negative control: the acceptance rule's p at another temperature
):
    """The speculative acceptance rule over a ragged batch.

    Returns (accepted [B] int64, new_token [B] int64, truth [B, T-1] float32 greedy / float64 sampling):
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
        p = probs(target_logits, temperature if p_temperature is None else p_temperature).double()  # [B, T, V]
        if w:
            pd = p[:, :w].gather(-1, d[..., None])[..., 0]
            qd = q[:, :w].gather(-1, d[..., None])[..., 0].double()
            truth = torch.clamp(pd / qd.clamp_min(1e-300), max=1.0)  # float64: the ratio is exact to rounding
        else:
            truth = p.new_zeros(b, 0)
        passed = u_accept[:, :w].to(torch.float64) < truth
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
            q_at = q[rows, accepted.clamp_max(max(w - 1, 0))].double()
            resid = torch.clamp(p_at - q_at, min=0.0)
            ok = resid.sum(-1, keepdim=True) > 0
            resid = torch.where(ok, resid, p_at)
            p_at = torch.where(rejected[:, None], resid, p_at)
        u_at = u_final[rows, accepted] if u_final.dim() == 2 else u_final
        new = sample(p_at, u_at)
    return accepted, new, truth
