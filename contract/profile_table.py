"""The profile table: the CSV `tetris profile` writes and the simulator's "table" cost model reads.

    rows = read_rows(path, "cost.table")    # [{column: float}], validated (ConfigError names the key)
    table = ProfileTable(rows, path, key)   # full (batch, tokens_per_request, context) grid
    table.target(batch, tokens_per_request, context); table.draft_s(batch, context)
    write(rows, path)                       # atomic: a temporary file renamed into place
    i, w = axis_weights(axis, x); blend(grid, (i0, w0), (i1, w1), ...)   # the interpolation

FORMAT, CSV with a header row:
    batch,tokens_per_request,context,target_s,draft_s
    1,1,128,0.0121,0.0009
    ...
batch: running requests; tokens_per_request: tokens the target scores per
request (window + 1, so 1 = plain decoding); context: mean context length
(tokens); target_s: seconds of one target pass at that point; draft_s: seconds
of one draft forward (one token per request) at that (batch, context), repeated
on every row of that pair (rows may leave it empty or nan; the mean of the given
values is used). ProfileTable needs the rows to cover the full grid of the
distinct batch x tokens_per_request x context values. Lookups interpolate
multilinearly and extrapolate linearly past the edges.
"""
from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path

import numpy as np

from contract.errors import ConfigError

COLUMNS = ("batch", "tokens_per_request", "context", "target_s", "draft_s")
HEADER = ",".join(COLUMNS) + "\n"


# ---------------------------------------------------------------- interpolation (the one copy)

def axis_weights(axis: np.ndarray, x):
    """Index of the left grid point and the (unclipped: extrapolating) weight of the right one."""
    if axis.size == 1:
        return np.zeros_like(np.asarray(x, dtype=np.int64)), np.zeros_like(np.asarray(x, dtype=np.float64))
    i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, axis.size - 2)
    w = (np.asarray(x, dtype=np.float64) - axis[i]) / (axis[i + 1] - axis[i])
    return i, w


def blend(grid: np.ndarray, *iw):
    """Multilinear blend of `grid` at points given per axis by (left index, right weight) from
    axis_weights: the sum over the 2^d corners (last axis varying fastest) of the product of the
    corner's weights times its grid value. An axis of size 1 uses its only point."""
    steps = [min(1, s - 1) for s in grid.shape[: len(iw)]]
    out = 0.0
    for corner in itertools.product((0, 1), repeat=len(iw)):
        weight, index = None, []
        for (i, w), step, right in zip(iw, steps, corner):
            f = w if right else 1 - w
            weight = f if weight is None else weight * f
            index.append(i + step if right else i)
        out = out + weight * grid[tuple(index)]
    return out


# ---------------------------------------------------------------- reading and writing

def read_rows(path: str, key: str = "cost.table") -> list[dict]:
    """The table's rows as {column: float} (draft_s NaN where empty); ConfigError names `key`."""
    from contract.outpaths import check_in_file

    if not path:
        raise ConfigError(f"{key}: profile table {path!r} not found")
    check_in_file(Path(path), f"{key}: profile table")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS[:4] if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(f"{key}: {path!r} lacks column(s) {', '.join(missing)}")
        raw = list(reader)
    if not raw:
        raise ConfigError(f"{key}: {path!r} has no rows")
    try:
        rows = [{c: float(r[c]) for c in COLUMNS[:4]} | {"draft_s": _float_or_nan(r.get("draft_s"))} for r in raw]
    except ValueError as err:
        raise ConfigError(f"{key}: {path!r} has a non-numeric value ({err})") from None
    y = np.array([r["target_s"] for r in rows])
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ConfigError(f"{key}: {path!r} target_s must be positive numbers")
    return rows


def _float_or_nan(v) -> float:
    return float(v) if v not in (None, "") else float("nan")


def write(rows, path, fmt: str = ".6g") -> Path:
    """Write rows (dicts with COLUMNS) atomically; target_s / draft_s with `fmt` ("" stays empty),
    the grid columns as given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def num(v):
        return "" if v in (None, "") else format(float(v), fmt)

    try:
        with open(tmp, "w") as fh:
            fh.write(HEADER)
            fh.writelines(f"{r['batch']},{r['tokens_per_request']},{r['context']},{num(r['target_s'])},{num(r['draft_s'])}\n"
                          for r in rows)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- the full-grid table

class ProfileTable:
    """Multilinear interpolation over a full (batch, tokens_per_request, context) grid."""

    def __init__(self, rows: list[dict], path: str = "", key: str = "cost.table"):
        b, t, c = (np.array([r[k] for r in rows], dtype=np.float64) for k in COLUMNS[:3])
        y = np.array([r["target_s"] for r in rows], dtype=np.float64)
        d = np.array([r["draft_s"] for r in rows], dtype=np.float64)
        self.b, self.t, self.c = np.unique(b), np.unique(t), np.unique(c)  # grid axes
        grid = np.full((self.b.size, self.t.size, self.c.size), np.nan)  # [nb, nt, nc] target seconds
        ib, it, ic = np.searchsorted(self.b, b), np.searchsorted(self.t, t), np.searchsorted(self.c, c)
        grid[ib, it, ic] = y
        if np.isnan(grid).any():
            raise ConfigError(f"{key}: {path!r} does not cover the full batch x tokens_per_request x context grid")
        ok = np.isfinite(d)
        dsum, dcount = np.zeros((self.b.size, self.c.size)), np.zeros((self.b.size, self.c.size))
        np.add.at(dsum, (ib[ok], ic[ok]), d[ok])
        np.add.at(dcount, (ib[ok], ic[ok]), 1)
        self.has_draft = bool(ok.any())
        fill = float(np.nanmean(d)) if self.has_draft else 0.0
        self.draft = np.where(dcount > 0, dsum / np.maximum(dcount, 1), fill)  # [nb, nc] draft seconds
        self.grid = grid

    @classmethod
    def read(cls, path: str, key: str = "cost.table") -> "ProfileTable":
        return cls(read_rows(path, key), path, key)

    def target(self, batch, tokens_per_request, context):
        """Seconds of one target pass (floored at 1 microsecond)."""
        out = blend(self.grid, axis_weights(self.b, batch), axis_weights(self.t, tokens_per_request),
                    axis_weights(self.c, context))
        return np.maximum(out, 1e-6)

    def draft_s(self, batch, context) -> float:
        """Seconds of one draft forward (one token per request), floored at 0."""
        out = blend(self.draft.T, axis_weights(self.c, context), axis_weights(self.b, batch))
        return float(max(out, 0.0))
