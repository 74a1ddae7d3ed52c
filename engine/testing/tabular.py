"""Tabular language models behind the same call interface as an HF causal LM.

P(next | previous token, current token) is a fixed table [V+1, V, V] (row V of the
first axis = "no previous token"). The model keeps its context in the KV cache
(one-hot keys), and reads the previous token through the attention mask, so a
masking or cropping mistake in the engine changes its output distribution.
Used by the exact-distribution tests.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch


class TabularLM(torch.nn.Module):
    def __init__(self, table):
        super().__init__()
        t = torch.as_tensor(np.asarray(table), dtype=torch.float32)
        self.vocab = t.shape[-1]
        assert t.shape == (self.vocab + 1, self.vocab, self.vocab), "table must be [V+1, V, V]"
        self.register_buffer("logp", torch.log(t.clamp_min(1e-30)))
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # device/dtype probe

    def forward(self, input_ids, attention_mask, position_ids=None, past_key_values=None, use_cache=True):
        b, t = input_ids.shape
        onehot = torch.nn.functional.one_hot(input_ids, self.vocab).float()[:, None]  # [B, 1, T, V]
        keys, _ = past_key_values.update(onehot, onehot, 0)  # [B, 1, W+T, V]
        toks = keys[:, 0].argmax(-1)  # [B, W+T]
        w = keys.shape[2] - t
        dev = input_ids.device
        slots = torch.arange(w + t, device=dev)
        if attention_mask is None:  # dense batch: plain causal attention
            allowed = (slots[None, :] <= (w + torch.arange(t, device=dev))[:, None])[None].expand(b, -1, -1)
        else:
            allowed = attention_mask[:, 0] == 0  # [B, T, W+T]
        own = torch.where(allowed, slots, -1).max(-1).values  # [B, T] the query's own slot: its latest visible one
        before = slots[None, None, :] < own[:, :, None]
        idx = torch.where(allowed & before, slots, -1).max(-1).values  # [B, T] latest kept slot before
        prev = torch.where(idx >= 0, toks.gather(1, idx.clamp_min(0)), self.vocab)
        return SimpleNamespace(logits=self.logp[prev, input_ids])


def random_table(vocab: int, rng: np.random.Generator, concentration: float = 1.0) -> np.ndarray:
    return rng.dirichlet(np.full(vocab, concentration), size=(vocab + 1, vocab))


def exact_joint(table: np.ndarray, prompt: list[int], n: int) -> np.ndarray:
    """Exact probability of every n-token continuation of `prompt`: array [V]*n."""
    v = table.shape[-1]
    prev = prompt[-2] if len(prompt) > 1 else v
    joint = table[prev, prompt[-1]].copy()  # [V]
    if n == 1:
        return joint
    # dims: x1..xm; next depends on (x_{m-1}, x_m)
    out = np.einsum("a,ab->ab", joint, table[prompt[-1]])  # [V, V]: x1, x2
    for _ in range(n - 2):
        last2 = table[: v]  # [V(prev), V(cur), V(next)]
        out = out[..., :, :, None] * last2[(None,) * (out.ndim - 2)]
    return out
