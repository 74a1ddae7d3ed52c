"""Prepacked bf16 linears on CPU (oneDNN): weights reordered once, not on every call.

    model = prepack_linears(model)   # in place; every bf16 nn.Linear on CPU now calls
                                     # torch.ops.mkldnn._linear_pointwise with a packed weight

What inductor's freezing pass emits for bf16 linears on CPU, without compiling. A linear whose
weight is not bf16 on CPU is left as it is. The original weight stays (state_dict, tied
embeddings and the draft's reads of the head are unchanged); the packed copy is one more copy
of the linear's weights. Measured by benchmarks/kernels.py.
"""
from __future__ import annotations

import functools

import torch


def cpu_bf16_flags() -> str:
    """The bf16 instruction flags of this CPU (lscpu's amx_bf16 / avx512_bf16), '' if none or unknown."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return ""
    flags = set(text.split("flags")[1].split("\n")[0].split()) if "flags" in text else set()
    return " ".join(f for f in ("amx_bf16", "avx512_bf16") if f in flags)


def packed_available() -> bool:
    """True when this torch has oneDNN's packed linear and bf16 support on this CPU."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
                and hasattr(ops, "_linear_pointwise") and bool(ops._is_mkldnn_bf16_supported()))
    except (RuntimeError, AttributeError):
        return False


def linear(lin: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """lin(x) through its packed weight where prepack_linears gave it one, else F.linear
    (engine.forward's packed-rows forward calls this, so both layers compose)."""
    packed = getattr(lin, "_tetris_packed_weight", None)
    if packed is None:
        return torch.nn.functional.linear(x, lin.weight, lin.bias)
    return _packed_forward(lin, packed, x)


def _packed_forward(lin: torch.nn.Linear, packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.bfloat16 or x.device.type != "cpu":
        return torch.nn.functional.linear(x, lin.weight, lin.bias)
    lead = x.shape[:-1]
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]).contiguous(), packed, lin.bias, "none", [], "")
    return y.reshape(*lead, y.shape[-1])


def prepack_linears(model: torch.nn.Module) -> torch.nn.Module:
    """Replace the forward of every bf16 CPU nn.Linear of `model` (in place) by oneDNN's packed
    linear; returns `model`. A no-op where packed_available() is False."""
    if not packed_available():
        return model
    for mod in model.modules():
        is_linear = isinstance(mod, torch.nn.Linear)
        if not (is_linear or getattr(mod, "prepackable", False)):  # prepackable: a module whose own
            continue  # forward calls linear(self, x) (weight [out, in], bias), e.g. the SmolLM2 draft's head
        if mod.weight.dtype == torch.bfloat16 and mod.weight.device.type == "cpu":
            with torch.no_grad():
                packed = torch.ops.mkldnn._reorder_linear_weight(mod.weight.detach())
            mod._tetris_packed_weight = packed
            if is_linear and getattr(mod, "_tetris_pack", None) is None:  # else engine.forward's wrapper calls linear()
                mod.forward = functools.partial(_packed_forward, mod, packed)
    return model
