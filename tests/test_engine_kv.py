"""KV state after partial acceptance equals a fresh prefill of the kept text (both models)."""
import numpy as np
import pytest
import torch

from engine import kv as kvm
from engine.core import Engine, Seq
from engine.forward import forward
from engine.testing.tiny import tiny_pair
from contract.config import PolicyConfig
from theory.policy import make_policy
from contract.workload import acceptance_rng


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def fresh_state(model, tokens):
    _, st = forward(model, kvm.empty(1), [tokens])
    return kvm.row_state(st, 0)


def assert_same(state, ref):
    assert len(state) == len(ref)
    for (k, v), (rk, rv) in zip(state, ref):
        assert k.shape == rk.shape
        torch.testing.assert_close(k, rk, atol=1e-5, rtol=1e-4)  # float32 reordering noise only
        torch.testing.assert_close(v, rv, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_state_after_partial_acceptance(temperature):
    target, draft = tiny_pair(vocab=48, hidden=32, layers=2, seed=2)
    eng = Engine(target, draft, make_policy(PolicyConfig(name="tetris", k=2, extra=2)), temperature=temperature)
    rng = np.random.default_rng(1)
    eng.admit([Seq(i, rng.integers(0, 48, size=n).tolist(), 40, acceptance_rng(3, i)) for i, n in enumerate((4, 11, 7))])
    partial = 0
    for _ in range(6):
        out = eng.step()
        partial += int(np.sum((out.accepted > 0) & (out.accepted < out.lengths)))
        for row, s in enumerate(eng.seqs):
            text = s.prompt + s.out
            # the target has seen everything but the last emitted token; the draft lacks its pending tokens
            assert_same(kvm.row_state(eng.tkv, row), fresh_state(target, text[:-1]))
            assert_same(kvm.row_state(eng.dkv, row), fresh_state(draft, text[: len(text) - len(s.pending_draft)]))
            assert int(eng.tkv.length[row]) == len(text) - 1
    assert partial > 0  # the case under test happened


def test_compact_and_concat_keep_rows():
    target, _ = tiny_pair(vocab=32, hidden=32, layers=1, seed=0)
    _, a = forward(target, kvm.empty(2), [[1, 2, 3], [4]])
    _, a = forward(target, a, [[5, 6], [7, 8]])
    kvm.keep_from(a, 3, torch.tensor([1, 2]))  # row 0 drops token 6
    _, b = forward(target, kvm.empty(1), [[9, 9, 9, 9, 9, 9]])
    both = kvm.concat(a, b)
    assert both.length.tolist() == [4, 3, 6] and both.width == 6
    assert_same(kvm.row_state(both, 0), fresh_state(target, [1, 2, 3, 5]))
    assert_same(kvm.row_state(both, 1), fresh_state(target, [4, 7, 8]))
    assert_same(kvm.row_state(both, 2), fresh_state(target, [9] * 6))
    sub = kvm.select(both, torch.tensor([2, 0]))
    assert_same(kvm.row_state(sub, 1), fresh_state(target, [1, 2, 3, 5]))
