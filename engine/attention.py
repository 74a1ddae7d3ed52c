"""Attention for the engine's slot passes: grouped matmuls with the pass's own additive mask.

Measured here (one thread, CPU clock, batch 8, 9 query / 3 KV heads, head dim 64, 170 keys): torch's
scaled_dot_product_attention costs ~1.2 ms per call in bfloat16 for one new token per row (its CPU
kernel), ~0.18 ms in float32; two matmuls with the query heads grouped per KV head (no repeat_kv copy)
and a float32 softmax cost ~0.12 ms (bf16) and ~0.18 ms (fp32), and 0.2-0.3 ms for 3 tokens per row.
So the engine registers this function with transformers' AttentionInterface and switches a model to
it for its slot passes (engine.forward); the mask is the pass's (slots.Plan.full_mask), set here for the
duration of the pass. A pass that needs no mask (every row the same length and T real tokens: plain
decoding of equal rows, a prefill) leaves it None, and then this defers to transformers' sdpa, whose
mask-free kernel is faster still (plain decoding vs HF generate(): 0.870x -> 0.965x at batch 1, 0.918x ->
1.000x at batch 8, benchmarks/hf_generate.py, 2026-12-03); so do BatchKV forwards and profiling.
Device-generic (matmul + softmax), on CUDA too.
"""
from __future__ import annotations

import torch

NAME = "tetris_grouped"


class Active:
    """The additive mask [B, 1, T, W] of the slot pass in progress (None outside one)."""

    mask: torch.Tensor | None = None


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
    scale = scaling if scaling is not None else d ** -0.5
    # key/value are views of the slot buffers (strided along positions): a matmul on the strided
    # key costs ~4x a contiguous copy plus the matmul (bf16, batch 8, 200 keys: 150 vs 13 + 37 us)
    s = torch.matmul(query.reshape(b, hkv, g * t, d), key.contiguous().transpose(-1, -2))  # [B, Hkv, g*T, W]
    s = s.view(b, hkv, g, t, -1).mul_(scale) + mask[:, :, None].to(s.dtype)
    p = torch.softmax(s, dim=-1, dtype=torch.float32).to(value.dtype).view(b, hkv, g * t, -1)
    out = torch.matmul(p, value).view(b, h, t, d)
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
