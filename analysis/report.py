"""`tetris report RUN_DIR...`: a Markdown report with PNG plots from run folders.

A run folder (from `tetris simulate`, `tetris engine` or `tetris validate`) holds
summary.json {"policies": {name: {metric: value}}}, config.toml, requests.csv,
and optionally steps.csv; a validate folder also holds validate.json
{"policies": {name: {"measured": {...}, "simulated": {...}}}}. Plots:
  throughput.png   output throughput vs k, one line per policy family and e
  acceptance.png   acceptance length and draft acceptance rate (VSR) vs e
  board.png        per-step windows (requests x steps) for fixed k vs TETRIS
  pair.png         acceptance distribution of the pair (engine trace, --trace)
  scatter.png      simulated vs measured, per metric (validate folders)
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np

from contract.config import ConfigError
from contract.runs import atomic_folder

TABLE_METRICS = ("output_throughput", "mean_tpot_s", "p99_tpot_s", "mean_ttft_s", "mean_e2e_s",
                 "acceptance_length", "draft_acceptance_rate")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_run(path: str | Path) -> dict:
    """{'path', 'summary': {name: metrics}, 'config': dict, 'validate': dict|None, 'steps': Path|None}."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"run folder {str(p)!r}: is a file, not a folder")
    if not p.is_dir():
        raise ConfigError(f"run folder {str(p)!r} not found")
    run = {"path": p, "summary": {}, "config": {}, "validate": None, "steps": None, "requests": None}
    if (p / "summary.json").is_file():
        try:
            data = json.loads((p / "summary.json").read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}/summary.json: invalid JSON ({err})") from None
        pols = data.get("policies") if isinstance(data, dict) else None
        if not isinstance(pols, dict):
            raise ConfigError(f"{p}/summary.json: expected {{\"policies\": {{name: {{metric: value}}}}}}")
        run["summary"] = pols
    if (p / "validate.json").is_file():
        run["validate"] = json.loads((p / "validate.json").read_text())
    if (p / "config.toml").is_file():
        try:
            run["config"] = tomllib.loads((p / "config.toml").read_text())
        except tomllib.TOMLDecodeError:
            run["config"] = {}
    for name in ("steps", "requests"):
        if (p / f"{name}.csv").is_file():
            run[name] = p / f"{name}.csv"
    if not run["summary"] and run["validate"] is None:
        raise ConfigError(f"run folder {str(p)!r}: no summary.json or validate.json")
    return run


def policy_params(name: str, metrics: dict) -> tuple[str, int | None, int | None]:
    """(family, k, e) from the metrics (policy/k/extra keys) or the name ('tetris k=3 e=2')."""
    pol = metrics.get("policy")
    family = pol.get("name") if isinstance(pol, dict) else (pol if isinstance(pol, str) else None)
    if family is None:
        family = re.split(r"[\s_(:/-]", name.strip(), maxsplit=1)[0].lower()
    def grab(keys, pats):
        for k in keys:
            src = pol if isinstance(pol, dict) else metrics
            if isinstance(src, dict) and isinstance(src.get(k), (int, float)) and not isinstance(src.get(k), bool):
                return int(src[k])
        for pat in pats:
            m = re.search(pat, name)
            if m:
                return int(m.group(1))
        return None
    k = grab(("k",), (r"\bk\s*=\s*(\d+)", r"\bk(\d+)\b"))
    e = grab(("extra", "e"), (r"\be\s*=\s*(\d+)", r"\bextra\s*=\s*(\d+)", r"\be(\d+)\b"))
    if family == "fixed" and e is None:
        e = 0
    return family, k, e


def best_fixed_k(summary: dict) -> int | None:
    fixed = [(m.get("output_throughput") or 0.0, policy_params(n, m)[1]) for n, m in summary.items()
             if isinstance(m, dict) and policy_params(n, m)[0] == "fixed" and policy_params(n, m)[1] is not None]
    return max(fixed)[1] if fixed else None


def _rows(runs) -> list[dict]:
    rows = []
    for run in runs:
        kbest = best_fixed_k(run["summary"])
        for name, m in run["summary"].items():
            if not isinstance(m, dict):
                continue
            fam, k, e = policy_params(name, m)
            if k is None and "kbest" in name:  # the simulator's k = "best_fixed" label
                k = kbest
            rows.append({"run": run["path"].name, "name": name, "family": fam, "k": k, "e": e,
                         "source": run_source(m), **m})
    return rows


def run_source(metrics: dict) -> str:
    """'engine' for a measured run (its summary names the estimator), else 'simulator'."""
    return "engine" if "estimator" in metrics else "simulator"


def plot_throughput(rows, path) -> bool:
    """Throughput vs k, one panel per source (simulated and measured runs never share an axis)."""
    sources = [src for src in ("simulator", "engine") if any(r.get("source") == src for r in rows)]
    panels = []
    for src in sources:
        series: dict[str, list] = {}
        flat: dict[str, float] = {}
        for r in rows:
            if r.get("output_throughput") is None or r.get("source") != src:
                continue
            if r["family"] in ("fixed", "tetris", "threshold", "oracle") and r["k"] is not None:
                label = f"{r['run']}: {r['family']}" + (f" e={r['e']}" if r["family"] != "fixed" and r["e"] is not None else "")
                series.setdefault(label, []).append((r["k"], r["output_throughput"]))
            else:
                flat[f"{r['run']}: {r['name']}"] = r["output_throughput"]
        if series:
            panels.append((src, series, flat))
    if not panels:
        return False
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 4.2 * len(panels)), squeeze=False)
    for ax, (src, series, flat) in zip(axes[:, 0], panels):
        for label, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label,
                    linestyle="--" if ": fixed" in label else "-")
        for i, (label, y) in enumerate(sorted(flat.items())):
            ax.axhline(y, color=f"C{(i + len(series)) % 10}", linestyle=":", label=label)
        ax.set_xlabel("k (window; TETRIS capacity k*N)")
        ax.set_ylabel("output throughput (tokens/s)")
        ax.set_title(f"Throughput vs k per policy and e: {'measured (engine)' if src == 'engine' else 'simulated'} runs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    _save(fig, path)
    return True


def plot_acceptance(rows, path) -> bool:
    pts = [r for r in rows if r["family"] in ("fixed", "tetris") and r["e"] is not None
           and r.get("acceptance_length") is not None]
    if not pts:
        return False
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    groups: dict[tuple, list] = {}
    for r in pts:
        groups.setdefault((r["run"], r["k"]), []).append(r)
    for (run, k), rs in sorted(groups.items(), key=lambda t: (t[0][0], t[0][1] or 0)):
        rs.sort(key=lambda r: r["e"])
        es = [r["e"] for r in rs]
        a1.plot(es, [r["acceptance_length"] for r in rs], marker="o", label=f"{run}: k={k}")
        a2.plot(es, [r.get("draft_acceptance_rate", np.nan) for r in rs], marker="o", label=f"{run}: k={k}")
    for ax, lab in ((a1, "acceptance length (tokens/step incl. bonus)"), (a2, "draft acceptance rate (VSR)")):
        ax.set_xlabel("e (extra drafted tokens; e=0: fixed k)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle("Acceptance length and VSR vs e")
    _save(fig, path)
    return True


def board_data(config=None, n_requests: int = 16, n_steps: int = 40, k: int = 3, extra: int = 2, seed: int = 0):
    """Windows [requests, steps] for fixed-k and TETRIS on identical acceptance draws.

    A short stand-alone step loop over theory.policy (the functions the simulator
    and the engine call): a full batch of n_requests, per-request acceptance from
    the config's mixture (easy_alpha / hard_alpha / easy_frac), perfect estimates.
    Used when no run folder carries per-request windows in steps.csv.
    """
    from contract.config import PolicyConfig
    from theory.policy import make_policy

    acc = (config or {}).get("acceptance", {}) if isinstance(config, dict) else {}
    easy, hard, frac = acc.get("easy_alpha", 0.9), acc.get("hard_alpha", 0.3), acc.get("easy_frac", 0.5)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    alpha = np.where(rng.random(n_requests) < frac, easy, hard)
    u = rng.random((n_requests, n_steps, k + extra))  # the same draws for both policies
    out = {}
    for name, pol in (("fixed", PolicyConfig(name="fixed", k=k)), ("tetris", PolicyConfig(name="tetris", k=k, extra=extra))):
        policy = make_policy(pol)
        board = np.zeros((n_requests, n_steps), np.int64)
        for t in range(n_steps):
            K = policy.num_drafts(n_requests)
            est = np.repeat(alpha[:, None], K, axis=1)
            L = policy.allocate(est)
            passed = u[:, t, :K] < alpha[:, None]
            first_fail = np.where(passed.all(1), K, passed.argmin(1))
            accepted = np.minimum(first_fail, L)
            policy.observe(L, accepted)
            board[:, t] = L
        out[name] = board
    return alpha, out


def board_from_sim(config: dict, k: int, extra: int, n_requests: int = 16, n_steps: int = 40):
    """Windows [requests, steps] for fixed k and TETRIS from a short rerun of the simulator.

    The run's config (acceptance model, cost) with a small offline workload of
    n_requests in one batch; per-request windows come from the simulator's
    on_step hook (its steps.csv holds per-step totals only).
    """
    import copy

    from sim.simulate import simulate_policy
    from contract.config import PolicyConfig, load_config

    data = copy.deepcopy(config)
    data.pop("sweep", None)
    data.setdefault("workload", {}).update(arrival="offline", num_requests=n_requests,
                                           output_len={"dist": "fixed", "value": 4 * n_steps})
    data.setdefault("server", {}).update(max_batch=n_requests, replicas=1)
    cfg = load_config(None, base=data)
    boards = {}
    for name, pcfg in ((f"fixed k={k}", PolicyConfig(name="fixed", k=k)),
                       (f"tetris k={k} e={extra}", PolicyConfig(name="tetris", k=k, extra=extra))):
        pcfg = dataclasses.replace(cfg.policy, name=pcfg.name, k=pcfg.k, extra=pcfg.extra)
        board = np.full((n_requests, n_steps), -1)
        step = [0]

        def hook(rep, info, board=board, step=step):
            if step[0] < n_steps:
                board[info["ids"], step[0]] = info["lengths"]
            step[0] += 1

        simulate_policy(cfg, pcfg, name, on_step=hook)
        boards[name] = np.ma.masked_less(board, 0)
    return boards


def _board_config(path) -> dict:
    """--board-config: a readable TOML file (one-line error otherwise)."""
    import tomllib

    from contract.config import ConfigError
    from contract.outpaths import read_text

    try:
        return tomllib.loads(read_text(path, "--board-config"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--board-config {str(path)!r}: invalid TOML: {err}") from None


def plot_board(runs, path, board_cfg: dict | None = None) -> str | None:
    boards = None if board_cfg else _boards_from_steps(runs)
    note = "from steps.csv"
    if boards is None:
        cfg = board_cfg or next((r["config"] for r in runs if r["config"]), None)
        if cfg:
            kb = next((best_fixed_k(r["summary"]) for r in runs if best_fixed_k(r["summary"])), None)
            pol = cfg.get("policy", {})
            k, e = kb or int(pol.get("k", 3) or 3), int(pol.get("extra", 2) or 2)
            try:
                boards = board_from_sim(cfg, k, e)
                note = (f"a short rerun of the simulator with the first run's config (16 requests in one batch, "
                        f"first 40 steps, k={k}{' = best fixed k of the run' if kb else ''}, e={e}); "
                        "per-request windows from its on_step hook")
            except Exception as err:  # a config the simulator cannot run (e.g. an engine run's trace paths)
                boards, note = None, f"simulator rerun failed ({type(err).__name__}: {err})"
    if boards is None:
        cfg = next((r["config"] for r in runs if r["config"]), {})
        pol = cfg.get("policy", {})
        k, e = int(pol.get("k", 3) or 3), int(pol.get("extra", 2) or 2)
        alpha, boards = board_data(cfg, k=k, extra=e, seed=int(cfg.get("seed", 0)))
        order = np.argsort(-alpha, kind="stable")
        boards = {n: b[order] for n, b in boards.items()}
        note = (f"stand-alone step loop over theory.policy (16 requests, 40 steps, k={k}, e={e}, "
                f"easy/hard mixture from the first run's config; rows sorted easy first)"
                + (f"; {note}" if note != "from steps.csv" else ""))
    plt = _plt()
    vmax = max(int(b.max()) for b in boards.values()) if boards else 1
    fig, axes = plt.subplots(1, len(boards), figsize=(5 * len(boards), 4), squeeze=False)
    for ax, (name, b) in zip(axes[0], boards.items()):
        im = ax.imshow(b, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{name}: windows (verified drafts)")
        ax.set_xlabel("step")
        ax.set_ylabel("request")
    fig.colorbar(im, ax=list(axes[0]), label="window L_i")
    if note != "from steps.csv":
        engine_only = all(run_source(m) == "engine" for r in runs for m in r["summary"].values() if isinstance(m, dict))
        fig.suptitle(("NOT the engine's steps: " if engine_only else "") + "simulated board ("
                     + ("--board-config rerun" if board_cfg else "config rerun in the simulator with its acceptance model")
                     + ")", fontsize=9, y=1.02)
        if engine_only:
            note = "NOT the engine's own steps (an engine run folder has no per-request windows): " + note
    _save(fig, path)
    return note


def _boards_from_steps(runs):
    """Per-request windows from a steps.csv with columns step, request, window (and policy)."""
    import csv

    for run in runs:
        if run["steps"] is None:
            continue
        with open(run["steps"]) as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            req_col = next((c for c in ("request", "request_id", "id") if c in cols), None)
            win_col = next((c for c in ("window", "selected", "length") if c in cols), None)
            if not (req_col and win_col and "step" in cols and "policy" in cols):
                continue
            data: dict[str, list] = {}
            for row in reader:
                data.setdefault(row["policy"], []).append((int(row["step"]), int(row[req_col]), int(row[win_col])))
        fixed = next((n for n in data if n.startswith("fixed")), None)
        tet = next((n for n in data if n.startswith("tetris")), None)
        if not (fixed and tet):
            continue
        out = {}
        for n in (fixed, tet):
            pts = data[n]
            steps = sorted({s for s, _, _ in pts})[:60]
            reqs = sorted({r for _, r, _ in pts})[:32]
            si, ri = {s: i for i, s in enumerate(steps)}, {r: i for i, r in enumerate(reqs)}
            b = np.full((len(reqs), len(steps)), -1)
            for s, r, w in pts:
                if s in si and r in ri:
                    b[ri[r], si[s]] = w
            out[n] = np.ma.masked_less(b, 0)
        return out
    return None


def plot_pair(trace_path, path) -> dict | None:
    """Per-request greedy match rate and estimate distribution from an engine trace."""
    from contract.trace import by_request, read_trace

    try:
        header, recs = read_trace(trace_path)
    except ValueError as err:
        raise ConfigError(f"--trace: {err}") from None
    if not recs:
        return None
    truth = [np.asarray(r.truth(), float) for r in recs]
    est = [np.asarray(r.estimates, float) for r in recs]
    per_req = {rid: np.concatenate([np.asarray(r.truth(), float)[:1] for r in rs]) for rid, rs in by_request(recs).items()}
    first = np.array([t[0] for t in truth if t.size])
    pos = np.zeros(max(t.size for t in truth))
    cnt = np.zeros_like(pos)
    for t in truth:  # conditional acceptance at position j given 1..j-1 passed
        run = np.cumprod(np.concatenate([[1.0], t[:-1]]))
        pos[: t.size] += t * (run > 0)
        cnt[: t.size] += run > 0
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].hist([v.mean() for v in per_req.values()], bins=20, range=(0, 1), color="C0")
    axes[0].set_xlabel("per-request acceptance of the first draft")
    axes[0].set_ylabel("requests")
    e1 = np.array([e[0] for e in est if e.size])
    bins = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(e1, bins) - 1, 0, 9)
    rate = [first[idx == b].mean() if np.any(idx == b) else np.nan for b in range(10)]
    axes[1].plot((bins[:-1] + bins[1:]) / 2, rate, marker="o", label="observed")
    axes[1].plot([0, 1], [0, 1], "k:", label="y = x (estimate = observed rate)")
    axes[1].set_xlabel("estimate a_i1")
    axes[1].set_ylabel("acceptance of draft 1")
    axes[1].legend(fontsize=7, loc="upper left")
    with np.errstate(invalid="ignore"):
        axes[2].bar(np.arange(1, pos.size + 1), pos / np.maximum(cnt, 1))
    axes[2].set_xlabel("draft position j")
    axes[2].set_ylabel("P(accept j | 1..j-1 accepted)")
    fig.suptitle(f"Acceptance of the pair ({len(per_req)} requests, {len(recs)} request-steps)")
    _save(fig, path)
    return {"requests": len(per_req), "request_steps": len(recs), "mean_first_acceptance": float(first.mean()),
            "per_position": [float(x) for x in pos / np.maximum(cnt, 1)], "header": header}


def plot_scatter(runs, path) -> bool:
    pairs: dict[str, list] = {}
    for run in runs:
        v = run["validate"]
        if not v:
            continue
        for name, mv in v.get("policies", {}).items():
            for metric in TABLE_METRICS:
                m, s = mv.get("measured", {}).get(metric), mv.get("simulated", {}).get(metric)
                if m is not None and s is not None and math.isfinite(m) and math.isfinite(s):
                    pairs.setdefault(metric, []).append((m, s, name))
    if not pairs:
        return False
    plt = _plt()
    n = len(pairs)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, (metric, pts) in zip(axes.flat, pairs.items()):
        m = np.array([p[0] for p in pts])
        s = np.array([p[1] for p in pts])
        ax.scatter(m, s, s=14)
        lo, hi = float(min(m.min(), s.min())), float(max(m.max(), s.max()))
        ax.plot([lo, hi], [lo, hi], "k:")
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("measured")
        ax.set_ylabel("simulated")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Simulated vs measured (dotted: equal)")
    fig.tight_layout()
    _save(fig, path)
    return True


def _save(fig, path) -> None:
    plt = _plt()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def summary_table(rows) -> list[str]:
    lines = ["| run | policy | " + " | ".join(TABLE_METRICS) + " |", "|---|---|" + "---|" * len(TABLE_METRICS)]
    for r in rows:
        lines.append(f"| {r['run']} | {r['name']} | " + " | ".join(_fmt(r.get(m)) for m in TABLE_METRICS) + " |")
    return lines


def validate_table(run) -> list[str]:
    from analysis.validate_math import error_table

    lines = []
    for name, t in error_table(run["validate"]).items():
        lines += [f"**{name}** ({run['path'].name})", "", "| metric | measured | simulated | rel. error |", "|---|---|---|---|"]
        for metric, (m, s, err) in t.items():
            lines.append(f"| {metric} | {_fmt(m)} | {_fmt(s)} | {'-' if err is None else f'{100 * err:+.1f}%'} |")
        lines.append("")
    return lines


def run(args) -> int:
    from contract.outpaths import check_out_dir, default_run_folder

    out = check_out_dir(args.out or default_run_folder("report"), force=getattr(args, "force", False), inputs=args.runs)
    board_cfg = _board_config(args.board_config) if getattr(args, "board_config", None) else None
    runs = [load_run(p) for p in args.runs]
    with atomic_folder(out) as tmp:
        rows = _rows(runs)
        md = ["# TETRIS report", "", "Runs: " + ", ".join(f"`{r['path']}`" for r in runs), ""]
        if rows:
            md += ["## Summary", ""] + summary_table(rows) + [""]
        md += ["## Throughput vs k", ""]
        md += ["![throughput](throughput.png)", ""] if plot_throughput(rows, tmp / "throughput.png") else \
              ["(no run with fixed/tetris policies carrying k)", ""]
        md += ["## Acceptance length and VSR vs e", ""]
        md += ["![acceptance](acceptance.png)", ""] if plot_acceptance(rows, tmp / "acceptance.png") else \
              ["(no fixed/tetris rows with e)", ""]
        note = plot_board(runs, tmp / "board.png", board_cfg)
        md += ["## Allocation board: fixed k vs TETRIS", "", f"Source: {note}.", "", "![board](board.png)", ""]
        trace = args.trace or next((str(r["path"] / "trace.jsonl") for r in runs if (r["path"] / "trace.jsonl").is_file()), "")
        if trace:
            info = plot_pair(trace, tmp / "pair.png")
            if info:
                md += ["## Acceptance distribution of the pair", "", f"Trace: `{trace}`.", "",
                       f"{info['requests']} requests, {info['request_steps']} request-steps; mean acceptance of "
                       f"the first draft {info['mean_first_acceptance']:.3f}; per position: "
                       + ", ".join(f"{x:.3f}" for x in info["per_position"]), "", "![pair](pair.png)", ""]
        vruns = [r for r in runs if r["validate"]]
        if vruns:
            md += ["## Simulated vs measured", ""]
            for r in vruns:
                md += validate_table(r)
            if plot_scatter(runs, tmp / "scatter.png"):
                md += ["![scatter](scatter.png)", ""]
        (tmp / "report.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out}/report.md")
    return 0
