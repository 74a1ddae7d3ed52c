"""The engine's early-stopped drafting (policy.early_stop) changes nothing but the draft passes.

On the tiny pair, greedy and T = 1 (max-prob estimates, so the windows may depend on the drafts
only through the depths already drafted), a prefix-decided policy with early_stop = true emits
the same tokens and verifies the same windows, step by step, as with early_stop = false, while
drafting D = min(K, deepest emittable, max(L) + 1) deep (Policy.drafted_depth, what the simulator prices) and
fewer draft tokens in all. The stopping rule's own exactness is tests/test_theory_early_stop.py
(on the tiny pair's weak draft even stopping one depth early changes no window: TETRIS rarely
gives a request more than k there). This file checks the wiring; negative control: uniforms
narrowed by the naive slice u[:, :3D+1] instead of engine.core.narrow_uniforms (accept tests
and samples read other columns) are caught at T = 1. Power: any step whose windows or accepted
drafts differ, or any token, fails the test (20-26 steps per run).
"""
import numpy as np
import pytest

from contract.config import PolicyConfig
from contract.workload import acceptance_rng
from engine import core
from engine.core import Engine, Seq
from engine.run import run
from theory.policy import make_policy

from test_engine_greedy import pair, prompts  # noqa: F401 (fixtures: the tiny pair and 7 prompts)

pytestmark = pytest.mark.usefixtures("torch_one_thread")
OUT_LEN = 14


def step_time(batch, drafts, verified):
    return 1.0 + 0.05 * drafts + 0.01 * batch + 0.03 * np.asarray(verified)


def steps(pair, prompts, cfg, temperature):
    """(outputs, per-step (drafts, lengths, accepted)) of one run at max batch 4."""
    target, draft = pair
    policy = make_policy(cfg, step_time)
    eng = Engine(target, draft, policy, temperature=temperature)
    log, orig = [], eng.step

    def spy():
        usable = eng._usable()
        out = orig()
        log.append((out.drafts, out.lengths.tolist(), out.accepted.tolist(), usable))
        return out

    eng.step = spy
    res = run(eng, [Seq(i, p, OUT_LEN, acceptance_rng(0, i)) for i, p in enumerate(prompts)], 4)
    return [s.out for s in sorted(res.seqs, key=lambda s: s.id)], log


CASES = [(PolicyConfig(name="tetris", k=1, extra=3), 0.0),
         (PolicyConfig(name="tetris", k=2, extra=2, budget="goodput"), 0.0),
         (PolicyConfig(name="tetris", k=1, extra=3, budget="goodput"), 1.0),
         (PolicyConfig(name="threshold", k=1, extra=3, tau=0.3), 1.0)]


@pytest.mark.parametrize("cfg,temperature", CASES, ids=lambda x: getattr(x, "budget", x))
def test_early_stop_emits_and_verifies_the_same(pair, prompts, cfg, temperature):
    full_cfg = PolicyConfig(**{**cfg.__dict__, "early_stop": False})
    out_e, log_e = steps(pair, prompts, cfg, temperature)
    out_f, log_f = steps(pair, prompts, full_cfg, temperature)
    assert out_e == out_f
    assert [s[1:3] for s in log_e] == [s[1:3] for s in log_f]  # windows and accepted drafts, step by step
    k = cfg.k + cfg.extra
    assert all(s[0] == k for s in log_f)
    policy = make_policy(cfg, step_time)
    assert [s[0] for s in log_e] == [policy.drafted_depth(k, np.array(s[1]), s[3]) for s in log_e]
    if policy.checks_depth:
        assert sum(s[0] for s in log_e) < sum(s[0] for s in log_f)  # it does stop early


@pytest.mark.parametrize("case", [2, 3])
def test_negative_control_unaligned_uniforms_are_caught(pair, prompts, case, monkeypatch):
    """The naive slice u[:, :3D+1] tests drafts with the wrong uniforms at T > 0: caught."""
    cfg, temperature = CASES[case]
    out_f, log_f = steps(pair, prompts, PolicyConfig(**{**cfg.__dict__, "early_stop": False}), temperature)
    monkeypatch.setattr(core, "narrow_uniforms", lambda u, k, d: u[:, :3 * d + 1])
    out_e, log_e = steps(pair, prompts, cfg, temperature)
    assert out_e != out_f or [s[1:3] for s in log_e] != [s[1:3] for s in log_f]
