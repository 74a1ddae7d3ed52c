"""A static KV cache: preallocated slots, one per running request; rollback by length.

Per layer one key and one value buffer [S, H, C, D] (S slots, C positions per slot), allocated on the
first forward (from its key shapes) and never re-copied while requests come and go:
  - a request joins by writing its prefill into a free slot (the engine picks the lowest free index,
    so occupancy stays dense),
  - leaves by freeing the slot (its length goes to 0); the engine then moves the running request of
    the highest slot into the hole (SlotKV.move: that one request's kept KV is copied), so the running
    rows stay the dense span 0..n-1 and a decoding pass never carries empty rows (a span with holes
    computes every row of it: two requests in slots 1 and 6 cost a pass of six rows),
  - a forward writes row b's new tokens at positions length[b] .. length[b] + T - 1 of its slot and
    attends over the used width only (max length among the rows + T), masked per row to
    position <= length[b] + j (so rows of different lengths share one pass),
  - rejected drafts roll back by setting the slot's length: the slots past it are stale and are
    overwritten by the next forward (no holes, no compaction).
A buffer grows (one copy, doubling) only when a forward needs more slots or positions than it has;
the engine sizes it from the workload up front (Engine(slots=, capacity=)), so a run never grows.
"""
from __future__ import annotations

import torch


class SlotKV:
    def __init__(self, slots: int = 8, capacity: int = 256, device="cpu"):
        self.slots, self.capacity = max(1, int(slots)), max(1, int(capacity))
        self.layers: list[list[torch.Tensor]] = []  # per layer [keys, values] [S, H, C, D]; [] until the first forward
        self.length = torch.zeros(self.slots, dtype=torch.long, device=device)  # kept tokens per slot (next position id)
        self.grows = 0  # re-allocations so far (0 when sized up front)

    @property
    def device(self) -> torch.device:
        return self.length.device

    def ensure(self, slots: int, capacity: int) -> None:
        """Room for slot indices < slots and positions < capacity (grows by doubling: one copy)."""
        if slots <= self.slots and capacity <= self.capacity:
            return
        s_new = max(slots, self.slots if slots <= self.slots else 2 * self.slots)
        c_new = max(capacity, self.capacity if capacity <= self.capacity else 2 * self.capacity)
        for layer in self.layers:
            for i, buf in enumerate(layer):
                new = buf.new_zeros(s_new, buf.shape[1], c_new, buf.shape[3])
                new[: buf.shape[0], :, : buf.shape[2]] = buf
                layer[i] = new
        length = self.length.new_zeros(s_new)
        length[: self.slots] = self.length
        self.length, self.slots, self.capacity = length, s_new, c_new
        self.grows += 1

    def layer(self, i: int, like: torch.Tensor) -> list[torch.Tensor]:
        """Layer i's [keys, values] buffers, allocated on first use with like's heads/dim/dtype."""
        while len(self.layers) <= i:
            _, h, _, d = like.shape
            self.layers.append([like.new_zeros(self.slots, h, self.capacity, d) for _ in range(2)])
        return self.layers[i]

    def free(self, slot: int) -> None:
        """The slot's request left: its length goes to 0 (its buffers stay where they are)."""
        self.length[slot] = 0

    def move(self, src: int, dst: int) -> None:
        """Slot src's kept KV goes to the free slot dst (src is then free)."""
        n = int(self.length[src])
        for layer in self.layers:
            for buf in layer:
                buf[dst, :, :n] = buf[src, :, :n]
        self.length[dst] = n
        self.length[src] = 0

    def rollback(self, slots: torch.Tensor, length: torch.Tensor) -> None:
        """Rows `slots` keep their first `length` tokens (rejected drafts dropped)."""
        self.length[slots.to(self.device)] = length.to(self.device)

    def row_state(self, slot: int) -> list:
        """The kept KV of one slot: per layer (keys, values) [H, length, D] (for tests)."""
        n = int(self.length[slot])
        return [(k[slot, :, :n], v[slot, :, :n]) for k, v in self.layers]


def lowest_free(used: set[int], count: int) -> list[int]:
    """The `count` lowest slot indices not in `used` (so occupancy stays dense)."""
    out, i = [], 0
    while len(out) < count:
        if i not in used:
            out.append(i)
        i += 1
    return out


class Plan:
    """How one forward maps its rows onto slots.

    fresh (every row's slot is empty: a prefill): rows are the given slots in order; new keys are
    scattered into them and attention reads the new keys only (plain causal, no mask).
    span (a decoding step): rows are the contiguous slots lo..hi-1 (free slots inside the span ride
    along with no tokens), so the buffers are read as views [lo:hi, :, :width], never gathered.
    """

    def __init__(self, kv: SlotKV, slots: list[int], n: torch.Tensor, t: int):
        self.kv, self.t = kv, t
        dev = kv.device
        kv.ensure(max(slots) + 1 if len(slots) else 1, kv.capacity)
        given = torch.as_tensor(slots, dtype=torch.long, device=dev)
        self.fresh = bool((kv.length[given] == 0).all()) if len(slots) else True
        if self.fresh:
            self.lo, self.hi = 0, 0
            self.rows = given  # slot of each batch row
            self.select = None  # batch rows are the given rows
            self.past = torch.zeros(len(slots), dtype=torch.long, device=dev)
        else:
            self.lo, self.hi = min(slots), max(slots) + 1
            self.rows = torch.arange(self.lo, self.hi, device=dev)
            self.select = given - self.lo  # batch row of each given row (None: the span's rows, in order)
            if len(slots) == self.hi - self.lo and slots == list(range(self.lo, self.hi)):
                self.select = None
            self.past = kv.length[self.lo: self.hi].clone()
        self.width = int(self.past.max()) if len(self.past) else 0  # used width before the new tokens
        n_rows = torch.zeros(len(self.rows), dtype=torch.long, device=dev)
        n_rows[self.select if self.select is not None else slice(None)] = n.to(dev)
        self.n = n_rows  # real new tokens per batch row
        self.uniform = bool((self.past == self.width).all()) and bool((self.n == t).all())
        kv.ensure(kv.slots, self.width + t)
        self.pos = self.past[:, None] + torch.arange(t, device=dev)[None, :]  # [B, T] position of each new token
        self.row_index = torch.arange(len(self.rows), device=dev)[:, None]  # [B, 1] (scatter index)

    def spread(self, items: list, fill) -> list:
        """Per-given-row items laid out per batch row (fill for the free slots of a span)."""
        if self.select is None:
            return list(items)
        out = [fill] * len(self.rows)
        for i, b in enumerate(self.select.tolist()):
            out[b] = items[i]
        return out

    def positions(self) -> torch.Tensor:
        """Position ids [B, T]: each row continues from its kept length."""
        return self.pos

    def mask(self, dtype) -> torch.Tensor | None:
        """Additive [B, 1, T, width + T]: query j of row b sees positions <= past[b] + j. None for a prefill
        and for one token per row of equal rows: the model's own causal mask is the same there, and
        sdpa's mask-free kernels are the fastest (for T > 1 after a past, transformers would build the
        mask itself and repeat the KV heads for sdpa, so the pass's own mask and engine/attention win)."""
        return None if self.fresh or (self.uniform and self.t == 1) else self.full_mask(dtype)

    def full_mask(self, dtype) -> torch.Tensor:
        """Additive [B, 1, T, width + T] in every case (fresh: causal over the new tokens)."""
        dev = self.past.device
        w = self.width + self.t
        allowed = torch.arange(w, device=dev)[None, None, :] <= self.positions()[:, :, None]  # [B, T, W]
        m = torch.zeros(allowed.shape, dtype=dtype, device=dev)
        m.masked_fill_(~allowed, torch.finfo(dtype).min)
        return m[:, None]

    def write(self, i: int, key_states: torch.Tensor, value_states: torch.Tensor):
        """Layer i: store the new keys/values [B, H, T, D] in the slots; return what attention reads."""
        bufs = self.kv.layer(i, key_states)
        t = key_states.shape[2]
        if self.fresh:
            for buf, new in zip(bufs, (key_states, value_states)):
                buf[self.rows[:, None], :, self.pos] = new.transpose(1, 2)
            return key_states, value_states
        lo, hi, w = self.lo, self.hi, self.width
        out = []
        for buf, new in zip(bufs, (key_states, value_states)):
            view = buf[lo:hi]
            if self.uniform:
                view[:, :, w: w + t] = new
            else:
                view[self.row_index, :, self.pos] = new.transpose(1, 2)
            out.append(view[:, :, : w + t])
        return out[0], out[1]

    def commit(self) -> None:
        """The forward's real tokens are kept: lengths grow by n."""
        self.kv.length[self.rows] = self.past + self.n


def cache_for(plan: Plan):
    """An HF cache object whose layers write through the plan (no copy of the slots' contents)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        def __init__(self, index: int):
            super().__init__()
            self.index, self.is_initialized = index, True

        def update(self, key_states, value_states, *args, **kwargs):
            self.keys, self.values = plan.write(self.index, key_states, value_states)
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return plan.width

    cache = DynamicCache()
    cache.layers = [SlotLayer(i) for i in range(len(plan.kv.layers))]
    cache.layer_class_to_replicate = lambda: SlotLayer(len(cache.layers))
    return cache
