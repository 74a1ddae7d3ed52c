"""What every policy declares, stated once (the contract of theory/policies/).

A policy is a stateless PolicyKind; the run's state (dsd's acceptance EMA, the
step count) lives in theory.policy.Policy, which is passed in as `policy`.
`cfg` is a PolicyConfig (contract.config, duck-typed here: theory imports no contract).
"""
from __future__ import annotations

import numpy as np


class PolicyKind:
    name: str = ""  # PolicyConfig.name
    params: tuple[str, ...] = ()  # the PolicyConfig fields it reads (summary.json "policy" holds these)
    speculates: bool = True  # False: plain decoding, no draft model runs
    needs_truth: bool = False  # allocate() ranks by the true acceptance (an upper bound, not deployable)
    baseline_k: bool = False  # a fixed-k baseline: k = "best_fixed" takes the k of the best such variant
    # its windows are a prefix of an order read shallow to deep (a deeper score never ranks above its
    # parent): drafting can stop at the first depth no window reaches (theory.policy.Policy.windows_if_done)
    prefix_decided: bool = False

    def checks_depth(self, cfg) -> bool:
        """A prefix-decided policy whose windows may stop short of what requests can emit: the engine
        checks after each depth whether to draft on (theory.policy.Policy.checks_depth)."""
        return False

    def may_stop(self, cfg, depth: int, valid: np.ndarray) -> bool:
        """False when windows provably reach `depth` (drafting goes on without the check's allocate)."""
        return True

    def needs_step_time(self, cfg) -> bool:
        """True when this config needs a step-time model (theory.budget.StepTime)."""
        return False

    def label(self, cfg, best: bool = False) -> str:
        """The variant's default label (public: run folders are keyed by it); best: k = "best_fixed"."""
        return self.name

    def max_drafts(self, cfg) -> int:
        """The most draft tokens per request in one step (profile grids size by it)."""
        return cfg.k + cfg.extra

    def num_drafts(self, policy, n_running: int) -> int:
        """Draft tokens per request this step (n_running > 0, speculation not disabled)."""
        return policy.cfg.k + policy.cfg.extra

    def allocate(self, policy, estimates: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
        """Windows int64 [N] from estimates float64 [N, K >= 1] (NaN: no draft)."""
        raise NotImplementedError

    def resolved(self, cfg) -> dict:
        """{"name": ..., param: value, ...}: what summary.json stores per policy."""
        return {"name": self.name} | {p: getattr(cfg, p) for p in self.params}


def window_label(cfg, best: bool, middle: str = "") -> str:
    """'tetris-k3-e2', 'tetris-kbest-e2', 'threshold-k3-e2-tau0.3-goodput': name, k, extra, middle, budget."""
    lab = f"{cfg.name}-k{'best' if best else cfg.k}-e{cfg.extra}{middle}"
    return lab if cfg.budget == "fixed" else f"{lab}-{cfg.budget}"


def goodput_budget(cfg) -> bool:
    """A capacity sized by goodput needs the step-time model."""
    return cfg.budget == "goodput"
