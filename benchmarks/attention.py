"""The attention kernel of a ragged slot pass, four ways (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/attention.py [--batch 8] [--tokens 1,2,3,4,5] [--ctx 180]
        [--dtype bfloat16|float32] [--repeats 3]

SmolLM2-135M's shapes (9 query heads, 3 KV heads, head dim 64). Per row b, T new queries after a
past of 100..ctx kept keys, over key/value views of a static slot buffer (strided along positions,
as engine/slots.py hands them to attention), with the per-row additive mask of slots.Plan:
  matmuls     two grouped matmuls + float32 softmax (the engine's kernel until 2026-12-03)
  sdpa-gqa    F.scaled_dot_product_attention(mask, enable_gqa=True)
  sdpa-fold   the g query heads of each KV head folded into the query axis (engine/attention.py)
  repeat-kv   transformers' sdpa path with a 4D mask: KV heads repeated, then sdpa
One torch thread, CPU clock; microseconds per call, the fastest of --repeats blocks of 20 calls
(benchmarks/spec_ceiling.fastest_ms). "max err" is against sdpa-gqa.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spec_ceiling import fastest_ms  # noqa: E402

HEADS, KV_HEADS, DIM = 9, 3, 64


def kernels(q, k, v, mask):
    """name -> fn() -> [B, H, T, D] for one pass's inputs."""
    b, h, t, d = q.shape
    g = h // k.shape[1]
    folded = mask[:, :, None].expand(b, 1, g, t, mask.shape[-1]).reshape(b, 1, g * t, -1)

    def matmuls():
        s = torch.matmul(q.reshape(b, -1, g * t, d), k.contiguous().transpose(-1, -2))
        s = s.view(b, -1, g, t, s.shape[-1]).mul_(d ** -0.5) + mask[:, :, None]
        p = torch.softmax(s, dim=-1, dtype=torch.float32).to(v.dtype).view(b, -1, g * t, s.shape[-1])
        return torch.matmul(p, v).view(b, h, t, d)

    return {
        "matmuls": matmuls,
        "sdpa-gqa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True),
        "sdpa-fold": lambda: F.scaled_dot_product_attention(q.reshape(b, -1, g * t, d), k, v,
                                                            attn_mask=folded).view(b, h, t, d),
        "repeat-kv": lambda: F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                            attn_mask=mask),
    }


def inputs(batch: int, t: int, ctx: int, dtype, gen):
    width = ctx + t
    kbuf = torch.randn(batch, KV_HEADS, width + 64, DIM, generator=gen).to(dtype)
    vbuf = torch.randn(batch, KV_HEADS, width + 64, DIM, generator=gen).to(dtype)
    q = torch.randn(batch, HEADS, t, DIM, generator=gen).to(dtype)
    past = torch.randint(min(100, ctx), ctx + 1, (batch,), generator=gen)
    allowed = torch.arange(width)[None, None] <= (past[:, None] + torch.arange(t)[None])[:, :, None]
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
    return q, kbuf[:, :, :width], vbuf[:, :, :width], mask


def parse_ints(flag: str, text: str, low: int) -> list[int]:
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < low:
        raise ValueError(f"{flag}: {text!r}: expected comma-separated integers >= {low}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", default="8")
    ap.add_argument("--tokens", default="1,2,3,4,5")
    ap.add_argument("--ctx", default="180")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--repeats", default="3")
    args = ap.parse_args(argv)
    try:
        (batch,), tokens, (ctx,), (repeats,) = (parse_ints("--batch", args.batch, 1), parse_ints("--tokens", args.tokens, 1),
                                                 parse_ints("--ctx", args.ctx, 1), parse_ints("--repeats", args.repeats, 1))
    except ValueError as err:
        print(f"attention: error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    names = list(kernels(*inputs(1, 1, 2, dtype, gen)))
    print(f"# attention of a ragged slot pass: batch {batch}, {HEADS}/{KV_HEADS} heads, dim {DIM}, past <= {ctx}, "
          f"{args.dtype}, 1 thread, CPU clock, us per call (fastest of {repeats})\n")
    print("| T | " + " | ".join(names) + " | max err |")
    print("|---" * (len(names) + 2) + "|")
    for t in tokens:
        fns = kernels(*inputs(batch, t, ctx, dtype, gen))
        ref = fns["sdpa-gqa"]().float()
        err = max(float((fn().float() - ref).abs().max()) for fn in fns.values())
        us = [fastest_ms(lambda fn=fn: [fn() for _ in range(20)], repeats) * 50 for fn in fns.values()]
        print(f"| {t} | " + " | ".join(f"{x:.0f}" for x in us) + f" | {err:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
