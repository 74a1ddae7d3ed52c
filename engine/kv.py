"""Per-request KV state for a whole batch, with holes.

One batched key/value tensor per layer, [B, H, W, D], plus a boolean `valid`
[B, W]: slot s of row b holds a token request b has kept. A forward pass
appends T slots to every row (right-padded ragged input); tokens a request
later rejects are not cut out but marked invalid, and every later query is
masked off them. So the state of a row is exactly "the KV of the tokens it
kept, in order" -- the masked slots contribute exp(-inf) = 0 to attention --
and position ids count valid slots only. `compact` squeezes the holes out
(left padding) when they pile up or when rows join/leave the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchKV:
    layers: list  # per layer (keys, values), each [B, H, W, D]; [] before the first forward
    valid: torch.Tensor  # [B, W] bool: slot holds a kept token
    length: torch.Tensor  # [B] int64: kept tokens per row (= next position id)
    buffers: list | None = None  # per layer (keys, values) [B, H, capacity >= W, D] backing `layers`

    # Only the newest state of a buffer may be extended: a forward writes slots W.. in place.

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def width(self) -> int:
        return self.valid.shape[1]


def empty(batch: int, device="cpu") -> BatchKV:
    return BatchKV([], torch.zeros(batch, 0, dtype=torch.bool, device=device),
                   torch.zeros(batch, dtype=torch.long, device=device))


def pad_tokens(tokens: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ragged token lists: ids [B, T] int64 and real-count n [B] int64."""
    n = torch.tensor([len(t) for t in tokens], dtype=torch.long)
    width = int(n.max()) if len(tokens) else 0
    ids = torch.zeros(len(tokens), width, dtype=torch.long)
    for b, t in enumerate(tokens):
        if t:
            ids[b, : len(t)] = torch.as_tensor(t, dtype=torch.long)
    return ids.to(device), n.to(device)


def attention_mask(kv: BatchKV, n_new: torch.Tensor, t: int, dtype) -> torch.Tensor:
    """Additive 4D mask [B, 1, T, W+T] for T new slots of which the first n_new[b] are real."""
    w = kv.width
    dev = kv.valid.device
    new_real = torch.arange(t, device=dev)[None, :] < n_new[:, None]  # [B, T]
    keys_ok = torch.cat([kv.valid, new_real], dim=1)  # [B, W+T]
    causal = torch.arange(w + t, device=dev)[None, :] <= (w + torch.arange(t, device=dev))[:, None]  # [T, W+T]
    allowed = keys_ok[:, None, :] & causal[None]  # [B, T, W+T]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def positions(kv: BatchKV, t: int) -> torch.Tensor:
    """Position ids [B, T]: each row continues from its kept-token count."""
    return kv.length[:, None] + torch.arange(t, device=kv.length.device)[None, :]


def append(kv: BatchKV, layers: list, n_new: torch.Tensor, t: int) -> BatchKV:
    """The state after a forward of T slots whose first n_new[b] are real (kept for now)."""
    new_real = torch.arange(t, device=kv.valid.device)[None, :] < n_new[:, None]
    return BatchKV(layers, torch.cat([kv.valid, new_real], dim=1), kv.length + n_new)


def keep_from(kv: BatchKV, start: int, keep: torch.Tensor) -> None:
    """Of the slots from `start` on, row b keeps only its first keep[b] valid ones (in place)."""
    tail = kv.valid[:, start:]
    rank = torch.cumsum(tail.long(), dim=1)  # 1-based rank among valid tail slots
    kv.valid = torch.cat([kv.valid[:, :start], tail & (rank <= keep[:, None])], dim=1)
    kv.length = kv.valid.sum(dim=1)


def compact(kv: BatchKV, rows: torch.Tensor | None = None) -> BatchKV:
    """Squeeze out holes: valid slots packed to the right (left padding), width = max length.

    With `rows`, keep only those rows (in that order) in the same single copy.
    """
    dev = kv.valid.device
    if rows is not None:
        rows = rows.to(dev)
        valid, length = kv.valid[rows], kv.length[rows]
    else:
        valid, length = kv.valid, kv.length
    if not kv.layers:
        return empty(valid.shape[0], dev)
    w_new = int(length.max()) if valid.shape[0] else 0
    order = torch.sort(valid.to(torch.int8), dim=1, stable=True).indices[:, kv.width - w_new:]  # [B', W']
    src = rows if rows is not None else torch.arange(valid.shape[0], device=dev)
    layers, buffers = [], []
    spare = max(64, w_new // 2)  # room for the next forwards, written in place (see models.forward)
    for k, v in kv.layers:
        heads = torch.arange(k.shape[1], device=dev)
        idx = (src[:, None, None], heads[None, :, None], order[:, None, :])
        kb = k.new_empty(src.shape[0], k.shape[1], w_new + spare, k.shape[3])
        vb = v.new_empty(src.shape[0], v.shape[1], w_new + spare, v.shape[3])
        kb[:, :, :w_new] = k[idx]
        vb[:, :, :w_new] = v[idx]
        buffers.append((kb, vb))
        layers.append((kb[:, :, :w_new], vb[:, :, :w_new]))
    ar = torch.arange(w_new, device=dev)[None, :]
    return BatchKV(layers, ar >= (w_new - length)[:, None], length.clone(), buffers)


def select(kv: BatchKV, rows: torch.Tensor) -> BatchKV:
    rows = rows.to(kv.valid.device)
    return BatchKV([(k[rows], v[rows]) for k, v in kv.layers], kv.valid[rows], kv.length[rows])


def _left_pad(kv: BatchKV, width: int) -> BatchKV:
    extra = width - kv.width
    if extra == 0:
        return kv
    layers = []
    for k, v in kv.layers:
        pad = k.new_zeros(k.shape[0], k.shape[1], extra, k.shape[3])
        layers.append((torch.cat([pad, k], 2), torch.cat([pad, v], 2)))
    valid = torch.cat([kv.valid.new_zeros(kv.batch, extra), kv.valid], 1)
    return BatchKV(layers, valid, kv.length)


def concat(a: BatchKV, b: BatchKV) -> BatchKV:
    """Stack two batches (rows of `a` first), compacting both."""
    if a.batch == 0:
        return compact(b)
    if b.batch == 0:
        return compact(a)
    a, b = compact(a), compact(b)
    w = max(a.width, b.width)
    a, b = _left_pad(a, w), _left_pad(b, w)
    layers = [(torch.cat([ka, kb]), torch.cat([va, vb])) for (ka, va), (kb, vb) in zip(a.layers, b.layers)]
    return BatchKV(layers, torch.cat([a.valid, b.valid]), torch.cat([a.length, b.length]))


def row_state(kv: BatchKV, row: int) -> list:
    """The kept KV of one row: per layer (keys, values) [H, length, D] (for tests)."""
    m = kv.valid[row]
    return [(k[row][:, m], v[row][:, m]) for k, v in kv.layers]
