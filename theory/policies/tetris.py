"""tetris: K = k + extra; the budget C (k*N, goodput-sized, or unbounded) goes to
the top-C cumulative scores (theory.allocate.tetris_allocate)."""
from __future__ import annotations

import numpy as np

from theory.allocate import tetris_allocate
from theory.budget import fixed_capacity
from theory.policies.base import PolicyKind, goodput_budget, window_label


class Tetris(PolicyKind):
    name = "tetris"
    prefix_decided = True
    params = ("k", "extra", "budget", "disable_batch", "early_stop")

    def checks_depth(self, cfg) -> bool:
        return cfg.budget == "fixed"

    def may_stop(self, cfg, depth, valid):
        # the top C = k*N slots reach `depth` while fewer than C slots lie above it
        return cfg.budget != "fixed" or int(np.minimum(valid, depth - 1).sum()) >= fixed_capacity(cfg.k, len(valid))

    def needs_step_time(self, cfg) -> bool:
        return goodput_budget(cfg)

    def label(self, cfg, best: bool = False) -> str:
        return window_label(cfg, best)

    def allocate(self, policy, estimates, truth):
        return tetris_allocate(estimates, policy.capacity(estimates))


POLICY = Tetris()
