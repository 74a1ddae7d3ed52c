"""Measured step times: draft and target forward seconds over a (batch, tokens, context) grid.

`tetris profile` writes the CSV the simulator's "table" cost model reads:
    batch,tokens_per_request,context,target_s,draft_s
tokens_per_request = tokens the target scores per request in one pass (window + 1);
draft_s = one draft forward of one token per request at that (batch, context).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from contract.profile_table import axis_weights, blend, write
from engine import kv as kvm
from engine import slots as slm
from engine.forward import forward, model_device

SPARE = 64  # positions past the context in a profiled slot cache (the largest pass profiled)


def ragged_lengths(batch: int, context: int) -> list[int]:
    """Row lengths of a profiled batch: spread evenly over context +- a quarter of it, mean `context` (a
    decoding batch's rows are of different lengths, so its passes take the masked attention path; rows of
    one length would take the cheaper mask-free one: tetris validate's fitted target_scale on the tiny
    pair was 1.28-1.32 with them, 1.00-1.03 with these, 2026-12-07)."""
    half = context // 4 if batch > 1 else 0
    lengths = np.rint(np.linspace(context - half, context + half, batch)).astype(int)
    return np.maximum(lengths, 1).tolist()


def _state(model, batch: int, context: int, seed: int = 0) -> slm.SlotKV:
    """A static slot cache (the engine's, engine/slots.py) holding `batch` rows of mean length `context`
    (ragged_lengths)."""
    g = np.random.default_rng(seed)
    vocab = model.get_output_embeddings().weight.shape[0] if hasattr(model, "get_output_embeddings") else 8
    toks = [g.integers(0, vocab, size=n).tolist() for n in ragged_lengths(batch, context)]
    st = slm.SlotKV(batch, context + context // 4 + SPARE, model_device(model))
    forward(model, st, toks, slots=list(range(batch)))
    return st


def _sync(model):
    if model_device(model).type == "cuda":
        torch.cuda.synchronize()


def time_forward(model, state, tokens: int, repeats: int = 3, clock=time.perf_counter,
                 feed: list | None = None) -> float:
    """Seconds of one forward of `tokens` new tokens per row after `state` (a slots.SlotKV: rolled back
    after each pass, so unchanged; or a kv.BatchKV).

    The timing rule of every profile and probe (here and analysis/engine_io.py): one warm-up
    forward, then the MINIMUM of `repeats` timed ones. Other load on a shared machine (or a
    GPU's clock ramp) only ever adds time, so the fastest repeat is the most repeatable
    estimate of the pass's own cost (timeit's rule); measured runs keep their fastest repeat
    for the same reason (engine_io.measure_best).
    """
    slotted = isinstance(state, slm.SlotKV)
    rows = int((state.length > 0).sum()) if slotted else state.batch
    feed = feed if feed is not None else [[1] * tokens for _ in range(rows)]
    kw = dict(slots=list(range(len(feed)))) if slotted else {}
    saved = state.length.clone() if slotted else None
    times = []
    for _ in range(repeats + 1):  # first run warms up
        _sync(model)
        t0 = clock()
        forward(model, state, feed, **kw)
        _sync(model)
        times.append(clock() - t0)
        if slotted:
            state.length.copy_(saved)
    return float(np.min(times[1:]))


def profile(target, draft, batches, tokens, contexts, repeats: int = 3, progress=None,
            clock=time.perf_counter) -> list[dict]:
    """Rows of the cost table; clock: seconds callable (wall clock by default)."""
    rows = []
    for b in batches:
        for c in contexts:
            ts = _state(target, b, c)
            ds = _state(draft, b, c) if draft is not None else None
            d_s = time_forward(draft, ds, 1, repeats, clock) if ds is not None else float("nan")
            for t in tokens:
                rows.append({"batch": b, "tokens_per_request": t, "context": c,
                             "target_s": time_forward(target, ts, t, repeats, clock), "draft_s": d_s})
                if progress is not None:
                    progress.update(1)
    return rows


def write_csv(rows: list[dict], path) -> None:
    """The rows as the profile CSV (contract.profile_table.write: atomic)."""
    write(rows, path)


def _mean_grid(rows: list[dict]):
    """Axes and means of step_time_from_rows: target_s [batch, tokens_per_request] averaged over
    context, draft_s [batch] averaged over every finite row of that batch."""
    b_axis = np.array(sorted({r["batch"] for r in rows}), dtype=float)
    t_axis = np.array(sorted({r["tokens_per_request"] for r in rows}), dtype=float)
    grid = np.zeros((b_axis.size, t_axis.size))
    cnt = np.zeros_like(grid)
    dr = np.zeros(b_axis.size)
    dcnt = np.zeros(b_axis.size)
    for r in rows:
        i, j = np.searchsorted(b_axis, r["batch"]), np.searchsorted(t_axis, r["tokens_per_request"])
        grid[i, j] += r["target_s"]
        cnt[i, j] += 1
        if np.isfinite(r["draft_s"]):
            dr[i] += r["draft_s"]
            dcnt[i] += 1
    return b_axis, t_axis, grid / np.maximum(cnt, 1), dr / np.maximum(dcnt, 1)


def _memo_key(batch, drafts, v: np.ndarray) -> tuple:
    """What a step_time_from_rows answer depends on: the batch, K and every verified count."""
    return batch, drafts, v.dtype.str, v.shape, v.tobytes()


def step_time_from_rows(rows: list[dict]):
    """A theory.budget StepTime (batch, drafts, verified) -> s, interpolated from profile rows.

    step = drafts * draft_s(batch) + target_s(batch, 1 + verified / batch); linear in tokens per
    request and in batch (nearest context: the mean of what was measured). Interpolation:
    contract.profile_table (blend along tokens per request at the two batch rows, then along batch).
    The table is fixed, so answers are memoised per (batch, drafts, verified): a goodput budget asks
    the same few questions every step (its step-time array for this batch and K), and a dozen small
    numpy calls after a forward are slow (issue 13, tiny pair: a goodput allocate 112 -> 56 us
    isolated, 420-540 -> 330-440 us per engine step).
    An array answer is read-only.
    """
    b_axis, t_axis, grid, dr = _mean_grid(rows)
    nb = min(1, b_axis.size - 1)
    memo: dict = {}

    def step_time(batch, drafts, verified):
        v = np.asarray(verified)
        key = _memo_key(batch, drafts, v)
        out = memo.get(key)
        if out is None:
            if len(memo) >= 4096:  # bounded: a caller sweeping many shapes does not grow it without end
                memo.clear()
            out = memo[key] = _interpolate(batch, drafts, v)
        return out

    def _interpolate(batch, drafts, verified):
        v = np.asarray(verified, dtype=float)
        ib_wb = axis_weights(b_axis, np.float64(batch))
        it_wt = axis_weights(t_axis, 1.0 + v / max(batch, 1))
        ib = ib_wb[0]
        lo, hi = blend(grid[ib], it_wt), blend(grid[ib + nb], it_wt)
        tgt = blend(np.stack([lo, hi]), (0, ib_wb[1]))
        out = np.maximum(tgt + drafts * blend(dr, ib_wb), 1e-6)
        if not out.ndim:
            return float(out)
        out.setflags(write=False)
        return out

    return step_time
