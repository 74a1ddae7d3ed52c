"""Step-cost models: how long one serving step takes.

    cost = make_cost(cfg.cost)
    cost.target_s(batch, tokens, context)   # one target verification pass (s)
    cost.draft_s(batch, context)            # one draft forward, one token per request (s)
    cost.prefill(num_admitted, prompt_tokens)  # admission cost added to the step (s)
    cost.mixed_prefill(...)                 # the same, for prompts riding in a running batch's pass
    cost.step_s(batch, drafts, verified, context)  # whole decode step (s), vectorised in verified

`tokens` = tokens the target scores in the step, summed over the batch: the
verified draft tokens plus one per request (the bonus / correction position).
`context` = mean context length (prompt + generated tokens) of the running
requests. A decode step with K drafts costs K * draft_s + target_s (draft_mode
"sequential"), or max(K * draft_s, target_s) ("parallel": drafting overlaps
verification, the paper's target-efficiency projection).

Models (cost.model):
  constant   target = step_s; draft = draft_step_s
  linear     target = step_s + per_token_s * tokens; draft = draft_step_s
  knee       target = step_s + per_token_s * max(0, tokens - knee_tokens); draft = draft_step_s
  roofline   target = overhead_s + forward(target preset, tokens, batch, context) on num_gpus
             (tensor parallel); draft = forward(draft preset, batch, batch, context) on one GPU.
             forward = preset.forward_overhead_s + max(FLOPs / (peak * flops_efficiency),
             bytes / (bandwidth * bandwidth_efficiency)); FLOPs = 2 * params * tokens +
             4 * layers * heads * head_dim * tokens * context; bytes = 2 * params (bf16 weights)
             + 4 * layers * kv_heads * head_dim * batch * context (bf16 K and V).
  table      a profiled CSV, interpolated (see TABLE FORMAT below).
Prefill (every model): prefill_call_s per admission pass (the one batched prefill forward of the
requests joining at a step: weights read once, per-layer overhead) + prefill_s per admitted request
+ prefill_per_token_s per prompt token;
roofline adds one target forward over the admitted prompts (mean context = half a prompt).
With server.admission = "mixed", prompts joining a running batch ride in its pass: mixed_prefill
charges prefill_s and mixed_prefill_per_token_s (default: prefill_per_token_s) but no prefill_call_s
(roofline: the joined pass less the decode pass alone).

TABLE FORMAT (written by `tetris profile`, read here): contract/profile_table.py, CSV
    batch,tokens_per_request,context,target_s,draft_s
over the full batch x tokens_per_request x context grid; lookups interpolate multilinearly and
extrapolate linearly past the edges (results floored at 1 microsecond); overhead_s is added to
target_s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from contract.config import ConfigError
from contract.profile_table import COLUMNS, ProfileTable
from theory.layout import verified_tokens


@dataclass(frozen=True)
class Hardware:
    flops: float  # peak dense bf16 FLOP/s per GPU
    bandwidth: float  # HBM bytes/s per GPU


@dataclass(frozen=True)
class ModelPreset:
    params: float  # parameters
    layers: int
    heads: int  # attention (query) heads
    kv_heads: int
    head_dim: int
    forward_overhead_s: float  # launch / framework / all-reduce overhead per forward (s)


HARDWARE = {
    "H100": Hardware(989e12, 3.35e12),
    "H200": Hardware(989e12, 4.8e12),
    "A100": Hardware(312e12, 2.039e12),
}

MODELS = {
    "llama-3-8b": ModelPreset(8.03e9, 32, 32, 8, 128, 0.0015),
    "llama-3-70b": ModelPreset(70.6e9, 80, 64, 8, 128, 0.0035),
    "vicuna-33b": ModelPreset(32.5e9, 60, 52, 52, 128, 0.003),
    "vicuna-68m": ModelPreset(68e6, 2, 12, 12, 64, 0.0004),
    "llama-3.2-1b": ModelPreset(1.24e9, 16, 32, 8, 64, 0.0015),
}

TABLE_COLUMNS = COLUMNS  # the profile table's columns (contract.profile_table)


def _forward_s(m: ModelPreset, hw: Hardware, gpus: int, fe: float, be: float, tokens, batch, context,
               attended=None, kv_tokens=None):
    """One forward; attended = sum over scored tokens of the context each attends to (tokens * context),
    kv_tokens = KV entries read (batch * context): given apart for a pass mixing decodes and prompts."""
    attended = tokens * context if attended is None else attended
    kv_tokens = batch * context if kv_tokens is None else kv_tokens
    flops = 2.0 * m.params * tokens + 4.0 * m.layers * m.heads * m.head_dim * attended
    nbytes = 2.0 * m.params + 4.0 * m.layers * m.kv_heads * m.head_dim * kv_tokens
    compute, memory = flops / (hw.flops * fe * gpus), nbytes / (hw.bandwidth * be * gpus)
    if isinstance(compute, np.ndarray) or isinstance(memory, np.ndarray):
        return m.forward_overhead_s + np.maximum(compute, memory)
    return m.forward_overhead_s + max(compute, memory)


@dataclass
class CostModel:
    cfg: object  # contract.config.CostConfig
    table: ProfileTable | None = None
    layout: str = "packed"  # the verification pass: "packed" (N + sum L_i tokens) or "padded" (N * (1 + max L_i))

    def target_s(self, batch: int, tokens, context: float):
        """Seconds of one target pass; float for a scalar `tokens`, an array for an array."""
        c = self.cfg
        arr = isinstance(tokens, np.ndarray)
        tokens = tokens.astype(np.float64) if arr else float(tokens)
        if c.model == "constant":
            return np.full(tokens.shape, c.step_s) if arr else c.step_s
        if c.model == "linear":
            return c.step_s + c.per_token_s * tokens
        if c.model == "knee":
            return c.step_s + c.per_token_s * (np.maximum(0.0, tokens - c.knee_tokens) if arr else max(0.0, tokens - c.knee_tokens))
        if c.model == "roofline":
            m, hw = MODELS[c.target_preset], HARDWARE[c.hardware]
            return c.overhead_s + _forward_s(m, hw, c.num_gpus, c.flops_efficiency, c.bandwidth_efficiency,
                                             tokens, batch, context)
        out = c.overhead_s + self.table.target(batch, tokens / max(batch, 1), context)
        return out if arr else float(out)

    def draft_s(self, batch: int, context: float) -> float:
        c = self.cfg
        if c.model == "roofline":
            m, hw = MODELS[c.draft_preset], HARDWARE[c.hardware]
            return float(_forward_s(m, hw, 1, c.flops_efficiency, c.bandwidth_efficiency, batch, batch, context))
        if c.model == "table" and self.table.has_draft:
            return self.table.draft_s(batch, context)
        return c.draft_step_s

    def prefill(self, num_admitted: int, prompt_tokens: int) -> float:
        c = self.cfg
        extra = 0.0
        if c.model == "roofline" and num_admitted:  # one target pass over the prompts
            m, hw = MODELS[c.target_preset], HARDWARE[c.hardware]
            extra = float(_forward_s(m, hw, c.num_gpus, c.flops_efficiency, c.bandwidth_efficiency,
                                     float(prompt_tokens), num_admitted, prompt_tokens / (2.0 * num_admitted)))
        call = c.prefill_call_s if num_admitted else 0.0
        return call + c.prefill_s * num_admitted + c.prefill_per_token_s * prompt_tokens + extra

    def mixed_prefill(self, batch: int, tokens: int, context: float, num_joined: int, prompt_tokens: int,
                      prompt_context: float) -> float:
        """Seconds that joiners add to a running batch's pass when their prompts ride in it
        (server.admission = "mixed"): prefill_s per joiner + mixed_prefill_per_token_s (negative: the
        separate passes' prefill_per_token_s) per prompt token, and no prefill_call_s (the pass is the
        step's own). roofline: plus the one pass over decode and prompt
        tokens less the decode pass alone (`tokens` scored for `batch` decoders at `context`; a prompt
        token attends to `prompt_context` on average and writes one KV entry)."""
        c = self.cfg
        extra = 0.0
        if c.model == "roofline" and num_joined:
            m, hw = MODELS[c.target_preset], HARDWARE[c.hardware]
            args = (m, hw, c.num_gpus, c.flops_efficiency, c.bandwidth_efficiency)
            joined = _forward_s(*args, float(tokens + prompt_tokens), batch + num_joined, context,
                                attended=tokens * context + prompt_tokens * prompt_context,
                                kv_tokens=batch * context + prompt_tokens)
            extra = float(joined - _forward_s(*args, float(tokens), batch, context))
        per_token = c.mixed_prefill_per_token_s if c.mixed_prefill_per_token_s >= 0 else c.prefill_per_token_s
        return c.prefill_s * num_joined + per_token * prompt_tokens + extra

    def step_parts(self, batch: int, drafts: int, verified, context: float):
        """(seconds paid for drafting, seconds of the target pass) for one decode step."""
        target = self.target_s(batch, verified + batch, context)
        draft = drafts * self.draft_s(batch, context) if drafts else 0.0
        if self.cfg.draft_mode == "parallel":  # drafting hidden behind verification
            return (np.maximum(draft - target, 0.0) if isinstance(target, np.ndarray) else max(draft - target, 0.0)), target
        return draft, target

    def step_s(self, batch: int, drafts: int, verified, context: float):
        draft, target = self.step_parts(batch, drafts, verified, context)
        return draft + target

    # ---- the layout: what the target pass scores for ragged windows (sim, budget sizing, engine alike)
    def verified_tokens(self, lengths) -> int:
        """Draft tokens the target pass scores for windows `lengths` [N] (int): sum(L) when packed,
        N * max(L) when right-padded (theory.layout.verified_tokens, in this model's layout)."""
        return verified_tokens(lengths, self.layout)

    def window_parts(self, batch: int, drafts: int, lengths, context: float):
        """step_parts of one decode step with windows `lengths` [batch], priced in this model's layout."""
        return self.step_parts(batch, drafts, self.verified_tokens(lengths), context)

    def window_step_s(self, batch: int, drafts: int, lengths, context: float) -> float:
        """Seconds of one decode step with windows `lengths` [batch] in this model's layout (a
        layout-aware step time for budget sizing: step_s sees only the total)."""
        draft, target = self.window_parts(batch, drafts, lengths, context)
        return float(draft + target)


def make_cost(cfg, layout: str | None = None) -> CostModel:
    """Validate the [cost] section and build its model (ConfigError names the bad key).

    layout: the verification pass ("packed" / "padded"), as contract.config.verify_layout(config,
    side) resolves it; None: the section's deprecated cost.verify_layout, else "packed".
    """
    if cfg.model == "roofline":
        if cfg.hardware not in HARDWARE:
            raise ConfigError(f"cost.hardware: {cfg.hardware!r} is not one of {', '.join(map(repr, HARDWARE))}")
        for key in ("target_preset", "draft_preset"):
            if getattr(cfg, key) not in MODELS:
                raise ConfigError(f"cost.{key}: {getattr(cfg, key)!r} is not one of {', '.join(map(repr, MODELS))}")
    table = ProfileTable.read(cfg.table) if cfg.model == "table" else None
    model = CostModel(cfg, table, layout or getattr(cfg, "verify_layout", "") or "packed")
    probe = model.step_s(1, 1, 1, 1.0)
    if not math.isfinite(float(np.max(probe))):
        raise ConfigError(f"cost.model: {cfg.model!r} gives a non-finite step time")
    return model
