"""One step's speculation decision, shared verbatim by the simulator and the engine.

    policy = make_policy(cfg.policy, step_time, layout)  # step_time: theory/budget.py; layout: theory/layout.py
    K = policy.num_drafts(n_running)                 # draft K tokens per request
    L = policy.allocate(estimates)                   # int64 [N] windows to verify
    policy.observe(L, accepted)                      # after verification
    D = policy.drafted_depth(K, L, usable)           # depth the step drafts (policy.early_stop; the
                                                     # engine gets there through windows_if_done)

Policies (PolicyConfig.name):
  none       K = 0: plain decoding.
  fixed      K = k, every request verifies k (standard SD).
  tetris     K = k + extra; budget C (k*N, goodput-sized, or unbounded) split by
             the top-C cumulative scores (theory.allocate.tetris_allocate).
  threshold  K = k + extra; each request stops where its cumulative score < tau,
             then cut to the budget by score.
  dsd        DSD/SmartSpec: one k for the whole batch, re-chosen every `interval`
             steps by predicted goodput with an EMA acceptance estimate.
  oracle     like tetris but ranks by the true acceptance (`truth`): an upper bound.
`disable_batch` > 0 turns speculation off while more requests than that run.
Each policy is one module of theory/policies/ (its registry: theory.policies.REGISTRY).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from theory.allocate import no_speculation
from theory.budget import StepTime, fixed_capacity, goodput_capacity, goodput_capacity_all_scores
from theory.layout import LAYOUTS
from theory.policies import PolicyKind, kind, needs_step_time


@dataclass
class Policy:
    cfg: object  # contract.config.PolicyConfig
    step_time: StepTime | None = None
    alpha_ema: float = 0.7  # dsd: running estimate of per-position acceptance
    dsd_k: int = -1  # dsd: current batch-wide window (-1: not chosen yet)
    steps: int = 0  # steps observed so far
    layout: str = "packed"  # the verify pass a goodput budget is priced in (theory.layout.LAYOUTS)
    all_scores_budget: bool = False  # NEGATIVE CONTROL only: the old goodput sizing (not lossless at T > 0)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def kind(self) -> PolicyKind:
        """What the policy declares (theory/policies/)."""
        return kind(self.cfg.name)

    @property
    def speculates(self) -> bool:
        """False for plain decoding: no draft model runs."""
        return self.kind.speculates

    @property
    def needs_truth(self) -> bool:
        """allocate() needs the true acceptance (verify all K drafts first)."""
        return self.kind.needs_truth

    def num_drafts(self, n_running: int) -> int:
        """Draft tokens per request this step (0 = plain decoding step)."""
        c = self.cfg
        if not self.speculates or n_running == 0:
            return 0
        if c.disable_batch and n_running > c.disable_batch:
            return 0
        return self.kind.num_drafts(self, n_running)

    def capacity(self, estimates: np.ndarray) -> int:
        """Budget size C for this step (verified draft tokens summed over the batch)."""
        n, k = estimates.shape
        if self.cfg.budget == "unbounded":
            return n * k
        if self.cfg.budget == "goodput":
            if self.all_scores_budget:
                return goodput_capacity_all_scores(estimates, self.step_time, drafts=k)
            return goodput_capacity(estimates, self.step_time, drafts=k, layout=self.layout)
        return fixed_capacity(self.cfg.k, n)

    def allocate(self, estimates: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
        """Windows to verify, int64 [N], given estimates [N, K] (NaN: no draft)."""
        estimates = np.asarray(estimates, dtype=np.float64)
        if estimates.shape[1] == 0 or not self.speculates:
            return no_speculation(estimates)
        return self.kind.allocate(self, estimates, truth)

    @cached_property  # read every step by the simulator and the engine; cfg does not change in a run
    def stops_early(self) -> bool:
        """Drafting stops at the first depth no window reaches (tetris, threshold, fixed; policy.early_stop)."""
        return self.kind.prefix_decided and bool(getattr(self.cfg, "early_stop", True))

    @cached_property
    def checks_depth(self) -> bool:
        """Drafting also checks after each depth whether a window can still reach deeper
        (windows_if_done): tetris / threshold with the fixed budget k * N. Not with a goodput budget:
        on SmolLM2 at batch 8 it reached depth K in nearly every step (0.7% fewer drafts) while the
        checks cost 1.3% of step time; not for fixed (nor unbounded), whose windows reach every depth
        a request can emit (docs/engine.md "Early-stopped drafting")."""
        return self.stops_early and self.kind.checks_depth(self.cfg)

    def may_stop(self, depth: int, valid: np.ndarray) -> bool:
        """False when the windows provably reach `depth` (no estimates or allocate needed to draft on)."""
        return self.kind.may_stop(self.cfg, depth, valid)

    def windows_if_done(self, partial: np.ndarray, k: int, valid: np.ndarray, control: str = "") -> np.ndarray | None:
        """After drafting depth j of K = k: the windows allocate() would give on all K drafts, when
        no draft deeper than j can be among them; else None (draft on).

        partial [N, j] float64 estimates of depths 1..j (NaN: no draft); valid [N] int drafts each
        request can still be given (<= k). Depths j+1..K are scored 0 where valid: they rank after
        every shallower slot (a deeper score is <= its parent's and ties go shallower), so when no
        window reaches depth j, none of the real deeper drafts could have been chosen and the first
        slots of the rank order, the slot count and the step time allocate() reads are those of the
        full K (proof and test: tests/test_theory_early_stop.py). Drafting then stops at depth
        j = max(L) + 1 (drafted_depth).
        control: NEGATIVE CONTROLS only: "one-early" also stops when windows reach depth j;
        "uncounted" scores the deeper depths NaN, so a goodput budget counts fewer slots.
        """
        n, j = partial.shape
        if not self.may_stop(j, valid):
            return None
        pad = np.nan if control == "uncounted" else 0.0
        deeper = np.where(np.arange(j, k)[None, :] < np.asarray(valid)[:, None], pad, np.nan)
        lengths = self.allocate(np.concatenate([partial, deeper], axis=1))
        return lengths if int(lengths.max(initial=0)) < j + (control == "one-early") else None

    def drafted_depth(self, k: int, lengths: np.ndarray, usable: np.ndarray) -> int:
        """Drafts per request a step drafts out of K = k for windows `lengths` [N], when the requests
        can still emit usable [N] drafts: a policy that stops early drafts no deeper than any request
        can emit, and with checks_depth stops at max(L) + 1 (windows_if_done); else K."""
        if k == 0 or not lengths.size or not self.stops_early:  # (an oracle is not prefix-decided)
            return k
        cap = min(k, int(usable.max()))
        return min(cap, int(lengths.max()) + 1) if self.checks_depth else cap

    def observe(self, lengths: np.ndarray, accepted: np.ndarray) -> None:
        """Feed back one step's outcome (dsd keeps an EMA of per-position acceptance)."""
        self.steps += 1
        lengths = np.asarray(lengths)
        accepted = np.asarray(accepted)
        trials = int(accepted.sum() + (accepted < lengths).sum())  # passes + first failures
        if trials:
            rate = float(accepted.sum()) / trials
            self.alpha_ema = self.cfg.ema * self.alpha_ema + (1.0 - self.cfg.ema) * rate


def make_policy(cfg, step_time: StepTime | None = None, layout: str = "packed") -> Policy:
    """Build the per-run policy object from a PolicyConfig; layout: the run's verify pass
    (the cost model's layout in the simulator, verify_layout(cfg, "engine") in the engine)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if needs_step_time(cfg) and step_time is None:
        raise ValueError(f"policy {cfg.name!r} with budget {cfg.budget!r} needs a step-cost model (step_time)")
    return Policy(cfg=cfg, step_time=step_time, layout=layout)
