"""One batched forward of ragged new tokens over a BatchKV (padded or packed layout)."""
from __future__ import annotations

import functools
import types

import torch

from engine import attention as att
from engine import flat
from engine import kv as kvm
from engine import slots as slm
from engine.kernels import linear


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


@functools.cache
def _grow_layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowLayer(DynamicLayer):
        """A cache layer writing new keys/values in place into a buffer with spare capacity
        (doubling when full), instead of concatenating a new copy every forward."""

        def __init__(self, kbuf, vbuf, used: int):
            super().__init__()
            self.dtype, self.device, self.is_initialized = kbuf.dtype, kbuf.device, True
            self.kbuf, self.vbuf, self.used = kbuf, vbuf, used
            self.keys, self.values = kbuf[:, :, :used], vbuf[:, :, :used]

        def update(self, key_states, value_states, *args, **kwargs):
            need = self.used + key_states.shape[-2]
            if need > self.kbuf.shape[2]:
                cap = max(need, 2 * self.kbuf.shape[2], 64)
                b, h, _, d = key_states.shape
                kb, vb = key_states.new_empty(b, h, cap, d), value_states.new_empty(b, h, cap, value_states.shape[-1])
                kb[:, :, : self.used] = self.kbuf[:, :, : self.used]
                vb[:, :, : self.used] = self.vbuf[:, :, : self.used]
                self.kbuf, self.vbuf = kb, vb
            self.kbuf[:, :, self.used: need] = key_states
            self.vbuf[:, :, self.used: need] = value_states
            self.used = need
            self.keys, self.values = self.kbuf[:, :, :need], self.vbuf[:, :, :need]
            return self.keys, self.values

    return GrowLayer


def _wrap(state: kvm.BatchKV):
    """A DynamicCache over the state's tensors (no copy); new tokens go into spare capacity."""
    from transformers import DynamicCache

    grow = _grow_layer_class()
    cache = DynamicCache()
    bufs = state.buffers if state.buffers is not None else state.layers
    for k, v in bufs:
        cache.layers.append(grow(k, v, state.width))
    return cache


# Packed layout: while a packed forward runs, every nn.Linear of the model computes only the real
# (non-padding) rows of its [B, T, in] input and leaves zeros in the padding rows. The linear layers
# are nearly all of a small model's multiply-adds, so a ragged batch then costs its real tokens,
# not B * max(T). Attention, norms and rotary still see the padded [B, T] layout (the KV cache's).
class PackState:
    """One model's packing state, shared by all its nn.Linear modules."""

    def __init__(self):
        # (flat indices of the real rows [P] int64, B * T) during a packed forward, else None
        self.rows: tuple[torch.Tensor, int] | None = None


def _packed_linear_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward on the real rows only while a packed forward runs (bound per module with
    types.MethodType, so a deepcopy of the model rebinds it, and its PackState, to the copy)."""
    pk = self._tetris_pack.rows
    if pk is None or x.dim() != 3 or x.shape[0] * x.shape[1] != pk[1]:
        return linear(self, x)
    idx, bt = pk
    y = x.new_zeros(bt, self.out_features)
    y[idx] = linear(self, x.reshape(bt, -1)[idx])
    return y.view(*x.shape[:2], self.out_features)


def _pack_state(model) -> PackState:
    """The model's PackState; on first use every nn.Linear of the model is bound to it."""
    if getattr(model, "_tetris_pack", None) is None:
        state = PackState()
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m._tetris_pack = state
                m.forward = types.MethodType(_packed_linear_forward, m)
        model._tetris_pack = state
    return model._tetris_pack


def _start_pack(model, n: torch.Tensor, t: int, total: int) -> PackState | None:
    """Turn on packed linears for a pass of `total` = B * t rows whose first n[b] per row are real;
    None (nothing to pack) when every row is full. The caller clears .rows after the pass."""
    if bool((n == t).all()):
        return None
    pack = _pack_state(model)
    real = (torch.arange(t, device=n.device)[None, :] < n[:, None]).reshape(-1)
    pack.rows = (real.nonzero().squeeze(1), total)
    return pack


@torch.no_grad()
def forward(model, state: kvm.BatchKV, tokens: list[list[int]], last_only: bool = False, logits: bool = True,
            feats: list[torch.Tensor] | None = None, hidden: bool = False, packed: bool = False,
            slots: list[int] | None = None, heads: list[int] | None = None):
    """Feed each row its ragged tokens after its kept state.

    Returns (logits, new_state): logits float32 [B, T, V] (or [B, V] at each row's
    last real token with last_only; None with logits=False), new_state with all
    real new tokens kept. For HF models with last_only (or no logits) the head runs
    on the needed positions only.
    feats: per row [len(tokens[b]), H] features fused with the tokens (a draft that reads the
    target's hidden states: model.fuse), or one tensor [B, T, H] when every row has T tokens. hidden=True returns (logits, new_state, hidden) with the
    final (post-norm) hidden states, float32 [B, T, H].
    packed=True: ragged rows cost their real tokens only (see PackState); outputs at padding positions
    are meaningless (zeros), as they are in the padded layout.
    state: a BatchKV (rows = its rows), or a static slots.SlotKV with `slots` the slot of each row
    (updated in place and returned as new_state).
    heads (SlotKV only): logits for each row's last heads[b] tokens only, [B, max heads, V], row b's at
    0..heads[b]-1 (a mixed pass: all of a verified row's tokens, a joining prompt's last one).
    """
    if isinstance(state, slm.SlotKV):
        return _forward_slots(model, state, slots, tokens, last_only, logits, feats, hidden, packed, heads)
    if heads is not None:
        raise ValueError("forward: heads needs a SlotKV")
    dev, dtype = model_device(model), model_dtype(model)
    ids, n = kvm.pad_tokens(tokens, dev)
    t = ids.shape[1]
    dense = bool(state.valid.all()) and bool((n == t).all())
    # dense rows (no holes, no padding): let transformers build the plain causal mask, which keeps
    # sdpa on its fast path (no 4D mask, no repeated KV heads)
    mask = None if dense else kvm.attention_mask(state, n, t, dtype)
    pos = kvm.positions(state, t)
    cache = _wrap(state)
    kw = dict(attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    if getattr(model, "reads_target_features", False):  # zeros where no features are given (profiling)
        if torch.is_tensor(feats):
            f = feats
        else:
            f = torch.zeros(len(tokens), t, model.config.hidden_size, dtype=dtype, device=dev)
            for b, fb in enumerate(feats or []):
                f[b, : fb.shape[0]] = fb
        kw["inputs_embeds"] = model.fuse(ids, f)
    else:
        kw["input_ids"] = ids
    rows = torch.arange(len(tokens), device=dev)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    pack = _start_pack(model, n, t, len(tokens) * t) if packed else None
    try:
        out, hid = _run(model, kw, head, rows, n, last_only, logits, hidden)
    finally:
        if pack is not None:
            pack.rows = None
    new = kvm.append(state, [(layer.keys, layer.values) for layer in cache.layers], n, t)
    if cache.layers and hasattr(cache.layers[0], "kbuf"):
        new.buffers = [(layer.kbuf, layer.vbuf) for layer in cache.layers]
    if hidden:
        return out, new, hid.float()
    return out, new


def _features(model, plan: slm.Plan, feats, n_rows: int, t: int, dtype, dev) -> torch.Tensor:
    """[B, T, H] features per batch row (zeros where none are given)."""
    f = torch.zeros(n_rows, t, model.config.hidden_size, dtype=dtype, device=dev)
    if torch.is_tensor(feats):
        if plan.select is None:
            f[:, : feats.shape[1]] = feats.to(dtype)
        else:
            f[plan.select, : feats.shape[1]] = feats.to(dtype)
        return f
    for b, fb in zip(plan.select.tolist() if plan.select is not None else range(n_rows), feats or []):
        if fb is not None:
            f[b, : fb.shape[0]] = fb
    return f


def _forward_slots(model, kv: slm.SlotKV, slots, tokens, last_only, logits, feats, hidden, packed, heads=None):
    """forward() over a static SlotKV (see engine/slots.py): rows laid out by slm.Plan, except a mixed
    pass (prompts of joining requests beside rows with a past) of an HF decoder model that takes
    engine/attention.py, which runs flat (engine/flat.py) so the short rows are not padded to the prompts."""
    if _mixed(kv, slots, tokens) and att.use_grouped(model) and hasattr(model, "get_decoder") \
            and model.get_output_embeddings() is not None:
        return flat.forward_flat(model, kv, slots, tokens, last_only, logits, feats, hidden, heads)
    dev, dtype = model_device(model), model_dtype(model)
    n_given = torch.tensor([len(x) for x in tokens], dtype=torch.long)
    t = int(n_given.max()) if len(tokens) else 0
    plan = slm.Plan(kv, list(slots), n_given, t)
    ids, n = kvm.pad_tokens(plan.spread(tokens, []), dev)
    if ids.shape[1] < t:  # every row of a span may be shorter only if t == 0
        ids = torch.nn.functional.pad(ids, (0, t - ids.shape[1]))
    grouped = att.use_grouped(model)
    mask = plan.mask(dtype)  # None: every row has the same length and T real tokens (HF's causal mask, sdpa)
    kw = dict(attention_mask=mask, position_ids=plan.positions(), past_key_values=slm.cache_for(plan), use_cache=True)
    if getattr(model, "reads_target_features", False):
        kw["inputs_embeds"] = model.fuse(ids, _features(model, plan, feats, ids.shape[0], t, dtype, dev))
    else:
        kw["input_ids"] = ids
    rows = torch.arange(len(tokens), device=dev)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    pack = _start_pack(model, n, t, ids.shape[0] * t) if packed else None
    n_sel = n_given.to(dev)
    att.Active.set(mask if grouped else None)
    try:
        out, hid = _run(model, kw, head, rows, n_sel, last_only, logits, hidden, plan.select)
    finally:
        att.Active.set(None)
        if pack is not None:
            pack.rows = None
    plan.commit()
    if heads is not None and out is not None and not last_only:  # each row's last heads[b], from position 0
        out = torch.stack([_shift(out[b], int(n_given[b]), h, max(heads)) for b, h in enumerate(heads)])
    if hidden:
        return out, kv, hid.float()
    return out, kv


def _mixed(kv: slm.SlotKV, slots, tokens) -> bool:
    """Some rows start fresh (no past: a prefill) and others have one."""
    past = kv.length[torch.as_tensor(list(slots), dtype=torch.long)].tolist() if len(tokens) else []
    return any(p == 0 and x for p, x in zip(past, tokens)) and any(p > 0 for p in past)


def _shift(row: torch.Tensor, n: int, h: int, width: int) -> torch.Tensor:
    """[T, V] logits of a row with n tokens -> [width, V]: its last h first, zeros after."""
    out = row.new_zeros(width, row.shape[-1])
    out[:h] = row[n - h: n]
    return out


def _run(model, kw, head, rows, n, last_only, logits, hidden, select=None):
    """(logits, hidden) of the pass; with `select` (batch row of each wanted row) only those rows."""
    hid = None
    if (last_only or not logits or hidden) and head is not None and hasattr(model, "get_decoder"):
        full = model.get_decoder()(**kw).last_hidden_state
        hid = full[select] if select is not None else full
        if not logits:
            out = None
        elif last_only:
            out = head(hid[rows, n - 1]).float()
        else:  # the head on the pass's own row order: a packed head's real rows are laid out in it
            out = head(full)
            out = (out[select] if select is not None else out).float()
    else:
        out = model(**kw).logits
        if select is not None:
            out = out[select]
        out = (out[rows, n - 1] if last_only else out).float() if logits else None
    return out, hid
