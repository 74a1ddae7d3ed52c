"""The validation error table: measured vs simulated, one relative error per policy and metric.

    table = error_table({"policies": {name: {"measured": {...}, "simulated": {...}}}})
    table[name][metric] == (measured, simulated, (simulated - measured) / measured)

Errors are never merged across metrics or policies. A metric missing on either
side, or measured as 0, has error None.
"""
from __future__ import annotations

import math

METRICS = ("output_throughput", "mean_tpot_s", "p99_tpot_s", "mean_ttft_s", "p99_ttft_s", "mean_e2e_s",
           "p99_e2e_s", "acceptance_length", "draft_acceptance_rate")

# the accuracy goals of `tetris validate` (docs/validation.md): |error| within these, per policy and load
GOALS = {"output_throughput": 0.05, "mean_tpot_s": 0.10}


def rel_error(measured, simulated) -> float | None:
    if measured is None or simulated is None:
        return None
    m, s = float(measured), float(simulated)
    if not (math.isfinite(m) and math.isfinite(s)) or m == 0:
        return None
    return (s - m) / abs(m)


def error_table(validate: dict, metrics=METRICS) -> dict[str, dict[str, tuple]]:
    out = {}
    for name, mv in validate.get("policies", {}).items():
        meas, sim = mv.get("measured", {}), mv.get("simulated", {})
        out[name] = {m: (meas.get(m), sim.get(m), rel_error(meas.get(m), sim.get(m))) for m in metrics}
    return out


def goal_check(table: dict) -> dict[str, dict[str, bool | None]]:
    """Per policy: does each goal metric meet its tolerance (None: not measurable)."""
    return {name: {m: (None if t[m][2] is None else abs(t[m][2]) <= tol) for m, tol in GOALS.items()}
            for name, t in table.items()}


def format_table(table: dict) -> str:
    lines = [f"{'policy':<22} {'metric':<22} {'measured':>11} {'simulated':>11} {'rel.err':>8}"]
    for name, t in table.items():
        for metric, (m, s, e) in t.items():
            fm = "-" if m is None else f"{m:.4g}"
            fs = "-" if s is None else f"{s:.4g}"
            fe = "-" if e is None else f"{100 * e:+.1f}%"
            lines.append(f"{name:<22} {metric:<22} {fm:>11} {fs:>11} {fe:>8}")
    return "\n".join(lines)
