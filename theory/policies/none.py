"""none: K = 0, plain decoding (no draft model runs)."""
from __future__ import annotations

from theory.allocate import no_speculation
from theory.policies.base import PolicyKind


class NoSpeculation(PolicyKind):
    name = "none"
    speculates = False

    def max_drafts(self, cfg) -> int:
        return 0

    def num_drafts(self, policy, n_running: int) -> int:
        return 0

    def allocate(self, policy, estimates, truth):
        return no_speculation(estimates)


POLICY = NoSpeculation()
