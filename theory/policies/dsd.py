"""dsd (DSD/SmartSpec): one k for the whole batch, re-chosen every `interval` steps
by predicted goodput (theory.budget.goodput_uniform_k) with an EMA acceptance estimate."""
from __future__ import annotations

from theory.allocate import fixed_allocate
from theory.budget import goodput_uniform_k
from theory.policies.base import PolicyKind


class Dsd(PolicyKind):
    name = "dsd"
    params = ("max_k", "interval", "ema", "disable_batch")

    def needs_step_time(self, cfg) -> bool:
        return True

    def max_drafts(self, cfg) -> int:
        return cfg.max_k

    def num_drafts(self, policy, n_running: int) -> int:
        c = policy.cfg
        if policy.dsd_k < 0 or policy.steps % c.interval == 0:
            policy.dsd_k = goodput_uniform_k(policy.alpha_ema, n_running, policy.step_time, c.max_k)
        return policy.dsd_k

    def allocate(self, policy, estimates, truth):
        return fixed_allocate(estimates, estimates.shape[1])


POLICY = Dsd()
