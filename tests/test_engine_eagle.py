"""A draft that reads the target's hidden states (EAGLE-style, engine/smollm/eagle.py) in the engine.

A tiny EAGLE draft is distilled in the fixture (a few seconds) on the tiny target's own greedy
rollouts, so that some drafts are accepted. Checked: greedy output token-identical to plain
decoding under several policies; the features the engine feeds the draft are exactly the
teacher-forced ones (every first and second draft equals a full-sequence recomputation).
"""
import numpy as np
import pytest
import torch

from engine.core import Engine, Seq
from engine.run import run
from engine.smollm.eagle import build_eagle, eagle_loss
from engine.smollm.shared import shift
from engine.testing.tiny import tiny_pair
from contract.config import PolicyConfig
from theory.policy import make_policy
from contract.workload import acceptance_rng

pytestmark = pytest.mark.usefixtures("torch_one_thread")
VOCAB, OUT_LEN = 64, 14


@pytest.fixture(scope="module")
def target():
    return tiny_pair(vocab=VOCAB, hidden=32, layers=2, seed=1)[0]


def features(target, ids):
    with torch.no_grad():
        return target.model(input_ids=ids).last_hidden_state


@pytest.fixture(scope="module")
def eagle(target):
    """Distilled on 64 greedy rollouts (8-token prompts + 40 tokens); full-vocabulary head."""
    torch.manual_seed(0)
    prompts = torch.randint(0, VOCAB, (64, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ids = target.generate(prompts, max_new_tokens=40, min_new_tokens=40, do_sample=False)
        f = features(target, ids)
        lp = torch.log_softmax(target.lm_head(f), -1)
    top_lp, top_ids = lp.topk(VOCAB, -1)
    mask = torch.ones(ids.shape, dtype=torch.bool)
    draft = build_eagle(target, 1, torch.arange(VOCAB), init_layers=[1])
    params = [p for p in draft.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    remap = torch.arange(VOCAB)
    untrained = eagle_loss(draft, ids, shift(f), mask, top_ids, top_lp, f, remap)[2]
    for step in range(400):
        b = torch.arange(16) + 16 * (step % 4)
        loss, _, _ = eagle_loss(draft, ids[b], shift(f[b]), mask[b], top_ids[b], top_lp[b], f[b], remap)
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = eagle_loss(draft, ids, shift(f), mask, top_ids, top_lp, f, remap)[2]
    draft.eval()
    return draft, untrained, trained


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(7)
    return [rng.integers(0, VOCAB, size=int(n)).tolist() for n in (1, 3, 9, 17, 5, 26, 2)]


def generate(target, draft, prompts, cfg, max_batch=3, mixed=False):
    eng = Engine(target, draft, make_policy(cfg, lambda b, d, v: 1.0 + 0.01 * b), mixed=mixed)
    seqs = [Seq(i, p, OUT_LEN, acceptance_rng(0, i)) for i, p in enumerate(prompts)]
    res = run(eng, seqs, max_batch)
    return [s.out for s in sorted(res.seqs, key=lambda s: s.id)], res


def test_distillation_learns(eagle):
    _, untrained, trained = eagle
    assert trained > untrained + 0.2  # teacher-forced greedy match on the training rollouts


@pytest.mark.parametrize("cfg", [PolicyConfig(name="fixed", k=3), PolicyConfig(name="tetris", k=2, extra=2),
                                 PolicyConfig(name="threshold", k=2, extra=2, tau=0.05),
                                 PolicyConfig(name="tetris", k=2, extra=1, disable_batch=2)],
                         ids=lambda c: f"{c.name}-k{c.k}-d{c.disable_batch}")
def test_eagle_lossless(target, eagle, prompts, cfg):
    draft = eagle[0]
    plain, _ = generate(target, draft, prompts, PolicyConfig(name="none"))
    out, res = generate(target, draft, prompts, cfg)
    assert out == plain
    assert res.stats.accepted_tokens > 0  # the draft is really used and sometimes right


def test_eagle_mixed_admission(target, eagle, prompts):
    """server.admission = "mixed": the draft's prefill (prompt + first token, with the target's features
    from the verification pass) rides in its next pass; same tokens, and as many accepted drafts."""
    draft, cfg = eagle[0], PolicyConfig(name="fixed", k=3)
    plain, _ = generate(target, draft, prompts, PolicyConfig(name="none"))
    _, sep = generate(target, draft, prompts, cfg)
    out, mix = generate(target, draft, prompts, cfg, mixed=True)
    assert out == plain
    assert mix.stats.mixed_prefills >= 2
    assert mix.stats.accepted_tokens == sep.stats.accepted_tokens > 0


def test_eagle_features_are_the_teacher_forced_ones(target, eagle, prompts, monkeypatch):
    """Each step's first draft comes from (x_T, f_{T-1}) with the context fed the target's
    features; the second from (d_1, g_T). Recomputed over the final sequence in one pass."""
    draft = eagle[0]
    seen = []
    orig = Engine._draft

    def spy(self, *args):
        out = orig(self, *args)
        if out[0].shape[1] >= 2:  # (near the requests' ends the engine drafts no deeper than they can emit)
            seen.extend((s, len(s.prompt) + len(s.out), out[0][i, :2].tolist()) for i, s in enumerate(self.seqs))
        return out

    monkeypatch.setattr(Engine, "_draft", spy)
    _, res = generate(target, draft, prompts, PolicyConfig(name="fixed", k=3))
    assert len(seen) > 20
    for s, t, (d1, d2) in seen:
        ids = torch.tensor([(s.prompt + s.out)[:t]])
        with torch.no_grad():
            f = features(target, ids)
            g = draft.model(inputs_embeds=draft.fuse(ids, shift(f))).last_hidden_state
            assert int(draft.lm_head(g[0, -1]).argmax()) == d1
            ids2 = torch.cat([ids, torch.tensor([[d1]])], 1)
            g2 = draft.model(inputs_embeds=draft.fuse(ids2, torch.cat([shift(f), g[:, -1:]], 1))).last_hidden_state
            assert int(draft.lm_head(g2[0, -1]).argmax()) == d2
