"""engine/flat.py: a mixed slot pass (joining prompts beside rows with a past, one flat sequence) gives
each row what it gets alone: logits, features and the KV written into its slot.

Power: fp32, tolerance 1e-5 on logits of order 1; the negative controls (a decode mask that lets each
verified token see the next one, a prefill without its causal mask) move the logits by > 1e-3.
"""
import copy
import types

import pytest
import torch

from engine import flat
from engine import slots as slm
from engine.forward import _mixed, forward
from engine.testing.tiny import tiny_pair


pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONTEXT = {0: [10, 11, 12, 13, 14], 2: list(range(20, 29))}  # slots with a past
PASSES = {  # slot -> new tokens; slots 1, 3, 4 start fresh (3 and 4: two prompts of one length)
    "verify": {0: [5, 6, 7], 1: [1, 2, 3, 4], 2: [8], 3: [9, 8, 7, 6], 4: [3, 1, 4, 1, 5, 9, 2]},
    "decode": {0: [5], 1: [1, 2, 3, 4, 5, 6], 2: [8]},  # one token per past row: the T == 1 kernel
}


@pytest.fixture(scope="module")
def target():
    return tiny_pair(vocab=64, hidden=32, layers=2, seed=1)[0]  # 4 query heads on 2 KV heads



def alone(target, kv: slm.SlotKV, rows: dict):
    """Each row in its own pass (the slots.Plan path): logits [T, V], hidden [T, H] per slot."""
    out = {}
    for slot, toks in rows.items():
        logits, _, hid = forward(target, kv, [toks], slots=[slot], hidden=True)
        out[slot] = (logits[0], hid[0])
    return out


def mixed_vs_alone(target, rows: dict) -> float:
    """Largest |difference| between the mixed pass and the rows alone (logits where the engine reads
    them, hidden states, the KV kept in each slot)."""
    kv = slm.SlotKV(5, 32)
    forward(target, kv, [CONTEXT[s] for s in CONTEXT], last_only=True, slots=list(CONTEXT))
    ref_kv = copy.deepcopy(kv)
    slots = list(rows)
    assert _mixed(kv, slots, [rows[s] for s in slots])
    heads = [1 if s not in CONTEXT else len(rows[s]) for s in slots]
    logits, _, hid = forward(target, kv, [rows[s] for s in slots], slots=slots, hidden=True, heads=heads)
    ref = alone(target, ref_kv, rows)
    worst = 0.0
    for b, s in enumerate(slots):
        n, (ref_logits, ref_hid) = len(rows[s]), ref[s]
        want = ref_logits[-heads[b]:]
        worst = max(worst, float((logits[b, : heads[b]] - want).abs().max()), float((hid[b, :n] - ref_hid).abs().max()))
        assert (logits[b, heads[b]:] == 0).all()  # rows are padded with zeros past their heads
        for (k, v), (rk, rv) in zip(kv.row_state(s), ref_kv.row_state(s)):
            worst = max(worst, float((k - rk).abs().max()), float((v - rv).abs().max()))
    assert torch.equal(kv.length, ref_kv.length)
    return worst


@pytest.mark.parametrize("name", list(PASSES))
def test_mixed_pass_equals_rows_alone(target, name):
    assert mixed_vs_alone(target, PASSES[name]) < 1e-5


def test_negative_control_decode_sees_the_next_token(target, monkeypatch):
    """Negative control: each verified token may also see the one after it."""
    real = flat.FlatPlan.decode_mask

    def leaky(self, dtype):
        m = real(self, dtype)  # additive: 0 where allowed
        return torch.maximum(m, torch.roll(m, 1, -1))  # position p allowed -> p + 1 too
    monkeypatch.setattr(flat.FlatPlan, "decode_mask", leaky)
    assert mixed_vs_alone(target, PASSES["verify"]) > 1e-3


def test_negative_control_prefill_not_causal(target, monkeypatch):
    """Negative control: a joining prompt attends to its own later tokens."""
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def acausal(*args, is_causal=False, **kwargs):
        return sdpa(*args, **kwargs)
    monkeypatch.setattr(flat, "F", types.SimpleNamespace(scaled_dot_product_attention=acausal))
    assert mixed_vs_alone(target, PASSES["decode"]) > 1e-3


def test_uniform_passes_are_not_flat(target):
    """Only mixed passes go flat: all rows fresh (a prefill) or all with a past (a step) keep slots.Plan."""
    kv = slm.SlotKV(3, 16)
    assert not _mixed(kv, [0, 1], [[1, 2], [3]])
    kv.length[:] = torch.tensor([4, 0, 2])
    assert not _mixed(kv, [0, 2], [[1], [2]])
    assert _mixed(kv, [0, 1], [[1], [2, 3]])
