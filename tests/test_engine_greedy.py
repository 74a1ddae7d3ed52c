"""Greedy speculative decoding is lossless: token-identical to plain decoding and to HF generate()."""
import numpy as np
import pytest
import torch

from engine.core import Engine, Seq
from engine.run import run
from engine.testing.tiny import tiny_pair
from contract.config import PolicyConfig
from theory.policy import make_policy
from contract.workload import acceptance_rng

OUT_LEN = 14


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab=64, hidden=32, layers=2, seed=1)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 64, size=int(n)).tolist() for n in (1, 3, 9, 17, 5, 26, 2)]


def step_time(batch, drafts, verified):  # a cost model for dsd / goodput budgets
    return 1.0 + 0.01 * batch + 0.002 * np.asarray(verified)


def generate(pair, prompts, policy_cfg, max_batch=3, arrivals=None, estimator="auto", packed=False, mixed=False):
    target, draft = pair
    eng = Engine(target, draft, make_policy(policy_cfg, step_time), estimator=estimator, packed=packed, mixed=mixed)
    seqs = [Seq(i, p, OUT_LEN, acceptance_rng(0, i)) for i, p in enumerate(prompts)]
    if arrivals is not None:
        for s, a in zip(seqs, arrivals):
            s.arrival_s = float(a)
    res = run(eng, seqs, max_batch, arrivals_in_steps=arrivals is not None)
    assert all(len(s.out) == OUT_LEN for s in res.seqs)
    return [s.out for s in sorted(res.seqs, key=lambda s: s.id)], res


@pytest.fixture(scope="module")
def plain(pair, prompts):
    return generate(pair, prompts, PolicyConfig(name="none"))[0]


def test_plain_matches_hf_generate(pair, prompts, plain):
    target, _ = pair
    for p, out in zip(prompts, plain):
        ref = target.generate(torch.tensor([p]), max_new_tokens=OUT_LEN, min_new_tokens=OUT_LEN, do_sample=False)
        assert out == ref[0, len(p):].tolist()


POLICIES = [
    PolicyConfig(name="fixed", k=3),
    PolicyConfig(name="tetris", k=0, extra=2),  # C = 0: every request decodes one token
    PolicyConfig(name="tetris", k=1, extra=3),  # C = k*N below K*N
    PolicyConfig(name="tetris", k=3, extra=0),  # C = k*N = K*N (no choice left)
    PolicyConfig(name="tetris", k=2, extra=2, budget="goodput"),  # C sized by goodput, up to K*N
    PolicyConfig(name="threshold", k=2, extra=2, tau=0.2),
    PolicyConfig(name="dsd", max_k=4, interval=3),
    PolicyConfig(name="oracle", k=2, extra=2),
    PolicyConfig(name="tetris", k=2, extra=1, disable_batch=2),  # K = 0 while 3 run, then K = 3
]


@pytest.mark.parametrize("cfg", POLICIES, ids=lambda c: f"{c.name}-k{c.k}-e{c.extra}-{c.budget}-d{c.disable_batch}")
def test_speculative_equals_plain(pair, prompts, plain, cfg):
    out, res = generate(pair, prompts, cfg)
    assert out == plain
    if cfg.name in ("fixed", "tetris") and cfg.k > 0:
        assert res.stats.verified_tokens > 0  # speculation really ran
        assert cfg.k == 0 or res.stats.accepted_tokens > 0  # and some drafts passed (multi-token steps)
    if cfg.name == "tetris" and cfg.budget == "fixed":
        assert res.stats.verified_tokens <= cfg.k * res.stats.request_steps  # never above C = k*N


def test_calibrated_estimator(pair, prompts, plain):
    out, res = generate(pair, prompts, PolicyConfig(name="tetris", k=1, extra=2), estimator="calibrated")
    assert out == plain


def test_joining_mid_run(pair, prompts, plain):
    arrivals = [0, 0, 2, 3, 3, 9, 15]  # in decoding steps
    out, res = generate(pair, prompts, PolicyConfig(name="tetris", k=2, extra=1), max_batch=4, arrivals=arrivals)
    assert out == plain
    assert res.stats.num_steps > 0


@pytest.mark.parametrize("cfg", [PolicyConfig(name="fixed", k=3), PolicyConfig(name="tetris", k=1, extra=3)],
                         ids=lambda c: c.name)
def test_packed_layout_equals_plain(pair, prompts, plain, cfg):
    """engine.verify_layout = "packed": linear layers on real tokens only; same tokens out."""
    out, res = generate(pair, prompts, cfg, packed=True)
    assert out == plain
    assert res.stats.accepted_tokens > 0


def test_bfloat16_draft_with_float32_target_is_lossless(pair, prompts, plain):
    """engine.draft_dtype = "bfloat16": only the drafts change; the target decides every token."""
    import copy
    target, draft = pair
    half = copy.deepcopy(draft).to(torch.bfloat16)
    out, res = generate((target, half), prompts, PolicyConfig(name="tetris", k=2, extra=1), packed=True)
    assert out == plain
    assert res.stats.accepted_tokens > 0


def test_admission_passes_counted(pair, prompts):
    """StepStats.prefill_calls counts the engine's batched prefill forwards (the simulator's
    cost.prefill_call_s is fitted per pass): plain decoding of 7 equal-length requests at batch 3
    admits 3, 3, 1 (3 passes); arrivals one per step admit one request per pass."""
    _, res = generate(pair, prompts, PolicyConfig(name="none"))
    assert res.stats.prefill_calls == 3
    assert [tok for tok, _ in res.prefill_log] == [sum(map(len, prompts[:3])), sum(map(len, prompts[3:6])), len(prompts[6])]
    assert sum(sec for _, sec in res.prefill_log) == pytest.approx(res.stats.prefill_s)
    _, res = generate(pair, prompts, PolicyConfig(name="none"), arrivals=[0, 20, 40, 60, 80, 100, 120])
    assert res.stats.prefill_calls == 7


ARRIVALS = [0, 0, 2, 3, 3, 9, 15]  # in decoding steps: most requests join a running batch


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("cfg", [PolicyConfig(name="none"), PolicyConfig(name="fixed", k=3),
                                 PolicyConfig(name="tetris", k=1, extra=3), PolicyConfig(name="oracle", k=2, extra=2)],
                         ids=lambda c: c.name)
def test_mixed_admission_equals_plain(pair, prompts, plain, cfg, packed):
    """server.admission = "mixed": joining prompts ride in the verification pass (engine/flat.py), their
    draft prefill in the next draft pass; same tokens out, and the joins really were mixed."""
    out, res = generate(pair, prompts, cfg, max_batch=4, arrivals=ARRIVALS, packed=packed, mixed=True)
    assert out == plain
    assert res.stats.mixed_prefills >= 4 and res.stats.prefill_calls + res.stats.mixed_prefills <= len(prompts)


def test_mixed_admission_drafts_as_separate(pair, prompts):
    """The draft sees the same inputs either way: a fixed k accepts exactly as many drafts per request
    (a draft prefill lost or misplaced in the draft's first pass would change them)."""
    cfg = PolicyConfig(name="fixed", k=3)
    _, sep = generate(pair, prompts, cfg, max_batch=4, arrivals=ARRIVALS, packed=True)
    _, mix = generate(pair, prompts, cfg, max_batch=4, arrivals=ARRIVALS, packed=True, mixed=True)
    assert mix.stats.mixed_prefills >= 4
    assert mix.stats.accepted_tokens == sep.stats.accepted_tokens > 0
