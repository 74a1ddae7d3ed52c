"""Flat slot passes: every row's new tokens in one sequence, no padding (vLLM's ragged batch).

A pass over R rows with n_r new tokens each runs the HF model on ONE row of N = sum n_r tokens
([1, N]; cu_tokens [R + 1] int64 marks where each row starts), with each token's own position id.
Embedding, linears, norms, rotary and the MLP then cost the N real tokens, whatever the rows' lengths:
a joining request's prompt can ride in the same pass as the running requests' verification windows
(a mixed batch) without padding them all to the prompt's length. Only attention needs the rows:
  - the new keys/values are scattered into each row's slot (engine/slots.py) at its next positions,
  - rows with a past (decoding, verification, drafting) attend through their slots: their queries
    are gathered into [B, T] (B = the span of their slots, T = their longest row), with the per-row
    mask of slots.Plan, by engine/attention.py's fold kernel, and scattered back,
  - rows without a past (a prefill) attend causally over their own new keys only, one sdpa call
    per group of equal-length rows.
engine.forward uses this for the mixed slot passes (some rows fresh, some with a past) of an HF decoder
model that uses engine/attention.py (server.admission = "mixed"); other passes keep slots.Plan's [B, T]
layout, which measured 3-8% faster for them. The head runs on the positions asked for (heads) only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine import slots as slm


class FlatPlan:
    """Where each of a pass's N flat tokens goes. Rows are the given slots, in the given order."""

    def __init__(self, kv: slm.SlotKV, slots: list[int], n: list[int]):
        dev = kv.device
        self.kv = kv
        kv.ensure(max(slots) + 1, kv.capacity)
        self.slot = torch.as_tensor(slots, dtype=torch.long, device=dev)  # [R] slot of each row
        self.n = torch.as_tensor(n, dtype=torch.long, device=dev)  # [R] new tokens per row
        self.past = kv.length[self.slot].clone()  # [R] kept tokens before this pass
        self.cu = torch.zeros(len(n) + 1, dtype=torch.long, device=dev)  # [R + 1] cu_tokens
        self.cu[1:] = torch.cumsum(self.n, 0)
        row_of = torch.repeat_interleave(torch.arange(len(n), device=dev), self.n)  # [N] row of each token
        j = torch.arange(int(self.cu[-1]), device=dev) - self.cu[row_of]  # [N] index within its row
        self.pos = self.past[row_of] + j  # [N] position id of each token
        self.tok_slot = self.slot[row_of]  # [N] slot of each token
        kv.ensure(kv.slots, int((self.past + self.n).max()) if len(n) else 1)
        past_l, n_l = self.past.tolist(), n
        self.fresh: dict[int, list[int]] = {}  # prompt length -> rows without a past (prefills)
        dec = []
        for r, (p, k) in enumerate(zip(past_l, n_l)):
            if k == 0:
                continue
            if p == 0:
                self.fresh.setdefault(k, []).append(r)
            else:
                dec.append(r)
        self.dec = None
        if dec:
            self._decode_layout(dec, slots, past_l, n_l, dev)

    def _decode_layout(self, dec: list[int], slots, past_l, n_l, dev) -> None:
        """The rows with a past, over the contiguous slots lo..hi-1 (others there ride along empty)."""
        lo, hi = min(slots[r] for r in dec), max(slots[r] for r in dec) + 1
        t = max(n_l[r] for r in dec)
        past = self.kv.length[lo:hi].clone()
        n = torch.zeros(hi - lo, dtype=torch.long)
        src = torch.zeros(hi - lo, t, dtype=torch.long)  # flat token of each (span row, j); 0 = padding
        cu = self.cu.tolist()
        for r in dec:
            b = slots[r] - lo
            n[b] = n_l[r]
            src[b, : n_l[r]] = torch.arange(cu[r], cu[r] + n_l[r])
        n = n.to(dev)
        real = (torch.arange(t, device=dev)[None, :] < n[:, None]).reshape(-1)
        width = int(past.max())
        pos = past[:, None] + torch.arange(t, device=dev)[None, :]
        self.dec = dict(lo=lo, hi=hi, t=t, width=width, src=src.to(dev).reshape(-1),
                        real=real.nonzero().squeeze(1), pos=pos)

    def decode_mask(self, dtype) -> torch.Tensor:
        """Additive [B, 1, T, width + T]: query j of span row b sees positions <= past[b] + j."""
        d = self.dec
        allowed = torch.arange(d["width"] + d["t"], device=d["pos"].device)[None, None, :] <= d["pos"][:, :, None]
        m = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return m.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]

    def write(self, i: int, key_states: torch.Tensor, value_states: torch.Tensor):
        """Layer i: scatter the new keys/values [1, Hkv, N, D] into the slots; attention reads them as given."""
        bufs = self.kv.layer(i, key_states)
        for buf, new in zip(bufs, (key_states, value_states)):
            buf[self.tok_slot, :, self.pos] = new[0].transpose(0, 1)
        return key_states, value_states

    def commit(self) -> None:
        self.kv.length[self.slot] = self.past + self.n


class Active:
    """The flat pass in progress (None outside one) and its decode mask, folded per group size g."""

    plan: FlatPlan | None = None
    masks: dict = {}


def attention(module, query, key, value, scaling):
    """query [1, H, N, D], key/value [1, Hkv, N, D] (the pass's new ones) -> [1, N, H, D]."""
    plan = Active.plan
    _, h, n_tok, d = query.shape
    hkv = key.shape[1]
    g = h // hkv
    out = query.new_empty(n_tok, h, d)
    for length, rows in plan.fresh.items():  # prefills: causal over their own keys
        starts = [int(plan.cu[r]) for r in rows]
        if len(rows) == 1:
            s = starts[0]
            q, k, v = (x[:, :, s: s + length] for x in (query, key, value))
        else:
            idx = torch.as_tensor([s + j for s in starts for j in range(length)], device=query.device)
            q, k, v = (x[0][:, idx].view(x.shape[1], len(rows), length, d).transpose(0, 1) for x in (query, key, value))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=g > 1)  # [G, H, L, D]
        if len(rows) == 1:
            out[starts[0]: starts[0] + length] = o[0].transpose(0, 1)
        else:
            out[idx] = o.transpose(1, 2).reshape(-1, h, d)
    dec = plan.dec
    if dec is not None:  # rows with a past: through their slots, [B, T] with the per-row mask
        layer = plan.kv.layers[module.layer_idx]
        b, t, w = dec["hi"] - dec["lo"], dec["t"], dec["width"] + dec["t"]
        keys, values = (buf[dec["lo"]: dec["hi"], :, :w] for buf in layer)
        q = query[0][:, dec["src"]].view(h, b, t, d).transpose(0, 1)  # [B, H, T, D]
        mask = Active.masks.get(1)
        if mask is None:
            mask = Active.masks[1] = plan.decode_mask(query.dtype)
        folded = Active.masks.get(g)  # the fold of engine/attention.py: g * T queries per KV head
        if folded is None:
            folded = Active.masks[g] = mask[:, :, None].expand(b, 1, g, t, w).reshape(b, 1, g * t, w)
        o = F.scaled_dot_product_attention(q.reshape(b, hkv, g * t, d), keys, values, attn_mask=folded,
                                           scale=scaling).view(b, h, t, d)
        o = o.transpose(1, 2).reshape(b * t, h, d)
        out[dec["src"][dec["real"]]] = o[dec["real"]]
    return out[None]


def cache_for(plan: FlatPlan, n_layers: int):
    """An HF cache whose layers write through the flat plan."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class FlatLayer(DynamicLayer):
        def __init__(self, index: int):
            super().__init__()
            self.index, self.is_initialized = index, True

        def update(self, key_states, value_states, *args, **kwargs):
            return plan.write(self.index, key_states, value_states)

        def get_seq_length(self) -> int:
            return 0

    cache = DynamicCache()
    cache.layers = [FlatLayer(i) for i in range(n_layers)]
    cache.layer_class_to_replicate = lambda: FlatLayer(len(cache.layers))
    return cache


@torch.no_grad()
def forward_flat(model, kv: slm.SlotKV, slots: list[int], tokens: list[list[int]], last_only: bool, logits: bool,
                 feats, hidden: bool, heads: list[int] | None = None):
    """engine.forward.forward over a SlotKV, laid out flat; same returns ([R, T, V] float32 logits, row r's
    last heads[r] tokens at 0..heads[r]-1 (heads None: all its tokens), or [R, V] with last_only; kv;
    with hidden=True also [R, T, H] float32 post-norm hidden states, zeros past each row's tokens)."""
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n = [len(x) for x in tokens]
    plan = FlatPlan(kv, list(slots), n)
    ids = torch.as_tensor([tok for row in tokens for tok in row], dtype=torch.long, device=dev)[None]
    n_layers = model.config.num_hidden_layers
    kw = dict(position_ids=plan.pos[None], past_key_values=cache_for(plan, n_layers), use_cache=True)
    if getattr(model, "reads_target_features", False):
        kw["inputs_embeds"] = model.fuse(ids, _flat_features(feats, n, model.config.hidden_size, dtype, dev))
    else:
        kw["input_ids"] = ids
    Active.plan, Active.masks = plan, {}
    try:
        full = model.get_decoder()(**kw).last_hidden_state[0]  # [N, H]
    finally:
        Active.plan, Active.masks = None, {}
    plan.commit()
    head = model.get_output_embeddings()
    r, t = len(tokens), max(n) if n else 0
    out = None
    if logits:
        want = [1] * r if last_only else (list(heads) if heads is not None else n)
        out = _last(head(full[_last_index(plan, want)]).float(), want)
        if last_only:
            out = out[:, 0]
    if hidden:
        return out, kv, _last(full.float(), n)
    return out, kv


def _last_index(plan: FlatPlan, want: list[int]) -> torch.Tensor:
    """[sum want] flat token index of each row's last want[r] tokens, row by row."""
    ends = plan.cu[1:].tolist()
    return torch.as_tensor([e - w + j for e, w in zip(ends, want) for j in range(w)], dtype=torch.long,
                           device=plan.cu.device)


def _last(flat: torch.Tensor, want: list[int]) -> torch.Tensor:
    """[sum want, X] (each row's tokens in turn) -> [R, max want, X], row r's at 0..want[r]-1, zeros after."""
    r, t = len(want), max(want, default=0)
    if all(w == t for w in want):
        return flat.view(r, t, flat.shape[-1])
    out = flat.new_empty(r * t, flat.shape[-1])
    w = torch.as_tensor(want, dtype=torch.long)
    real = (torch.arange(t)[None, :] < w[:, None]).reshape(-1).to(flat.device)
    out[real] = flat
    out[~real] = 0
    return out.view(r, t, flat.shape[-1])


def _flat_features(feats, n: list[int], size: int, dtype, dev) -> torch.Tensor:
    """[1, N, H] features beside the tokens (zeros where none are given): per-row [n_r, H] tensors, or
    one [R, T, H] tensor whose first n_r positions per row are used."""
    f = torch.zeros(sum(n), size, dtype=dtype, device=dev)
    at = 0
    for r, k in enumerate(n):
        fr = None
        if torch.is_tensor(feats):
            fr = feats[r, :k]
        elif feats is not None and r < len(feats):
            fr = feats[r]
        if fr is not None:
            f[at: at + fr.shape[0]] = fr.to(dtype)
        at += k
    return f[None]
