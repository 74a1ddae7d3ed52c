"""Policy variants of a config (the same rules and labels as `tetris simulate`).

cfg.sweep is a list of inline tables laid over [policy] (each may set `label`;
k = "best_fixed" takes the k of the best fixed-k variant run before it, by
measured output throughput). An empty sweep runs [policy] alone.
"""
from __future__ import annotations

import dataclasses

from theory.config import POLICIES, Config, ConfigError, PolicyConfig, _build


def label(p: PolicyConfig) -> str:
    if p.name in ("none", "dsd"):
        return p.name
    if p.name == "fixed":
        return f"fixed-k{p.k}"
    lab = f"{p.name}-k{p.k}-e{p.extra}"
    if p.name == "threshold":
        lab += f"-tau{p.tau:g}"
    if p.budget != "fixed":
        lab += f"-{p.budget}"
    return lab


def variants(cfg: Config, only: str | None = None) -> list[tuple[str, dict]]:
    base = dataclasses.asdict(cfg.policy)
    if only is not None:
        if only not in POLICIES:
            raise ConfigError(f"--policy: {only!r} is not one of {', '.join(map(repr, POLICIES))}")
        return [(only, base | {"name": only})]
    sweep = getattr(cfg, "sweep", None) or []
    if not sweep:
        return [(cfg.policy.name, base)]
    if not isinstance(sweep, list):
        raise ConfigError("sweep: expected an array of inline tables")
    out, seen = [], set()
    for i, entry in enumerate(sweep):
        if not isinstance(entry, dict):
            raise ConfigError(f"sweep[{i}]: expected an inline table such as {{ name = \"fixed\", k = 3 }}")
        entry = dict(entry)
        lab = entry.pop("label", None)
        if lab is not None and not isinstance(lab, str):
            raise ConfigError(f"sweep[{i}].label: expected a string")
        table = base | entry
        best = table.get("k") == "best_fixed"
        pcfg = _build(PolicyConfig, table | ({"k": 1} if best else {}), f"sweep[{i}]")
        if lab is None:
            lab = label(pcfg)
            if best:
                lab = "fixed-best" if pcfg.name == "fixed" else lab.replace("-k1-", "-kbest-")
        while lab in seen:
            lab += "'"
        seen.add(lab)
        out.append((lab, table))
    return out


def resolve(table: dict, done: dict, lab: str) -> PolicyConfig:
    if table.get("k") == "best_fixed":
        fixed = [(r.summary["output_throughput"], r.label) for r in done.values() if r.label.startswith("fixed-k")]
        if not fixed:
            raise ConfigError(f"sweep ({lab}): k = \"best_fixed\" needs a fixed-k variant earlier in the sweep")
        table = table | {"k": int(max(fixed)[1].split("-k")[1].rstrip("'"))}
    return _build(PolicyConfig, table, "policy")
