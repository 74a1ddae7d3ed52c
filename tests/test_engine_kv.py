"""KV state after partial acceptance equals a fresh prefill of the kept text (both models); the
static slot cache (engine/slots.py): join into a free slot, leave, rollback by length, no copies.

Power: each state is compared with a fresh prefill of the text the request kept, per layer, at
float32 noise tolerance (1e-5); a stale token, a wrong position or another row's data changes the
keys far beyond it (the negative controls below show the comparison fails when rollback is skipped
and that the data_ptr check sees a re-allocation)."""
import numpy as np
import pytest
import torch

from engine import kv as kvm
from engine import slots as slm
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
            assert_same(eng.tkv.row_state(s.slot), fresh_state(target, text[:-1]))
            assert_same(eng.dkv.row_state(s.slot), fresh_state(draft, text[: len(text) - len(s.pending_draft)]))
            assert int(eng.tkv.length[s.slot]) == len(text) - 1
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


def _ptrs(kv: slm.SlotKV) -> list[int]:
    return [b.data_ptr() for layer in kv.layers for b in layer]


def test_slot_join_leave_rollback_no_copy():
    target, _ = tiny_pair(vocab=32, hidden=32, layers=2, seed=0)
    kv = slm.SlotKV(slots=4, capacity=32)
    forward(target, kv, [[1, 2, 3], [4, 5]], slots=[0, 1])  # prefill two requests
    ptrs = _ptrs(kv)
    forward(target, kv, [[6, 7, 8], [9]], slots=[0, 1])  # a ragged step
    kv.rollback(torch.tensor([0]), torch.tensor([4]))  # row 0 rejects 7, 8
    assert kv.length[:2].tolist() == [4, 3]
    assert_same(kv.row_state(0), fresh_state(target, [1, 2, 3, 6]))
    assert_same(kv.row_state(1), fresh_state(target, [4, 5, 9]))
    before = [(k[:2].clone(), v[:2].clone()) for k, v in kv.layers]
    kv.free(0)  # request in slot 0 leaves; a new one joins into the lowest free slot
    assert slm.lowest_free({1}, 2) == [0, 2]
    forward(target, kv, [[10, 11]], slots=[0])
    assert _ptrs(kv) == ptrs  # no re-allocation, no re-batching copy
    for (k, v), (k0, v0) in zip(kv.layers, before):  # slot 1 untouched, bit for bit
        assert torch.equal(k[1], k0[1]) and torch.equal(v[1], v0[1])
    assert_same(kv.row_state(0), fresh_state(target, [10, 11]))
    forward(target, kv, [[12], [13, 14]], slots=[1, 0])  # rows in any slot order
    assert_same(kv.row_state(1), fresh_state(target, [4, 5, 9, 12]))
    assert_same(kv.row_state(0), fresh_state(target, [10, 11, 13, 14]))
    assert _ptrs(kv) == ptrs


def test_slot_span_with_free_slot_inside():
    """Rows in slots 0 and 2 with slot 1 free: the pass spans 0..2, the free slot keeps length 0."""
    target, _ = tiny_pair(vocab=32, hidden=32, layers=1, seed=1)
    kv = slm.SlotKV(slots=3, capacity=16)
    logits0, _ = forward(target, kv, [[1, 2], [3, 4, 5]], slots=[0, 2], last_only=True)
    logits, _ = forward(target, kv, [[6], [7]], slots=[2, 0], last_only=True)
    assert kv.length.tolist() == [3, 0, 4]
    assert_same(kv.row_state(2), fresh_state(target, [3, 4, 5, 6]))
    ref, _ = forward(target, kvm.empty(1), [[1, 2, 7]], last_only=True)
    torch.testing.assert_close(logits[1], ref[0], atol=1e-5, rtol=1e-4)


def test_negative_controls_rollback_and_pointer_check():
    """Skipping the rollback leaves the rejected tokens visible (the fresh-prefill comparison fails);
    growing past the capacity re-allocates (the data_ptr check would see it)."""
    target, _ = tiny_pair(vocab=32, hidden=32, layers=1, seed=0)
    kv = slm.SlotKV(slots=2, capacity=8)
    forward(target, kv, [[1, 2, 3]], slots=[0])
    forward(target, kv, [[4, 5]], slots=[0])  # no rollback: 5 should have been rejected
    with pytest.raises(AssertionError):
        assert_same(kv.row_state(0), fresh_state(target, [1, 2, 3, 4]))
    ptrs = _ptrs(kv)
    forward(target, kv, [[6] * 6], slots=[0])  # 5 + 6 > 8 positions: grows
    assert _ptrs(kv) != ptrs and kv.grows == 1
    assert_same(kv.row_state(0), fresh_state(target, [1, 2, 3, 4, 5] + [6] * 6))


@pytest.mark.parametrize("hidden", [False, True])
def test_slot_rows_out_of_slot_order_packed(hidden):
    """Rows given in another order than their slots, ragged, packed: the same logits as padded.
    Power: before the fix the packed LM head ran on the rows re-ordered to the given order while its
    real-row index was the pass's (slot) order, so real positions of one row came out as zeros
    (this test failed with hidden=True: the decoder + head path)."""
    target, _ = tiny_pair(vocab=32, hidden=32, layers=1, seed=3)
    outs = []
    for packed in (False, True):
        kv = slm.SlotKV(slots=3, capacity=16)
        forward(target, kv, [[1, 2], [3, 4, 5], [6]], slots=[0, 1, 2])
        out = forward(target, kv, [[7], [8, 9, 10], [11, 12]], slots=[2, 0, 1], packed=packed, hidden=hidden)
        outs.append(out[0])
    for b, n in enumerate((1, 3, 2)):
        torch.testing.assert_close(outs[1][b, :n], outs[0][b, :n], atol=1e-5, rtol=1e-4)


def _run_finishing(compact: bool):
    """Five requests of different output lengths through four slots, stepping by hand: per step the
    sorted slots of the running rows, and every row's KV compared with a fresh prefill of its text."""
    target, draft = tiny_pair(vocab=48, hidden=32, layers=2, seed=2)
    eng = Engine(target, draft, make_policy(PolicyConfig(name="fixed", k=2)), slots=4, capacity=64, compact=compact)
    rng = np.random.default_rng(4)
    seqs = [Seq(i, rng.integers(0, 48, size=n).tolist(), out, acceptance_rng(3, i))
            for i, (n, out) in enumerate(((5, 30), (9, 4), (6, 20), (7, 8), (4, 12)))]
    eng.admit(seqs[:4])
    spans = []
    while eng.seqs:
        eng.step()
        if len(eng.seqs) < 4 and seqs[4].slot == -1 and not seqs[4].done:
            eng.admit([seqs[4]])
        spans.append(sorted(s.slot for s in eng.seqs))
        for s in eng.seqs:
            text = s.prompt + s.out
            assert_same(eng.tkv.row_state(s.slot), fresh_state(target, text[:-1]))
            assert_same(eng.dkv.row_state(s.slot), fresh_state(draft, text[: len(text) - len(s.pending_draft)]))
    return spans


def test_finished_rows_compacted_into_a_dense_span():
    """When requests finish, the highest slots' requests move into the holes (SlotKV.move): the running
    rows are always slots 0..n-1, and each moved request's KV (both models) is still its text's prefill.
    Negative control: compact=False leaves holes (a span with empty rows, as before this change)."""
    spans = _run_finishing(compact=True)
    assert all(sp == list(range(len(sp))) for sp in spans)
    holes = _run_finishing(compact=False)
    assert any(sp != list(range(len(sp))) for sp in holes)


def test_slot_move_copies_the_kept_kv():
    target, _ = tiny_pair(vocab=32, hidden=32, layers=2, seed=0)
    kv = slm.SlotKV(slots=3, capacity=16)
    forward(target, kv, [[1, 2, 3], [4, 5], [6, 7, 8, 9]], slots=[0, 1, 2])
    kv.free(0)
    kv.move(2, 0)
    assert kv.length.tolist() == [4, 2, 0]
    assert_same(kv.row_state(0), fresh_state(target, [6, 7, 8, 9]))
    logits, _ = forward(target, kv, [[10], [11]], slots=[0, 1], last_only=True)  # the moved row decodes on
    ref, _ = forward(target, kvm.empty(1), [[6, 7, 8, 9, 10]], last_only=True)
    torch.testing.assert_close(logits[0], ref[0], atol=1e-5, rtol=1e-4)
