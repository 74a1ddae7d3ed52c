"""tetris: K = k + extra; the budget C (k*N, goodput-sized, or unbounded) goes to
the top-C cumulative scores (theory.allocate.tetris_allocate)."""
from __future__ import annotations

from theory.allocate import tetris_allocate
from theory.policies.base import PolicyKind, goodput_budget, window_label


class Tetris(PolicyKind):
    name = "tetris"
    params = ("k", "extra", "budget", "disable_batch")

    def needs_step_time(self, cfg) -> bool:
        return goodput_budget(cfg)

    def label(self, cfg, best: bool = False) -> str:
        return window_label(cfg, best)

    def allocate(self, policy, estimates, truth):
        return tetris_allocate(estimates, policy.capacity(estimates))


POLICY = Tetris()
