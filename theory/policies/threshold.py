"""threshold: K = k + extra; each request stops where its cumulative score < tau,
then the windows are cut to the budget by score (theory.allocate.threshold_allocate)."""
from __future__ import annotations

from theory.allocate import threshold_allocate
from theory.policies.base import PolicyKind, goodput_budget, window_label


class Threshold(PolicyKind):
    name = "threshold"
    prefix_decided = True
    params = ("k", "extra", "budget", "tau", "disable_batch", "early_stop")

    def checks_depth(self, cfg) -> bool:
        return cfg.budget == "fixed"

    def needs_step_time(self, cfg) -> bool:
        return goodput_budget(cfg)

    def label(self, cfg, best: bool = False) -> str:
        return window_label(cfg, best, f"-tau{cfg.tau:g}")

    def allocate(self, policy, estimates, truth):
        return threshold_allocate(estimates, policy.cfg.tau, policy.capacity(estimates))


POLICY = Threshold()
