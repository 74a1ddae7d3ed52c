"""TETRIS inside vLLM: a DraftModelProposer that drafts K = k + extra tokens for every request
and keeps, per request, the prefix the batch's top-C cumulative scores select (C = k * N for
budget = "fixed"), calling this project's theory code (theory.policy.make_policy -> allocate).

vLLM takes per-request draft lists of any length (scheduler.update_draft_token_ids; the runner
slices each request's draft probabilities by its scheduled count, so a kept PREFIX stays aligned).
Confidence per drafted token: the draft's largest probability at that position (after temperature);
at temperature 0 it is the drafted token's probability (the native "token_prob" estimator), at
T > 0 the native "max_prob" one (the drafted token's own probability would bias the output).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from vllm.v1.spec_decode.draft_model import DraftModelProposer

from engine.vllm.setup import TETRIS_ENV


def policy_from_env():
    """theory.policy.Policy from the TETRIS_VLLM_PROPOSER policy table (JSON)."""
    from contract.config import PolicyConfig, build
    from theory.policy import make_policy

    return make_policy(build(PolicyConfig, json.loads(os.environ[TETRIS_ENV]), "policy"))


class TetrisDraftProposer(DraftModelProposer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy = policy_from_env()
        self._conf: list[torch.Tensor] = []  # [B] confidence per drafting call of this step
        self.kept = 0  # draft tokens kept (all steps), for the tests
        self.request_steps = 0

    def _sample_draft_tokens(self, hidden_states, sampling_metadata):
        if self.use_heterogeneous_vocab:
            raise RuntimeError("TETRIS proposer: heterogeneous draft/target vocabularies are not supported")
        if not self._enable_probabilistic_draft_probs or sampling_metadata.all_greedy:
            logits = self.model.compute_logits(hidden_states)
            conf, ids = logits.float().softmax(dim=-1).max(dim=-1)  # argmax == vLLM's greedy draft
            self._conf.append(conf)
            return ids, None
        ids, probs = super()._sample_draft_tokens(hidden_states, sampling_metadata)
        self._conf.append(probs.max(dim=-1).values.float())
        return ids, probs

    def propose(self, num_speculative_tokens, *args, **kwargs):
        self._conf = []
        drafts = super().propose(num_speculative_tokens, *args, **kwargs)  # [B, K]
        n, k_all = drafts.shape
        if n == 0 or k_all == 0:
            return drafts
        if self.policy.num_drafts(n) == 0:
            return [[] for _ in range(n)]
        conf = torch.stack(self._conf[:k_all], dim=1).cpu().numpy().astype(np.float64)  # [B, K]
        lengths = self.policy.allocate(conf)
        ids = drafts.cpu().tolist()
        self.kept += int(lengths.sum())
        self.request_steps += n
        return [row[: int(m)] for row, m in zip(ids, lengths)]
