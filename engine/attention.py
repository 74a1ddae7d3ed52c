"""Attention for the engine's slot passes: sdpa with the pass's own additive mask, KV heads never repeated.

A slot pass whose rows differ in length, or that feeds T > 1 tokens per row after a past (a
verification, a draft refeed), needs a per-row mask [B, 1, T, W] (slots.Plan.full_mask). Handed such a
mask, transformers' sdpa path repeats every KV head for the GQA query heads (repeat_kv: two copies per
layer) and runs sdpa's masked kernel over all H heads. Here instead each KV head's g query heads are
folded into the query axis: q [B, Hkv, g * T, D] against k/v [B, Hkv, W, D] with the mask repeated g
times along the queries ([B, 1, g * T, W], built once per pass and g): one sdpa call, no copy, g * T
queries per KV head. One token per row of equal rows (plain decoding) takes the same kernel without a mask.
Measured (`benchmarks/attention.py`, one thread, bf16, batch 8, 9 query / 3 KV heads, head dim 64):
  2026-12-03 box (Intel, AMX; past <= 180): T = 3: fold 149 us per call, sdpa with enable_gqa 291 us,
    the earlier two grouped matmuls 271 us, transformers' repeat_kv + sdpa 1125 us; T = 1: enable_gqa
    86 us, fold 104 us (float32: fold 126, enable_gqa 157).
  2026-12-07 box (AMD EPYC, AVX512-BF16, no AMX; past <= 128): T = 1: fold 178 us, enable_gqa 940 us,
    matmuls 172, repeat_kv 1563; T = 3: fold 243, enable_gqa 522, matmuls 223, repeat_kv 597.
  So the fold everywhere: within 1.2x of the best kernel on both boxes, where enable_gqa is 5.3x off
  on one.
A prefill (no past: causal over its own keys) leaves Active.mask None and defers to transformers'
sdpa and its causal kernel; so do BatchKV passes that carry a mask. Device-generic (sdpa), on CUDA too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine import flat

NAME = "tetris_grouped"


class Active:
    """The additive mask [B, 1, T, W] of the slot pass in progress (None outside one), and its copies
    folded for g query heads per KV head ([B, 1, g * T, W], built once per pass and g)."""

    mask: torch.Tensor | None = None
    folded: dict = {}

    @classmethod
    def set(cls, mask: torch.Tensor | None) -> None:
        cls.mask, cls.folded = mask, {}

    @classmethod
    def fold(cls, g: int) -> torch.Tensor:
        """Query row r * T + j (head r of a KV head's group, token j) sees what token j sees."""
        if g not in cls.folded:
            b, _, t, w = cls.mask.shape
            cls.folded[g] = cls.mask[:, :, None].expand(b, 1, g, t, w).reshape(b, 1, g * t, w)
        return cls.folded[g]


def grouped_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query [B, H, T, D], key/value [B, Hkv, W, D] -> ([B, T, H, D], None), as transformers expects."""
    if flat.Active.plan is not None:  # a flat pass (engine/flat.py): rows by segments
        return flat.attention(module, query, key, value, scaling), None
    mask = Active.mask
    b, h, t, d = query.shape
    if mask is None and (t > 1 or attention_mask is not None):  # a prefill, a masked BatchKV pass: sdpa's own
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    hkv = key.shape[1]
    g = h // hkv  # query heads per KV head: head i reads KV head i // g (transformers' repeat_kv)
    # fold each group's g heads into the query axis: one KV head, g * T queries (one token per row with
    # no mask: every query sees every key)
    out = F.scaled_dot_product_attention(query.reshape(b, hkv, g * t, d), key, value,
                                         attn_mask=Active.fold(g) if mask is not None else None,
                                         scale=scaling).view(b, h, t, d)
    return out.transpose(1, 2).contiguous(), None


def use_grouped(model) -> bool:
    """Switch an HF model (with an attention implementation setting) to grouped_attention; True if it uses it."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "_attn_implementation"):
        return False
    if cfg._attn_implementation != NAME:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

        AttentionInterface.register(NAME, grouped_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _mask)  # outside a slot pass it is sdpa, masks included
        for m in model.modules():  # every sub-config (a draft shares none with its target)
            c = getattr(m, "config", None)
            if c is not None and hasattr(c, "_attn_implementation"):
                c._attn_implementation = NAME
    return True


def _mask(*args, **kwargs):
    """transformers' sdpa mask, except in a flat pass (its attention builds its own)."""
    if flat.Active.plan is not None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)
