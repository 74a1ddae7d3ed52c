"""Would fusing a joining request's prefill into the verification pass pay today? (figures, not assertions)

    PYTHONPATH=$PWD python3 benchmarks/mixed_pass.py [--pair smollm|tiny|DIR] [--batch 8] [--tokens 3]
        [--prompt-len 96] [--ctx 128] [--repeats 3]

Through engine.forward over a static SlotKV (packed layout, one torch thread, CPU clock, fastest of
--repeats blocks, benchmarks/spec_ceiling.fastest_ms), the target's:
  verify     B rows of --tokens new tokens each after --ctx kept ones (a speculative step's pass)
  prefill    one request's --prompt-len prompt alone, head on its last token (today's admission pass)
  mixed      B - 1 rows of --tokens + one fresh row of the prompt in ONE pass (vLLM's mixed batch)
Fusing pays when mixed < verify + prefill. An HF model's slot passes are flat (engine/flat.py): every
token costs once in the linears, whatever the rows' lengths, and the head runs on the positions asked
for (`heads`) only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import slots as slm  # noqa: E402
from engine.forward import forward  # noqa: E402
from spec_ceiling import fastest_ms  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", default="smollm")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=3, help="new tokens per verified row (k + 1)")
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    for flag, value, low in (("--batch", args.batch, 2), ("--tokens", args.tokens, 1), ("--prompt-len", args.prompt_len, 1),
                             ("--ctx", args.ctx, 1), ("--repeats", args.repeats, 1)):
        if value < low:
            print(f"mixed_pass: error: {flag}: {value}: expected >= {low}", file=sys.stderr)
            return 2
    from engine.pairs import load_pair

    torch.set_num_threads(1)
    target, _, _ = load_pair(args.pair, "cpu", "auto", "auto")
    b, t, p = args.batch, args.tokens, args.prompt_len
    slots = list(range(b))
    kv = slm.SlotKV(b, args.ctx + p + t)
    forward(target, kv, [list(range(100, 100 + args.ctx)) for _ in slots], last_only=True, slots=slots, packed=True)
    kept = kv.length.clone()
    prompt = list(range(100, 100 + p))

    def verify():
        forward(target, kv, [[5] * t for _ in slots], slots=slots, packed=True)
        kv.length[:] = kept

    def prefill():
        forward(target, slm.SlotKV(1, p + 1), [prompt], last_only=True, slots=[0], packed=True)

    def mixed():
        kv.length[b - 1] = 0  # the last slot holds the joining request
        forward(target, kv, [[5] * t for _ in range(b - 1)] + [prompt], slots=slots, packed=True,
                heads=[t] * (b - 1) + [1])  # logits where the engine reads them: verified tokens, the prompt's last
        kv.length[:] = kept

    v, f, m = (fastest_ms(fn, args.repeats) for fn in (verify, prefill, mixed))
    print(f"# {args.pair}: target {next(target.parameters()).dtype}, batch {b}, {t} tokens per row, prompt {p}, "
          f"context {args.ctx}, 1 thread, CPU clock, fastest of {args.repeats}\n")
    print("| verify ms | prefill ms | verify + prefill ms | mixed ms | mixed / (verify + prefill) |")
    print("|---|---|---|---|---|")
    print(f"| {v:.1f} | {f:.1f} | {v + f:.1f} | {m:.1f} | {m / (v + f):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
