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

from engine import kv as kvm
from engine.forward import forward, model_device

COLUMNS = ("batch", "tokens_per_request", "context", "target_s", "draft_s")


def _state(model, batch: int, context: int, seed: int = 0) -> kvm.BatchKV:
    g = np.random.default_rng(seed)
    vocab = model.get_output_embeddings().weight.shape[0] if hasattr(model, "get_output_embeddings") else 8
    toks = g.integers(0, vocab, size=(batch, context)).tolist()
    _, st = forward(model, kvm.empty(batch, model_device(model)), toks)
    return st


def _sync(model):
    if model_device(model).type == "cuda":
        torch.cuda.synchronize()


def time_forward(model, state: kvm.BatchKV, tokens: int, repeats: int = 3, clock=time.perf_counter) -> float:
    """Median seconds of one forward of `tokens` new tokens per row after `state` (state unchanged)."""
    feed = [[1] * tokens for _ in range(state.batch)]
    times = []
    for _ in range(repeats + 1):  # first run warms up
        _sync(model)
        t0 = clock()
        forward(model, state, feed)
        _sync(model)
        times.append(clock() - t0)
    return float(np.median(times[1:]))


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
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(",".join(COLUMNS) + "\n")
            for r in rows:
                fh.write(f"{r['batch']},{r['tokens_per_request']},{r['context']},{r['target_s']:.6g},{r['draft_s']:.6g}\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def step_time_from_rows(rows: list[dict]):
    """A theory.budget StepTime (batch, drafts, verified) -> s, interpolated from profile rows.

    step = drafts * draft_s(batch) + target_s(batch, 1 + verified / batch); linear in tokens per
    request and in batch (nearest context: the mean of what was measured).
    """
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
    grid /= np.maximum(cnt, 1)
    dr = dr / np.maximum(dcnt, 1)

    def interp(axis, x):
        if axis.size == 1:
            return np.zeros_like(x, dtype=int), np.zeros_like(x, dtype=float)
        i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, axis.size - 2)
        return i, (x - axis[i]) / (axis[i + 1] - axis[i])

    def step_time(batch, drafts, verified):
        v = np.asarray(verified, dtype=float)
        tpr = 1.0 + v / max(batch, 1)
        ib, wb = interp(b_axis, np.float64(batch))
        it, wt = interp(t_axis, tpr)
        nb, nt = min(1, b_axis.size - 1), min(1, t_axis.size - 1)
        tgt = ((1 - wb) * ((1 - wt) * grid[ib, it] + wt * grid[ib, it + nt])
               + wb * ((1 - wt) * grid[ib + nb, it] + wt * grid[ib + nb, it + nt]))
        d = (1 - wb) * dr[ib] + wb * dr[ib + nb]
        out = np.maximum(tgt + drafts * d, 1e-6)
        return out if out.ndim else float(out)

    return step_time
