"""engine/kernels.prepack_linears: bf16 linears through oneDNN's packed weights give the same
outputs as plain bf16 nn.Linear within bf16 rounding.

Power: the tolerance (2% of the output's scale, i.e. a few bf16 ulps of accumulated rounding)
catches a wrong weight, a dropped bias or a transposed layout by far: the negative control packs
one linear with another's weight (same shape) and must fail the same check.
"""
import functools

import pytest
import torch

from engine import kernels

pytestmark = pytest.mark.skipif(not kernels.packed_available(), reason="no oneDNN bf16 packed linear on this CPU/torch")
TOL = 0.02


def rel_err(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                      num_hidden_layers=2, vocab_size=97)
    return LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def test_linear_with_bias_matches():
    torch.manual_seed(1)
    lin = torch.nn.Linear(48, 80).to(torch.bfloat16)
    x = torch.randn(3, 5, 48).to(torch.bfloat16)
    with torch.no_grad():
        ref = lin(x)
        kernels.prepack_linears(lin)
        got = lin(x)
    assert got.shape == ref.shape and rel_err(got, ref) < TOL


def test_model_logits_match_and_fp32_untouched():
    m = tiny_llama()
    ids = torch.randint(0, 97, (4, 9))
    with torch.no_grad():
        ref = m(ids).logits
        kernels.prepack_linears(m)
        got = m(ids).logits
    assert rel_err(got, ref) < TOL
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    f = torch.nn.Linear(8, 8)
    fwd = f.forward
    kernels.prepack_linears(f)
    assert f.forward == fwd  # fp32: left as it is


def test_negative_control_wrong_weight_is_caught():
    m = tiny_llama()
    ids = torch.randint(0, 97, (4, 9))
    with torch.no_grad():
        ref = m(ids).logits
        mlp = m.model.layers[0].mlp
        wrong = torch.ops.mkldnn._reorder_linear_weight(mlp.up_proj.weight)  # gate_proj packed with up's weight
        mlp.gate_proj.forward = functools.partial(kernels._packed_forward, mlp.gate_proj, wrong)
        got = m(ids).logits
    assert rel_err(got, ref) > TOL


def test_packed_rows_wrapper_reads_the_prepacked_weight():
    """engine.forward's packed-rows wrapper (packed verification) composes with prepacking: it
    calls kernels.linear, which uses the prepacked weight. Negative control: swapping in another
    linear's packed weight must change the output beyond the tolerance."""
    from engine import forward as fw

    torch.manual_seed(2)
    lin, other = torch.nn.Linear(48, 80).to(torch.bfloat16), torch.nn.Linear(48, 80).to(torch.bfloat16)
    model = torch.nn.Sequential(lin)
    kernels.prepack_linears(model)
    fw._pack_state(model)  # rebinds every Linear's forward to the packed-rows wrapper
    x = torch.randn(2, 3, 48).to(torch.bfloat16)
    with torch.no_grad():
        ref = torch.nn.functional.linear(x, lin.weight, lin.bias)
        assert rel_err(lin(x), ref) < TOL
        lin._tetris_packed_weight = torch.ops.mkldnn._reorder_linear_weight(other.weight.detach())
        assert rel_err(lin(x), ref) > TOL
