"""What a run is, shared by `tetris simulate` and `tetris engine`: the policy
variants of a config, their labels, and the run folder they write.

cfg.sweep is a list of inline tables laid over [policy]; each may set `label`,
and k = "best_fixed" takes the k of the best fixed-k variant run before it (by
output throughput; run_variants is the one loop that does it). An empty sweep runs
[policy] alone; `only` runs one policy name with the [policy] section. What each
policy is (label, parameters, needs) comes from its module in theory/policies/.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np

from contract.config import POLICIES, Config, ConfigError, PolicyConfig, build
from theory.policies import kind, needs_step_time

R = TypeVar("R")  # one variant's result (it has .summary)


def add_run_arguments(parser, config_help: str) -> None:
    """The flags every run command shares (public contract): --config, --set, --policy, --json."""
    parser.add_argument("--config", metavar="FILE.toml", help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted path, TOML value), repeatable, e.g. workload.rate=5")
    parser.add_argument("--policy", metavar="NAME", help="run only this policy, using the config's [policy] section")
    parser.add_argument("--json", action="store_true", help="print summary.json to stdout instead of the table")


def policy_label(p: PolicyConfig, best: bool = False) -> str:
    """'none', 'fixed-k3', 'dsd', 'tetris-k3-e2', 'threshold-k3-e2-tau0.3', ...-goodput (each policy's
    label(), theory/policies/); best: k = "best_fixed" ('fixed-best', 'tetris-kbest-e2')."""
    return kind(p.name).label(p, best)


def resolved_params(p: PolicyConfig) -> dict:
    """{"name": ..., and the PolicyConfig fields the policy reads}: summary.json's "policy" entry."""
    return kind(p.name).resolved(p)


def policy_variants(cfg: Config, only: str | None = None,
                    check: Callable[[PolicyConfig, str], None] | None = None) -> list[tuple[str, dict]]:
    """(label, policy table) pairs to run, each validated (errors name sweep[i].key).

    `check(pcfg, label)` is the caller's extra validation (e.g. a cost model a
    goodput policy needs); it raises ConfigError.
    """
    base = dataclasses.asdict(cfg.policy)
    if only is not None:
        if only not in POLICIES:
            raise ConfigError(f"--policy: {only!r} is not one of {', '.join(map(repr, POLICIES))}")
        table = base | {"name": only}
        if check:
            check(build(PolicyConfig, table, "policy"), only)
        return [(only, table)]
    if not cfg.sweep:
        if check:
            check(cfg.policy, cfg.policy.name)
        return [(cfg.policy.name, base)]
    if not isinstance(cfg.sweep, list):
        raise ConfigError("sweep: expected an array of inline tables")
    out, seen = [], set()
    for i, entry in enumerate(cfg.sweep):
        if not isinstance(entry, dict):
            raise ConfigError(f"sweep[{i}]: expected an inline table such as {{ name = \"fixed\", k = 3 }}")
        entry = dict(entry)
        label = entry.pop("label", None)
        if label is not None and not isinstance(label, str):
            raise ConfigError(f"sweep[{i}].label: expected a string")
        table = base | entry
        best = table.get("k") == "best_fixed"
        pcfg = build(PolicyConfig, table | ({"k": 1} if best else {}), f"sweep[{i}]")
        if best and not any(kind(t["name"]).baseline_k and t.get("k") != "best_fixed" for _, t in out):
            raise ConfigError(f"sweep[{i}].k: \"best_fixed\" needs a fixed-k variant earlier in the sweep")
        if label is None:
            label = policy_label(pcfg, best)
        if check:
            check(pcfg, label)
        while label in seen:
            label += "'"
        seen.add(label)
        out.append((label, table))
    return out


def resolve_variant(table: dict, fixed_throughput: dict[int, float]) -> PolicyConfig:
    """The PolicyConfig to run; k = "best_fixed" becomes the k with the highest
    output throughput among the fixed-k variants already run ({k: tokens/s};
    the first of equals wins)."""
    if table.get("k") == "best_fixed":
        table = table | {"k": max(fixed_throughput, key=fixed_throughput.__getitem__)}
    return build(PolicyConfig, table, "policy")


def variant_needs_step_time(table: dict) -> bool:
    """True when the variant's policy needs a step-time model (k = "best_fixed" does not matter)."""
    return needs_step_time(build(PolicyConfig, table | ({"k": 1} if table.get("k") == "best_fixed" else {}), "policy"))


def run_variants(todo: list[tuple[str, dict]], run_one: Callable[[str, PolicyConfig], R]) -> dict[str, R]:
    """{label: run_one(label, pcfg)} over the variants in order (the one loop of simulate and engine).

    k = "best_fixed" resolves to the k of the baseline (fixed-k) variant with the highest
    output throughput (result.summary["output_throughput"]) among those run before it.
    """
    done: dict[str, R] = {}
    baseline: dict[int, float] = {}  # k -> output throughput of the fixed-k variants run so far
    for label, table in todo:
        pcfg = resolve_variant(table, baseline)
        done[label] = run_one(label, pcfg)
        if kind(pcfg.name).baseline_k:
            baseline.setdefault(pcfg.k, done[label].summary["output_throughput"])
    return done


def baseline_throughputs(results: dict) -> list[float]:
    """Output throughputs of the fixed-k baseline variants of {label: result} (result.policy: the
    PolicyConfig it ran, result.summary: its metrics), for "vs best fixed" tables."""
    return [r.summary["output_throughput"] for r in results.values()
            if r.policy is not None and kind(r.policy.name).baseline_k]


def _clean(x):
    """JSON-safe: numpy scalars to Python, non-finite floats to null."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def summary_json(summaries: dict[str, dict], policies: dict[str, PolicyConfig] | None = None) -> str:
    """{"policies": {label: {metric: value}}} (the public summary.json shape); with `policies`
    ({label: the PolicyConfig it ran}) each entry also holds "policy": resolved_params(...)."""
    if policies is not None:
        summaries = {lab: s | {"policy": resolved_params(policies[lab])} for lab, s in summaries.items()}
    return json.dumps(_clean({"policies": summaries}), indent=2) + "\n"


LIVE_TEMPORARY: set[Path] = set()  # temporary run folders being written now (removed on exit; see tetris_cli)


@contextlib.contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`,
    on any error (Ctrl-C and SIGTERM included) it is removed and `out` is left as it was.

    `out` may already exist only as a previous run folder of this tool (callers check
    that before the run with contract.outpaths.check_out_dir, which also asks for --force);
    a folder of other files or a file is never replaced. The new folder carries the
    `.tetris-run` marker."""
    from contract.outpaths import MARKER, is_run_folder

    out = Path(out)
    if out.exists() and not (out.is_dir() and (is_run_folder(out) or not any(out.iterdir()))):
        raise ConfigError(f"--out {str(out)!r}: exists and is not a run folder of this tool; refusing to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        raise ConfigError(f"--out {str(out)!r}: cannot create the run folder: {err.strerror or err}") from None
    LIVE_TEMPORARY.add(tmp)
    try:
        (tmp / MARKER).write_text("tetris run folder: --force may replace it\n")
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        LIVE_TEMPORARY.discard(tmp)


# ---------------------------------------------------------------- requests.csv (simulate and engine)

REQUESTS_COLUMNS = ("policy", "id", "arrival_s", "first_token_s", "finish_s", "prompt_len", "output_len", "replica")
REQUESTS_HEADER = ",".join(REQUESTS_COLUMNS) + "\n"


def write_request_rows(fh, label: str, c: dict) -> None:
    """requests.csv rows of one policy: columns id, arrival_s, first_token_s, finish_s, prompt_len,
    output_len, replica (arrays or lists; ints, and seconds written with 6 decimals)."""
    rows = zip(*(np.asarray(c[k]).tolist() for k in REQUESTS_COLUMNS[1:]))
    fh.writelines(f"{label},{i},{a:.6f},{f:.6f},{e:.6f},{p},{o},{r}\n" for i, a, f, e, p, o, r in rows)


def record_columns(records, replica: int = 0) -> dict:
    """contract.metrics.RequestRecord list -> the requests.csv columns (one replica)."""
    from contract.metrics import RECORD_FIELDS

    cols = {k: [getattr(q, k) for q in records] for k in RECORD_FIELDS}
    cols["replica"] = [replica] * len(records)
    return cols
