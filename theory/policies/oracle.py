"""oracle: like tetris but ranks by the true acceptance (`truth`): an upper bound."""
from __future__ import annotations

import numpy as np

from theory.allocate import tetris_allocate
from theory.policies.base import PolicyKind, goodput_budget, window_label


class Oracle(PolicyKind):
    name = "oracle"
    params = ("k", "extra", "budget", "disable_batch")
    needs_truth = True

    def needs_step_time(self, cfg) -> bool:
        return goodput_budget(cfg)

    def label(self, cfg, best: bool = False) -> str:
        return window_label(cfg, best)

    def allocate(self, policy, estimates, truth):
        if truth is None:
            raise ValueError("the oracle policy needs truth (the true acceptance)")
        truth = np.asarray(truth, dtype=np.float64)
        return tetris_allocate(truth, policy.capacity(truth))


POLICY = Oracle()
