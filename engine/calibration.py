"""Calibration of the acceptance estimators: ECE and reliability plots.

Input: per step, each estimator's a_ij [N, K] and the truth [N, K] (greedy match 0/1, or
min(1, p/q) when sampling), with every drafted position verified (calibration mode).
ECE = sum over 10 equal-width estimate bins of (bin share) * |mean estimate - mean truth|.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from engine.estimators import NAMES


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC of score as a predictor of a 0/1 label (Mann-Whitney, average ranks for ties);
    NaN when one class is empty."""
    from scipy.stats import rankdata
    pos = np.asarray(label).astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def flatten(calib: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for name in (*NAMES, "truth"):
        parts = [np.asarray(c[name], dtype=np.float64).ravel() for c in calib]
        out[name] = np.concatenate(parts) if parts else np.zeros(0)
    return out


def reliability(est: np.ndarray, truth: np.ndarray, bins: int = 10) -> dict:
    ok = np.isfinite(est) & np.isfinite(truth)
    est, truth = est[ok], truth[ok]
    idx = np.clip((est * bins).astype(int), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        e, t = float(est[m].mean()), float(truth[m].mean())
        ece += m.sum() / max(est.size, 1) * abs(e - t)
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(m.sum()), "mean_estimate": e, "mean_truth": t})
    return {"ece": float(ece), "count": int(est.size), "mean_estimate": float(est.mean()) if est.size else None,
            "mean_truth": float(truth.mean()) if truth.size else None, "bins": rows}


def report(calib: list[dict]) -> dict:
    flat = flatten(calib)
    return {name: reliability(flat[name], flat["truth"]) for name in NAMES}


def plot(rep: dict, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for name, r in rep.items():
        xs = [b["mean_estimate"] for b in r["bins"]]
        ys = [b["mean_truth"] for b in r["bins"]]
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {r['ece']:.3f})")
    ax.set_xlabel("estimated acceptance a_ij")
    ax.set_ylabel("observed acceptance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder, results: dict) -> Path:
    """calibration.json {label: {estimator: {...}}} and reliability-<label>.png per policy with drafts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for label, r in results.items():
        if not r.calibration:
            continue
        rep = report(r.calibration)
        out[label] = rep
        plot(rep, folder / f"reliability-{label}.png", f"{label}, T={r.summary.get('temperature', 0)}")
    tmp = folder / f".calibration.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(folder / "calibration.json")
    return folder
