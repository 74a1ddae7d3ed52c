"""CPU kernel microbenchmark on SmolLM2-135M shapes (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/kernels.py [--rows 1,8,32,64] [--no-compile] [--random-layer]
        [--ctx 128] [--qlens 1,4] [--repeats 7]

One torch thread; every figure is microseconds per call on this process's CPU clock
(time.process_time: steady on a shared box), the fastest of --repeats blocks of calls after warm-up.
Rows = tokens in one pass (batch x tokens per request). Sections:
  1. linear  576 -> 1536 (one MLP projection)       fp32 | bf16 | bf16 prepacked (oneDNN)
  2. MLP     gate/up 576 -> 1536, SiLU, down -> 576  fp32 | bf16 | bf16 prepacked
  3. layer   one real SmolLM2 decoder layer (layer 0 of the prepared target; --random-layer: random
             weights, same config), input [rows, 1, 576] (decode: one token per row, no KV cache),
             fp32 | bf16 | bf16 with prepacked linears (engine/kernels.prepack_linears) |
             torch.compile(inductor, freezing=True) on bf16 (compiled per rows; slow to build)
  4. attention  q [rows, 9, q, 64] over a KV of --ctx positions (3 KV heads expanded, GQA), a ragged
             boolean 4D mask (each row its own valid length and causal tail): eager
             (matmul, masked_fill, softmax, matmul) vs F.scaled_dot_product_attention with the bool mask
             and with the same mask as an additive float mask, fp32 and bf16 (ratio < 1: SDPA faster)
"Prepacked" = weight reordered once with torch.ops.mkldnn._reorder_linear_weight, called through
torch.ops.mkldnn._linear_pointwise (what inductor's freezing pass emits for bf16 linears on CPU).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.kernels import packed_available, prepack_linears  # noqa: E402

HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM = 576, 1536, 9, 3, 64


def per_call_us(fn, repeats: int, budget_s: float = 0.05) -> float:
    """Fastest block of calls, us per call (CPU seconds of this process)."""
    with torch.inference_mode():
        for _ in range(3):
            fn()
        t0 = time.process_time()
        fn()
        one = max(time.process_time() - t0, 1e-6)
        n = max(1, min(200, int(budget_s / one)))
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(n):
                fn()
            best = min(best, (time.process_time() - t0) / n)
    return 1e6 * best


def table(title: str, cols: list[str], rows: dict) -> None:
    print(f"\n### {title} (us per call, 1 thread, CPU clock)\n")
    print("| rows | " + " | ".join(cols) + " | best / fp32 | best / bf16 |")
    print("|---|" + "---|" * (len(cols) + 2))
    for r, vals in rows.items():
        cells = [f"{v:.0f}" if v == v else "n/a" for v in vals]
        finite = [v for v in vals if v == v]
        print(f"| {r} | " + " | ".join(cells) + f" | {vals[0] / min(finite):.2f}x | {vals[1] / min(finite):.2f}x |",
              flush=True)


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = torch.nn.Linear(HIDDEN, INTER, bias=False)
        self.up_proj = torch.nn.Linear(HIDDEN, INTER, bias=False)
        self.down_proj = torch.nn.Linear(INTER, HIDDEN, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def variants(module: torch.nn.Module) -> dict:
    """fp32, bf16, bf16 prepacked copies of a module."""
    import copy

    out = {"fp32": copy.deepcopy(module).float().eval(), "bf16": copy.deepcopy(module).to(torch.bfloat16).eval()}
    if packed_available():
        out["bf16 prepacked"] = prepack_linears(copy.deepcopy(module).to(torch.bfloat16).eval())
    return out


def bench_module(title: str, module, make_input, rows_list, repeats) -> None:
    vs = variants(module)
    rows = {}
    for r in rows_list:
        vals = []
        for name in ("fp32", "bf16", "bf16 prepacked"):
            if name not in vs:
                vals.append(float("nan"))
                continue
            dtype = torch.float32 if name == "fp32" else torch.bfloat16
            x = make_input(r, dtype)
            vals.append(per_call_us(lambda m=vs[name], x=x: m(x), repeats))
        rows[r] = vals
    table(title, ["fp32", "bf16", "bf16 prepacked"], rows)


def load_layer(random: bool):
    """(decoder layer, rotary embedding, source) of SmolLM2-135M."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not random:
        try:
            from engine.smollm.draft import load_target
            from engine.smollm.prepare import DEFAULT_DIR

            m = load_target(DEFAULT_DIR)
            return m.model.layers[0], m.model.rotary_emb, m.config, "layer 0 of the prepared SmolLM2-135M"
        except Exception as e:  # noqa: BLE001 - fall back to random weights, and say why
            print(f"# prepared target not loadable ({e}); random weights", file=sys.stderr)
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=HEADS,
                      num_key_value_heads=KV_HEADS, num_hidden_layers=1, vocab_size=256)
    m = AutoModelForCausalLM.from_config(cfg).eval()
    return m.model.layers[0], m.model.rotary_emb, cfg, "random weights, SmolLM2-135M layer shapes"


def _layer_call(m, pe, h):
    out = m(h, position_embeddings=pe)
    return out[0] if isinstance(out, tuple) else out


def bench_layer(args, rows_list) -> None:
    import copy

    layer, rope, cfg, src = load_layer(args.random_layer)
    rope = rope.float()
    vs = variants(layer)
    cols = ["fp32", "bf16", "bf16 prepacked"] + ([] if args.no_compile else ["bf16 compiled+freezing"])
    rows = {}
    for r in rows_list:
        vals = []
        for name in cols:
            dtype = torch.float32 if name == "fp32" else torch.bfloat16
            x = torch.randn(r, 1, HIDDEN).to(dtype)
            pos = torch.zeros(r, 1, dtype=torch.long)
            cos, sin = rope(x.float(), pos)
            pe = (cos.to(dtype), sin.to(dtype))
            if name == "bf16 compiled+freezing":
                import torch._inductor.config as ic

                ic.freezing = True
                m = copy.deepcopy(layer).to(torch.bfloat16).eval()
                t0 = time.perf_counter()
                fn = torch.compile(functools.partial(_layer_call, m, pe), backend="inductor", dynamic=False)
                with torch.inference_mode():
                    fn(x)
                print(f"# compile rows {r}: {time.perf_counter() - t0:.1f} s wall", file=sys.stderr, flush=True)
                vals.append(per_call_us(lambda fn=fn, x=x: fn(x), args.repeats))
            else:
                m = vs[name]
                vals.append(per_call_us(lambda m=m, x=x, pe=pe: m(x, position_embeddings=pe), args.repeats))
        rows[r] = vals
    table(f"one decoder layer ({src}), input [rows, 1, 576]", cols, rows)


def ragged_mask(rows: int, q: int, ctx: int) -> torch.Tensor:
    """[rows, 1, q, ctx] bool: row i sees its first valid_i - q + j + 1 positions (valid_i varies)."""
    g = torch.Generator().manual_seed(0)
    valid = torch.randint(ctx // 2, ctx + 1, (rows,), generator=g)
    pos = torch.arange(ctx)
    lim = valid[:, None] - q + torch.arange(q)[None, :] + 1  # [rows, q]
    return (pos[None, None, :] < lim[:, :, None])[:, None]


def eager_attention(q, k, v, mask):
    s = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def bench_attention(args, rows_list) -> None:
    cols = ["eager", "SDPA bool", "SDPA additive", "SDPA bool gqa"]
    for qlen in [int(x) for x in args.qlens.split(",")]:
        print(f"\n### attention, q_len {qlen}, KV {args.ctx}, ragged 4D mask (us per call, 1 thread, CPU clock)\n")
        print("| rows | " + " | ".join(f"{d} {c}" for d in ("fp32", "bf16") for c in cols)
              + " | best SDPA / eager fp32 | best SDPA / eager bf16 |")
        print("|---|" + "---|" * (2 * len(cols) + 2))
        for r in rows_list:
            vals = []
            for dtype in (torch.float32, torch.bfloat16):
                q = torch.randn(r, HEADS, qlen, HEAD_DIM).to(dtype)
                k, v = (torch.randn(r, KV_HEADS, args.ctx, HEAD_DIM).to(dtype) for _ in range(2))
                ke, ve = (t.repeat_interleave(HEADS // KV_HEADS, 1) for t in (k, v))
                mask = ragged_mask(r, qlen, args.ctx)
                add = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
                ref = eager_attention(q, ke, ve, mask)
                got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
                tol = 1e-4 if dtype == torch.float32 else 3e-2
                assert torch.allclose(ref.float(), got.float(), atol=tol, rtol=tol), "sdpa != eager"
                sdpa = F.scaled_dot_product_attention
                vals += [per_call_us(lambda: eager_attention(q, ke, ve, mask), args.repeats),
                         per_call_us(lambda: sdpa(q, ke, ve, attn_mask=mask), args.repeats),
                         per_call_us(lambda: sdpa(q, ke, ve, attn_mask=add), args.repeats),
                         per_call_us(lambda: sdpa(q, k, v, attn_mask=mask, enable_gqa=True), args.repeats)]
            n = len(cols)
            print(f"| {r} | " + " | ".join(f"{x:.0f}" for x in vals)
                  + f" | {min(vals[1:n]) / vals[0]:.2f} | {min(vals[n + 1:]) / vals[n]:.2f} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,8,32,64")
    ap.add_argument("--qlens", default="1,4")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (tens of seconds per rows)")
    ap.add_argument("--random-layer", action="store_true", help="random weights instead of the prepared target")
    ap.add_argument("--sections", default="linear,mlp,layer,attention")
    args = ap.parse_args(argv)
    try:
        rows_list = [int(x) for x in args.rows.split(",")]
    except ValueError:
        print(f"kernels: error: --rows: {args.rows!r}: expected comma-separated integers", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    from engine.kernels import cpu_bf16_flags

    print(f"torch {torch.__version__}, 1 thread, CPU flags: {cpu_bf16_flags() or 'no bf16 flags'}; "
          f"oneDNN prepacked linear available: {packed_available()}")
    sec = set(args.sections.split(","))
    if "linear" in sec:
        bench_module("linear 576 -> 1536", torch.nn.Linear(HIDDEN, INTER, bias=False),
                     lambda r, d: torch.randn(r, HIDDEN).to(d), rows_list, args.repeats)
    if "mlp" in sec:
        bench_module("MLP 576 -> 1536 -> 576 (SiLU gate)", MLP(), lambda r, d: torch.randn(r, HIDDEN).to(d),
                     rows_list, args.repeats)
    if "layer" in sec:
        bench_layer(args, rows_list)
    if "attention" in sec:
        bench_attention(args, rows_list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
