"""Attention for the engine's slot passes: sdpa with the pass's own additive mask, KV heads never repeated.

A slot pass whose rows differ in length, or that feeds T > 1 tokens per row after a past (a
verification, a draft refeed), needs a per-row mask [B, 1, T, W] (slots.Plan.full_mask). Handed such a
mask, transformers' sdpa path repeats every KV head for the GQA query heads (repeat_kv: two copies per
layer) and runs sdpa's masked kernel over all H heads. Here instead:
  T == 1   sdpa with the mask and enable_gqa (no copy),
  T > 1    each KV head's g query heads are folded into the query axis: q [B, Hkv, g * T, D] against
           k/v [B, Hkv, W, D] with the mask repeated g times along the queries ([B, 1, g * T, W],
           built once per pass and g): one sdpa call, no copy, g * T queries per KV head.
Measured (`benchmarks/attention.py`, 2026-12-03, one thread, bf16, batch 8, 9 query / 3 KV heads, head
dim 64, past <= 180): at T = 3 the fold costs 149 us per call, sdpa with enable_gqa 291 us, the earlier
two grouped matmuls 271 us, transformers' repeat_kv + sdpa 1125 us; at T = 1 enable_gqa 86 us, the fold
104 us (in float32 the fold wins at T = 1 too, 126 vs 157 us; the rule stays one for both dtypes).
A pass that needs no mask (a prefill, or one token per row of equal rows: plain decoding) leaves
Active.mask None, and then this defers to transformers' sdpa and its mask-free kernel; so do BatchKV
forwards and profiling. Device-generic (sdpa), on CUDA too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
    mask = Active.mask
    if mask is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    b, h, t, d = query.shape
    hkv = key.shape[1]
    g = h // hkv  # query heads per KV head: head i reads KV head i // g (transformers' repeat_kv)
    if t == 1:  # sdpa's own GQA (no repeated KV) is the cheaper kernel for one query per row
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=g > 1)
    else:  # fold each group's g heads into the query axis: one KV head, g * T queries
        out = F.scaled_dot_product_attention(query.reshape(b, hkv, g * t, d), key, value, attn_mask=Active.fold(g),
                                             scale=scaling).view(b, h, t, d)
    return out.transpose(1, 2).contiguous(), None


def use_grouped(model) -> bool:
    """Switch an HF model (with an attention implementation setting) to grouped_attention; True if it uses it."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "_attn_implementation"):
        return False
    if cfg._attn_implementation != NAME:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(NAME, grouped_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # outside a slot pass it is sdpa, masks included
        for m in model.modules():  # every sub-config (a draft shares none with its target)
            c = getattr(m, "config", None)
            if c is not None and hasattr(c, "_attn_implementation"):
                c._attn_implementation = NAME
    return True
