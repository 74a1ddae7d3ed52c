"""One step's speculation decision, shared verbatim by the simulator and the engine.

    policy = make_policy(cfg.policy, step_time)     # step_time: see theory/budget.py
    K = policy.num_drafts(n_running)                 # draft K tokens per request
    L = policy.allocate(estimates)                   # int64 [N] windows to verify
    policy.observe(L, accepted)                      # after verification

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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.allocate import fixed_allocate, no_speculation, tetris_allocate, threshold_allocate
from theory.budget import StepTime, fixed_capacity, goodput_capacity, goodput_capacity_all_scores, goodput_uniform_k


@dataclass
class Policy:
    cfg: object  # contract.config.PolicyConfig
    step_time: StepTime | None = None
    alpha_ema: float = 0.7  # dsd: running estimate of per-position acceptance
    dsd_k: int = -1  # dsd: current batch-wide window (-1: not chosen yet)
    steps: int = 0  # steps observed so far
    all_scores_budget: bool = False  # NEGATIVE CONTROL only: the old goodput sizing (not lossless at T > 0)

    @property
    def name(self) -> str:
        return self.cfg.name

    def num_drafts(self, n_running: int) -> int:
        """Draft tokens per request this step (0 = plain decoding step)."""
        c = self.cfg
        if c.name == "none" or n_running == 0:
            return 0
        if c.disable_batch and n_running > c.disable_batch:
            return 0
        if c.name == "fixed":
            return c.k
        if c.name == "dsd":
            if self.dsd_k < 0 or self.steps % c.interval == 0:
                self.dsd_k = goodput_uniform_k(self.alpha_ema, n_running, self.step_time, c.max_k)
            return self.dsd_k
        return c.k + c.extra  # tetris, threshold, oracle

    def capacity(self, estimates: np.ndarray) -> int:
        """Budget size C for this step (verified draft tokens summed over the batch)."""
        n, k = estimates.shape
        if self.cfg.budget == "unbounded":
            return n * k
        if self.cfg.budget == "goodput":
            size = goodput_capacity_all_scores if self.all_scores_budget else goodput_capacity
            return size(estimates, self.step_time, drafts=k)
        return fixed_capacity(self.cfg.k, n)

    def allocate(self, estimates: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
        """Windows to verify, int64 [N], given estimates [N, K] (NaN: no draft)."""
        c = self.cfg
        estimates = np.asarray(estimates, dtype=np.float64)
        if estimates.shape[1] == 0 or c.name == "none":
            return no_speculation(estimates)
        if c.name in ("fixed", "dsd"):
            return fixed_allocate(estimates, estimates.shape[1])
        if c.name == "tetris":
            return tetris_allocate(estimates, self.capacity(estimates))
        if c.name == "threshold":
            return threshold_allocate(estimates, c.tau, self.capacity(estimates))
        if c.name == "oracle":
            if truth is None:
                raise ValueError("the oracle policy needs truth (the true acceptance)")
            truth = np.asarray(truth, dtype=np.float64)
            return tetris_allocate(truth, self.capacity(truth))
        raise ValueError(f"unknown policy {c.name!r}")

    def observe(self, lengths: np.ndarray, accepted: np.ndarray) -> None:
        """Feed back one step's outcome (dsd keeps an EMA of per-position acceptance)."""
        self.steps += 1
        lengths = np.asarray(lengths)
        accepted = np.asarray(accepted)
        trials = int(accepted.sum() + (accepted < lengths).sum())  # passes + first failures
        if trials:
            rate = float(accepted.sum()) / trials
            self.alpha_ema = self.cfg.ema * self.alpha_ema + (1.0 - self.cfg.ema) * rate


def make_policy(cfg, step_time: StepTime | None = None) -> Policy:
    """Build the per-run policy object from a PolicyConfig."""
    needs_cost = cfg.name == "dsd" or (cfg.budget == "goodput" and cfg.name in ("tetris", "threshold", "oracle"))
    if needs_cost and step_time is None:
        raise ValueError(f"policy {cfg.name!r} with budget {cfg.budget!r} needs a step-cost model (step_time)")
    return Policy(cfg=cfg, step_time=step_time)
