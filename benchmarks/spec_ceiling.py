"""How much can speculation win at a batch size on this machine? The step-cost ceiling (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/spec_ceiling.py [--pair smollm|tiny|DIR] [--batches 1,8,16,32]
        [--tokens 1,2,3,4,5] [--ctx 128] [--sweep SWEEP.json] [--alpha 0.6] [--repeats 5]

Measures, one torch thread, this process's CPU clock, fastest of --repeats blocks:
  F(B, t)  the target's verification forward through the engine (engine.forward over a static
           SlotKV at context --ctx, packed layout): B rows of t new tokens each, head on every token;
  L(B, t)  the matmul floor of that forward: the same pass's nn.Linear calls alone (every linear of
           the target at its input shape [B*t, in], prepacked bf16 where the engine prepacks);
  D(B)     one draft forward (one new token per row, head on it, argmax).
Then, for fixed k with E(k) tokens emitted per request-step, the speedup over plain decoding
if a step cost only its forwards (no sampling, bookkeeping, admission):
  engine ceiling  = E(k) * F(B, 1) / (F(B, k + 1) + k * D(B))
  matmul ceiling  = E(k) * L(B, 1) /  L(B, k + 1)          (even with free drafting and free glue)
E(k): the measured acceptance length of fixed k in --sweep (engine_sweep.py JSON, same pair and
greedy), else the i.i.d. value 1 + a + ... + a^k at --alpha. A speedup goal above the matmul ceiling
cannot be met on this machine by software outside the matmuls.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import slots as slm  # noqa: E402
from engine.forward import forward  # noqa: E402
from engine.kernels import linear  # noqa: E402


def fastest_ms(fn, repeats: int, budget_s: float = 0.2) -> float:
    """Fastest per-call CPU milliseconds over `repeats` blocks of about budget_s each."""
    fn()
    t0 = time.process_time()
    fn()
    n = max(1, int(budget_s / max(time.process_time() - t0, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e3


def linear_shapes(model) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear) or getattr(m, "prepackable", False)]


def verify_cost(target, b: int, t: int, ctx: int, repeats: int) -> float:
    kv = slm.SlotKV(b, ctx + 16)
    slots = list(range(b))
    forward(target, kv, [list(range(100, 100 + ctx)) for _ in slots], last_only=True, slots=slots, packed=True)
    kept = kv.length.clone()

    def one():
        forward(target, kv, [[5] * t for _ in slots], slots=slots, packed=True)
        kv.length[:] = kept

    return fastest_ms(one, repeats)


def matmul_floor(target, rows: int, repeats: int) -> float:
    lins = linear_shapes(target)
    dtype = next(target.parameters()).dtype
    xs = [torch.randn(rows, m.weight.shape[1], dtype=dtype) for m in lins]

    def one():
        for m, x in zip(lins, xs):
            linear(m, x)

    return fastest_ms(one, repeats)


def draft_cost(draft, b: int, ctx: int, repeats: int) -> float:
    kv = slm.SlotKV(b, ctx + 16)
    slots = list(range(b))
    eagle = getattr(draft, "reads_target_features", False)
    h = draft.config.hidden_size
    feats = [torch.zeros(ctx, h) for _ in slots] if eagle else None
    forward(draft, kv, [list(range(100, 100 + ctx)) for _ in slots], logits=False, feats=feats, slots=slots, packed=True)
    kept = kv.length.clone()
    g = torch.zeros(b, 1, h) if eagle else None

    def one():
        out = forward(draft, kv, [[5] for _ in slots], last_only=True, feats=g, slots=slots, packed=True)
        out[0].argmax(-1)
        kv.length[:] = kept

    return fastest_ms(one, repeats)


def acceptance(sweep: str, batch: int, k: int, alpha: float) -> tuple[float, str]:
    if sweep:
        for p in json.loads(Path(sweep).read_text())["points"]:
            if p["batch"] == batch and p["policy"] == f"fixed-k{k}" and float(p["temperature"]) == 0:
                return float(p["acceptance_length"]), "measured"
    return sum(alpha ** i for i in range(k + 1)), f"iid a={alpha}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", default="smollm")
    ap.add_argument("--batches", default="1,8,16,32")
    ap.add_argument("--tokens", default="1,2,3,4,5")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--sweep", default="", help="engine_sweep.py JSON with fixed-k acceptance lengths")
    ap.add_argument("--alpha", type=float, default=0.6, help="i.i.d. acceptance rate where --sweep has no figure")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = ap.parse_args(argv)
    from engine.pairs import load_pair

    torch.set_num_threads(1)
    target, draft, _ = load_pair(args.pair, "cpu", "auto", args.dtype)
    batches = [int(x) for x in args.batches.split(",")]
    tokens = [int(x) for x in args.tokens.split(",")]
    print(f"# {args.pair}: target {next(target.parameters()).dtype}, context {args.ctx}, 1 thread, CPU clock, "
          f"fastest of {args.repeats}\n")
    print("| batch | t | F verify ms | F / F(t=1) | L matmul floor ms | L / L(t=1) | D draft ms |")
    print("|---|---|---|---|---|---|---|")
    cost = {}
    for b in batches:
        d = draft_cost(draft, b, args.ctx, args.repeats)
        for t in tokens:
            f, lin = verify_cost(target, b, t, args.ctx, args.repeats), matmul_floor(target, b * t, args.repeats)
            cost[b, t] = (f, lin, d)
            print(f"| {b} | {t} | {f:.2f} | {f / cost[b, tokens[0]][0]:.2f} | {lin:.2f} | "
                  f"{lin / cost[b, tokens[0]][1]:.2f} | {d:.2f} |", flush=True)
    print("\n| batch | k | E(k) | source | engine ceiling x plain | matmul ceiling x plain |")
    print("|---|---|---|---|---|---|")
    for b in batches:
        for k in [t - 1 for t in tokens if t > 1 and (b, 1) in cost]:
            e, src = acceptance(args.sweep, b, k, args.alpha)
            f1, l1, d = cost[b, 1]
            fk, lk, _ = cost[b, k + 1]
            print(f"| {b} | {k} | {e:.3f} | {src} | {e * f1 / (fk + k * d):.3f} | {e * l1 / lk:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
