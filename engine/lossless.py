"""Exact lossless check: run a policy on models whose output distribution is known exactly.

    res = check(policy_cfg, temperature=1.0)            # -> CheckResult
    res.pvalue, res.statistic, res.df, res.detectable_tv

The engine serves `requests` requests (continuous batching, max_batch running,
output lengths mixed so some windows are cut by a request's end) spread over
several prompts; the joint distribution of the first `tokens` emitted tokens
(token 1 from the prefill, the rest from speculative steps) is compared per prompt
with the exact target joint by a chi-square test (cells with expected count < 5
pooled); the per-prompt statistics add up (independent requests).

Models: "tabular" (second-order tables, engine/testing/tabular.py), "tiny" (a tiny Llama
pair, vocab 4, exact joint by enumerating the target) and "eagle" (the tiny target
with an EAGLE-style draft that reads its hidden states).

Power: detectable_tv is the smallest total-variation distance from the exact joint
that the test detects with probability 1/2 at level alpha, for the LEAST detectable
direction of change: among shifts of TV delta the chi-square noncentrality
n * sum(d^2 / p) is smallest, 4 n delta^2, when d is proportional to p (half the mass
scaled up, half down). So delta* = sqrt(lambda / (4 n)), lambda the noncentrality at
which ncx2(df, lambda) exceeds the level-alpha critical value half the time; any
concentrated change of that TV is detected more easily.

Negative controls (must fail; they show the check has power):
  all_scores   the goodput budget sized from ALL the scores (theory.budget.goodput_capacity_all_scores)
  token_prob   selection by the sampled token's own draft probability
  accept_all   every verified draft is accepted
  p_temp       the acceptance rule's p at 1.5 x the temperature (q at the right one)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import chi2, ncx2
from scipy.optimize import brentq

from engine.core import Engine, Seq
from engine.run import run
from engine.testing.tabular import TabularLM, random_table
from theory.policy import make_policy
from contract.workload import acceptance_rng

CONTROLS = ("", "all_scores", "token_prob", "accept_all", "p_temp")
MODELS = ("tabular", "tiny", "eagle")
STEP_TIMES = {  # seconds per step (batch, drafts, verified); all but "affine" are NOT affine in verified
    "knee": lambda b, d, v: 1.0 + 0.01 * b + 0.05 * np.maximum(np.asarray(v) - b, 0),
    "sqrt": lambda b, d, v: 1.0 + 0.3 * np.sqrt(np.asarray(v, dtype=float)),
    "flag": lambda b, d, v: 1.0 + 0.6 * (np.asarray(v) > 0),  # the example (a fixed cost to verify at all)
    "flag1": lambda b, d, v: 1.0 + 1.0 * (np.asarray(v) > 0),  # speculating pays only if > 1 token is expected
    "affine": lambda b, d, v: 1.0 + 0.01 * np.asarray(v),
}
PROMPTS = ([1, 2], [0], [2, 0, 1])
VOCAB = 3


@dataclass
class CheckResult:
    label: str
    temperature: float
    requests: int  # requests served (all prompts)
    tokens: int  # emitted tokens per request in the tested joint
    statistic: float  # chi-square, summed over prompts
    df: int  # degrees of freedom, summed over prompts
    pvalue: float
    detectable_tv: float  # TV from the exact joint detected half the time at alpha (least detectable direction)
    observed_tv: float  # mean over prompts of TV(empirical joint, exact joint) (includes sampling noise)
    verified: int  # draft tokens verified (speculation really ran)
    accepted: int


def detectable_tv(n: int, df: int, alpha: float = 1e-3, power: float = 0.5) -> float:
    """Smallest TV the chi-square test detects with `power` at level alpha (see module doc)."""
    crit = chi2.isf(alpha, df)
    lam = brentq(lambda x: ncx2.sf(crit, df, x) - power, 1e-9, 1e6)
    return float(np.sqrt(lam / (4.0 * n)))


def tempered(table: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log table / T) along the last axis, as engine.sampling.probs computes it."""
    x = np.log(np.clip(table, 1e-30, None)) / temperature
    x = np.exp(x - x.max(-1, keepdims=True))
    return x / x.sum(-1, keepdims=True)


def exact_joint_tabular(table: np.ndarray, prompt: list[int], n: int) -> np.ndarray:
    """Exact [V]*n joint of the next n tokens under a second-order table [V+1, V, V]."""
    v = table.shape[-1]
    prev = prompt[-2] if len(prompt) > 1 else v
    out = table[prev, prompt[-1]].copy()  # [V]
    for _ in range(1, n):
        nxt = np.zeros(out.shape + (v,))
        for idx in np.ndindex(*out.shape):
            seq = list(prompt) + list(idx)
            nxt[idx] = out[idx] * table[seq[-2] if len(seq) > 1 else v, seq[-1]]
        out = nxt
    return out


@torch.no_grad()
def exact_joint_model(model, prompt: list[int], n: int, temperature: float) -> np.ndarray:
    """Exact joint of the next n tokens of an HF causal LM at `temperature` (enumerates V^(n-1) prefixes)."""
    v = model.config.vocab_size
    out = np.ones(())
    for m in range(n):
        prefixes = list(np.ndindex(*([v] * m)))
        ids = torch.tensor([list(prompt) + list(p) for p in prefixes])
        logits = model(input_ids=ids).logits[:, -1].double()
        p = torch.softmax(logits / temperature, -1).numpy().reshape((v,) * m + (v,))
        out = out[..., None] * p
    return out


def _models(kind: str, seed: int, concentration: float = 0.7):
    if kind == "tabular":
        rng = np.random.default_rng(seed)
        p, q = random_table(VOCAB, rng, concentration), random_table(VOCAB, rng, concentration)
        return TabularLM(p), TabularLM(q), p
    from engine.testing.tiny import tiny_pair

    target, draft = tiny_pair(vocab=VOCAB, hidden=32, layers=2, seed=seed, init=0.6)
    if kind == "eagle":
        from engine.smollm.eagle import build_eagle

        torch.manual_seed(seed)
        draft = build_eagle(target, 1, torch.arange(VOCAB), init_layers=[1]).eval()
    return target, draft, None


def check(policy_cfg, temperature: float, *, estimator: str = "auto", requests: int = 6000, tokens: int = 4,
          seed: int = 0, max_batch: int = 32, model: str = "tabular", packed: bool = False,
          step_time: str = "knee", control: str = "", label: str = "", concentration: float = 0.7) -> CheckResult:
    """Run policy_cfg on exact models at temperature > 0; chi-square of the joint of `tokens` tokens."""
    if temperature <= 0:
        raise ValueError("the lossless check samples: temperature must be > 0")
    if control not in CONTROLS or model not in MODELS or step_time not in STEP_TIMES:
        raise ValueError(f"unknown control {control!r}, model {model!r} or step time {step_time!r}")
    target, draft, table = _models(model, seed, concentration)
    policy = make_policy(policy_cfg, STEP_TIMES[step_time], layout="packed" if packed else "padded")
    policy.all_scores_budget = control == "all_scores"
    eng = Engine(target, draft, policy, temperature=temperature,
                 estimator="token_prob" if control == "token_prob" else estimator,
                 accept_all=control == "accept_all", packed=packed,
                 p_temperature=1.5 * temperature if control == "p_temp" else None)
    extra_len = (0, 1, 3, 8)  # some requests end right after the tested tokens: windows cut by the end
    seqs = [Seq(i, PROMPTS[i % len(PROMPTS)], tokens + extra_len[(i // len(PROMPTS)) % 4], acceptance_rng(seed + 101, i))
            for i in range(requests)]
    res = run(eng, seqs, max_batch=max_batch)
    stat, df, tvs = 0.0, 0, []
    for j, prompt in enumerate(PROMPTS):
        if table is not None:
            exact = exact_joint_tabular(tempered(table, temperature), prompt, tokens)
        else:
            exact = exact_joint_model(target, prompt, tokens, temperature)
        outs = [s.out[:tokens] for s in res.seqs if s.id % len(PROMPTS) == j]
        counts = np.zeros(exact.shape)
        for o in outs:
            counts[tuple(o)] += 1
        expected = exact.ravel() * len(outs)
        obs = counts.ravel()
        small = expected < 5  # chi-square validity: pool the rare cells into one
        o2, e2 = np.append(obs[~small], obs[small].sum()), np.append(expected[~small], expected[small].sum())
        if e2[-1] == 0:
            o2, e2 = o2[:-1], e2[:-1]
        stat += float(((o2 - e2) ** 2 / e2).sum())
        df += e2.size - 1
        tvs.append(0.5 * np.abs(obs / len(outs) - exact.ravel()).sum())
    n_per_prompt = requests // len(PROMPTS)
    return CheckResult(label or policy_cfg.name, float(temperature), requests, tokens, stat, df,
                       float(chi2.sf(stat, df)), detectable_tv(n_per_prompt * len(PROMPTS), df),
                       float(np.mean(tvs)), int(res.stats.verified_tokens), int(res.stats.accepted_tokens))
