"""engine/forward.py: one batched forward of ragged tokens; the packed layout computes the linear
layers on the real rows only and leaves exact zeros in the padding rows."""
import copy
import types

import pytest
import torch

from engine import kv as kvm
from engine.forward import forward
from engine.testing.tiny import tiny_pair


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def pair():
    return tiny_pair(vocab=64, hidden=32, layers=2, seed=1)  # as tests/test_engine_greedy.py


def test_packed_forward_matches_padded_on_real_positions(pair):
    target, _ = pair
    rows = [[5, 6, 7, 8, 9], [1], [2, 3, 4]]
    _, st = forward(target, kvm.empty(3), [[10, 11], [12, 13, 14], [15]])  # ragged context first
    a, sa = forward(target, st, rows)
    b, sb = forward(target, st, rows, packed=True)
    for i, r in enumerate(rows):
        torch.testing.assert_close(a[i, : len(r)], b[i, : len(r)], rtol=1e-5, atol=1e-5)
        assert (b[i, len(r):] == 0).all()  # padding positions are not computed
    assert torch.equal(sa.valid, sb.valid)
    for (ka, va), (kb, vb) in zip(sa.layers, sb.layers):
        m = sa.valid[:, None, :, None]
        torch.testing.assert_close(ka * m, kb * m, rtol=1e-5, atol=1e-5)


def packs_on_its_own(orig, twin, rows) -> bool:
    """Every nn.Linear of twin is bound to itself and to twin's PackState (not orig's), and a packed
    forward of twin gives orig's logits with zeros in the padding rows."""
    lins = [m for m in twin.modules() if isinstance(m, torch.nn.Linear)]
    bound = all(getattr(m.forward, "__self__", None) is m and m._tetris_pack is twin._tetris_pack for m in lins)
    if not bound or twin._tetris_pack is orig._tetris_pack:
        return False
    a, _ = forward(orig, kvm.empty(len(rows)), rows, packed=True)
    b, _ = forward(twin, kvm.empty(len(rows)), rows, packed=True)
    return torch.equal(a, b) and bool((b[1, len(rows[1]):] == 0).all())


def test_packed_state_follows_a_deepcopy(pair):
    """Each packed model binds its nn.Linear forwards to its own PackState (types.MethodType), so a
    deepcopy packs with the copy's state and the original is left untouched (no module global)."""
    target, _ = pair
    rows = [[5, 6, 7], [1]]
    forward(target, kvm.empty(2), rows, packed=True)  # binds the original
    twin = copy.deepcopy(target)
    assert packs_on_its_own(target, twin, rows)
    assert target._tetris_pack.rows is None and twin._tetris_pack.rows is None  # cleared after each forward


def test_packed_state_negative_control(pair):
    """Negative control: a copy whose linears still call the original's (bound with functools.partial,
    which a deepcopy does not rebind) is caught."""
    import functools

    from engine.forward import _packed_linear_forward
    target, _ = pair
    rows = [[5, 6, 7], [1]]
    forward(target, kvm.empty(2), rows, packed=True)
    twin = copy.deepcopy(target)
    for orig, m in zip(target.modules(), twin.modules()):
        if isinstance(m, torch.nn.Linear):
            m.forward = functools.partial(_packed_linear_forward, orig)
    assert not packs_on_its_own(target, twin, rows)


def one_token_pass_vs_alone(target) -> float:
    """Equal rows (same past length), one new token each: the unmasked fold of engine/attention.py.
    Largest |difference| of the logits against each row in its own pass."""
    from engine import slots as slm

    ctx = [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]]
    kv = slm.SlotKV(3, 16)
    forward(target, kv, ctx, last_only=True, slots=[0, 1, 2])
    ref = copy.deepcopy(kv)
    logits, _ = forward(target, kv, [[1], [2], [3]], slots=[0, 1, 2])
    alone = [forward(target, ref, [[t]], slots=[b])[0][0] for b, t in enumerate([1, 2, 3])]
    return max(float((logits[b] - a).abs().max()) for b, a in enumerate(alone))


def test_one_token_pass_folds_without_mask(pair, monkeypatch):
    """Plain decoding of equal rows: every query sees every key; each KV head's query heads folded."""
    from engine import attention as att

    target, _ = pair
    calls = []
    sdpa = att.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((q.shape[1], attn_mask is None))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)
    monkeypatch.setattr(att, "F", types.SimpleNamespace(scaled_dot_product_attention=spy))
    assert one_token_pass_vs_alone(target) < 1e-5
    assert (2, True) in calls  # the batched pass: 2 KV heads, no mask


def test_one_token_fold_negative_control(pair, monkeypatch):
    """Negative control: in the batched pass, query heads folded onto the wrong KV heads (groups
    reversed) are caught (the rows alone keep the right ones)."""
    from engine import attention as att

    target, _ = pair
    sdpa = att.F.scaled_dot_product_attention

    def swapped(q, k, v, attn_mask=None, **kw):
        if q.shape[0] > 1:
            k, v = k.flip(1), v.flip(1)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)
    monkeypatch.setattr(att, "F", types.SimpleNamespace(scaled_dot_product_attention=swapped))
    assert one_token_pass_vs_alone(target) > 1e-3
