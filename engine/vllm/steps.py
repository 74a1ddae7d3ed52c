"""Reading the per-step log (engine/vllm/steplog.py's format) without vLLM: StepStats and times.

    steps = read_steps(path)                # [dict] in step order
    stats = steps_to_stats(steps, drafts)   # contract.metrics.StepStats over the decode rows
"""
from __future__ import annotations

import json
from pathlib import Path

from contract.metrics import StepStats


def read_steps(path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def steps_to_stats(steps: list[dict], drafts: int) -> StepStats:
    """Decode rows of each step as one native step: batch = decode rows, K = `drafts` (the
    policy's drafted tokens per request), windows = drafts verified, accepted, emitted."""
    st = StepStats()
    for s in steps:
        rows = [i for i, d in enumerate(s["decode"]) if d]
        if not rows:
            continue
        st.add_step(len(rows), drafts, [s["drafts"][i] for i in rows], [s["accepted"][i] for i in rows],
                    [s["emitted"][i] for i in rows])
        st.target_s += s["end_s"] - s["start_s"]
    return st
