"""Acceptance trace: the record format the engine writes and the simulator replays.

JSONL, one record per step per request:
  {"request": int, "step": int, "position": int (tokens emitted before this step),
   "estimates": [K] float,          # the a_ij the allocation ranked by
   "accept_probs": [K] float|null,  # true conditional acceptance min(1, p/q) (T>0), or
   "matches": [K] bool|null,        # greedy: draft == target argmax (one of the two is set)
   "selected": int, "accepted": int, "emitted": int}
A first line {"header": {...}} may carry metadata (pair, temperature, K, estimator).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class TraceRecord:
    request: int
    step: int
    position: int  # tokens already emitted by this request before the step
    estimates: list[float]  # [K] estimated conditional acceptance
    accept_probs: list[float] | None = None  # [K] true conditional acceptance (sampling)
    matches: list[bool] | None = None  # [K] greedy match of draft vs target argmax
    selected: int = 0  # window verified by the policy (tokens)
    accepted: int = 0  # accepted drafts
    emitted: int = 1  # accepted + 1 (or fewer at the request's end)

    def truth(self) -> list[float]:
        """True conditional acceptance per position (1.0/0.0 for greedy matches)."""
        if self.accept_probs is not None:
            return list(self.accept_probs)
        if self.matches is not None:
            return [1.0 if m else 0.0 for m in self.matches]
        raise ValueError(f"trace record (request {self.request}, step {self.step}) has no ground truth")


def write_trace(path: str | Path, records, header: dict | None = None) -> None:
    with open(path, "w") as fh:
        if header is not None:
            fh.write(json.dumps({"header": header}) + "\n")
        for rec in records:
            fh.write(json.dumps(asdict(rec) if isinstance(rec, TraceRecord) else rec) + "\n")


def read_trace(path: str | Path) -> tuple[dict, list[TraceRecord]]:
    """Returns (header, records). Raises ValueError naming the line on bad input."""
    header: dict = {}
    records: list[TraceRecord] = []
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"trace file {str(p)!r} not found")
    with open(p) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if "header" in obj:
                    header = obj["header"]
                    continue
                records.append(TraceRecord(**obj))
            except (json.JSONDecodeError, TypeError) as err:
                raise ValueError(f"{p}:{lineno}: bad trace record: {err}") from None
    return header, records


def by_request(records) -> dict[int, list[TraceRecord]]:
    out: dict[int, list[TraceRecord]] = {}
    for rec in records:
        out.setdefault(rec.request, []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: r.step)
    return out
