"""The policy registry: one line per policy (its module declares the rest, see base.PolicyKind).

Adding a policy: docs/theory.md "Adding a policy". The order is the order of
PolicyConfig.name's choices in messages.
"""
from __future__ import annotations

from theory.policies import dsd, fixed, none, oracle, tetris, threshold
from theory.policies.base import PolicyKind

REGISTRY: dict[str, PolicyKind] = {p.name: p for p in (
    none.POLICY,
    fixed.POLICY,
    tetris.POLICY,
    threshold.POLICY,
    dsd.POLICY,
    oracle.POLICY,
)}


def kind(name: str) -> PolicyKind:
    """The registered policy called `name` (ValueError when there is none)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (one of {', '.join(REGISTRY)})") from None


def needs_step_time(cfg) -> bool:
    """True when the PolicyConfig needs a step-time model (dsd; a goodput-sized budget)."""
    return kind(cfg.name).needs_step_time(cfg)


__all__ = ["REGISTRY", "PolicyKind", "kind", "needs_step_time"]
