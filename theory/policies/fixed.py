"""fixed: K = k, every request verifies k drafts (standard speculative decoding)."""
from __future__ import annotations

from theory.allocate import fixed_allocate
from theory.policies.base import PolicyKind


class Fixed(PolicyKind):
    name = "fixed"
    params = ("k", "disable_batch", "early_stop")
    baseline_k = True
    prefix_decided = True  # L = min(k, valid drafts): it stops drafting only where no request can use a depth

    def label(self, cfg, best: bool = False) -> str:
        return "fixed-best" if best else f"fixed-k{cfg.k}"

    def max_drafts(self, cfg) -> int:
        return cfg.k

    def num_drafts(self, policy, n_running: int) -> int:
        return policy.cfg.k

    def allocate(self, policy, estimates, truth):
        return fixed_allocate(estimates, estimates.shape[1])


POLICY = Fixed()
