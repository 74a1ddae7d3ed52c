"""Reading the per-step log (engine/vllm/steplog.py's format) without vLLM: StepStats and times.

    steps = read_steps(path)                # [dict] in step order
    stats = steps_to_stats(steps, drafts)   # contract.metrics.StepStats over the decode rows
"""
from __future__ import annotations

import json
import sys
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


FEATURES = ("1", "batch", "tokens", "batch_x_k", "context_tokens")  # the step-time fit's columns


def fit_step_time(steps: list[dict], clock: str = "wall") -> dict:
    """Least squares over decode-only steps (no request in prefill):
        step_s = c0 + c1 * batch + c2 * tokens scheduled + c3 * batch * K + c4 * sum of contexts
    (K: drafts proposed per request this step: vLLM drafts for the next step inside this one).
    clock: "wall" (end_s - start_s) or "cpu" (cpu_end_s - cpu_start_s: vLLM's processes' CPU seconds).
    Returns {"coef": {feature: seconds}, "steps": n, "rel_rmse": ...}."""
    import numpy as np

    rows, y = [], []
    for s in steps:
        if not s["decode"] or not all(s["decode"]) or "context" not in s:
            continue
        n = len(s["requests"])
        rows.append([1.0, n, sum(s["tokens"]), n * s.get("k", 0), sum(max(c, 0) for c in s["context"])])
        y.append(s["cpu_end_s"] - s["cpu_start_s"] if clock == "cpu" else s["end_s"] - s["start_s"])
    if len(rows) < len(FEATURES):
        raise ValueError(f"step log: {len(rows)} decode-only steps; need at least {len(FEATURES)} to fit")
    a, b = np.array(rows), np.array(y)
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    coef = np.maximum(coef, 0.0)  # a negative seconds-per-unit is noise: clip
    pred = a @ coef
    return {"coef": dict(zip(FEATURES, map(float, coef))), "steps": len(rows),
            "rel_rmse": float(np.sqrt(np.mean((pred - b) ** 2)) / np.mean(b))}


def profile_rows(fit: dict, batches, tokens, contexts) -> list[dict]:
    """The fitted step time as the simulator's profile table (contract/profile_table.py): target_s =
    c0 + c1 n + c2 n t + c4 n ctx (one pass over n requests x t tokens at context ctx), draft_s =
    c3 n (one draft forward per drafted token). Grid: the full batches x tokens x contexts."""
    c = fit["coef"]
    return [{"batch": n, "tokens_per_request": t, "context": x,
             "target_s": c["1"] + c["batch"] * n + c["tokens"] * n * t + c["context_tokens"] * n * x,
             "draft_s": c["batch_x_k"] * n}
            for n in batches for t in tokens for x in contexts]


def main(argv=None) -> int:
    """python -m engine.vllm.steps STEPS.jsonl... --profile OUT.csv: fit and write the table."""
    import argparse

    from contract import profile_table

    ap = argparse.ArgumentParser(prog="python -m engine.vllm.steps", description=main.__doc__)
    ap.add_argument("steps", nargs="+", help="steps-<label>.jsonl files of vLLM run folders")
    ap.add_argument("--profile", required=True, metavar="OUT.csv")
    ap.add_argument("--batch", default="1,2,4,8,16")
    ap.add_argument("--tokens", default="1,2,3,4,5,6")
    ap.add_argument("--context", default="64,256,512")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="step seconds: wall or CPU (cpu_*_s)")
    a = ap.parse_args(argv)
    steps = [s for p in a.steps for s in read_steps(p)]
    try:
        fit = fit_step_time(steps, a.clock)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ints = lambda t: [int(x) for x in t.split(",")]  # noqa: E731
    profile_table.write(profile_rows(fit, ints(a.batch), ints(a.tokens), ints(a.context)), a.profile)
    print(json.dumps(fit))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
