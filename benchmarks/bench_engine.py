"""Engine speed, side by side in one process (figures, not assertions).

    python3 benchmarks/bench_engine.py [--pair DIR] [--device cpu|cuda] [--batches 8,32]
        [--prompt-len 128] [--output-len 128] [--threads N]

1. Output tokens/s of no-SD, fixed k = 1..4 (best reported), DSD and TETRIS (k = best fixed,
   e = 1, 2) at each batch size, same prompts (2 x batch requests, all at t = 0, greedy).
2. The engine's no-SD vs HF generate() on the same batch of equal-length prompts (ratio >= 1.0 is the goal).
3. Selection time (estimates + allocation) as a share of TETRIS's decoding step time (goal < 1%).
Without the committed pair (engine/pair) it falls back to a tiny random pair and says so.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.serve import Workload, run_policy, step_time_for, warmup  # noqa: E402
from contract.config import PolicyConfig, load_config  # noqa: E402


def hf_generate_tps(target, prompts, out_len: int, clock=time.perf_counter) -> float:
    ids = torch.tensor(prompts, device=next(target.parameters()).device)
    mask = torch.ones_like(ids)
    kw = dict(max_new_tokens=out_len, min_new_tokens=out_len, do_sample=False, pad_token_id=0)
    target.generate(ids[:, :8], attention_mask=mask[:, :8], max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    t0 = clock()
    target.generate(ids, attention_mask=mask, **kw)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return ids.shape[0] * out_len / (clock() - t0)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU seconds (use with --threads 1 on a shared machine)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per policy; the median throughput is kept")
    return ap.parse_args()


def load_bench_pair(args):
    """(target, draft, tokenizer, name): the given or committed pair, else a tiny random one."""
    from engine.pairs import DEFAULT_PAIR, load_pair

    if args.pair or (DEFAULT_PAIR / "target" / "config.json").is_file():
        target, draft, tok = load_pair(args.pair, args.device)
        return target, draft, tok, args.pair or "engine/pair"
    from engine.testing.tiny import tiny_pair, train_tiny_tokenizer

    tok = train_tiny_tokenizer(300)
    target, draft = tiny_pair(vocab=len(tok))
    return target, draft, tok, "tiny random pair (engine/pair missing)"


def bench_policies(args, target, draft, prompts, batch, clock) -> None:
    """1 + 3: every policy on 2 x batch requests; TETRIS against the best fixed k and no-SD."""
    from contract.workload import iter_requests

    n = 2 * batch
    cfg = load_config(None, [f"workload.num_requests={n}", f"server.max_batch={batch}",
                             f"workload.prompt_len.value={args.prompt_len}",
                             f"workload.output_len={{dist=\"fixed\",value={args.output_len}}}",
                             f"engine.temperature={args.temperature}", "policy.max_k=6"])
    wl = Workload(list(iter_requests(cfg)), prompts)
    warmup(target, draft, cfg)
    step_time = step_time_for(cfg, target, draft, wl)
    res = {}

    def go(label, pcfg):
        runs = sorted((run_policy(cfg, pcfg, label, target, draft, wl, step_time, clock=clock).summary
                       for _ in range(args.repeats)), key=lambda s: s["output_throughput"])
        s = res[label] = runs[len(runs) // 2]
        print(f"  {label:<16} {s['output_throughput']:9.1f} tok/s  acc.len {s['acceptance_length']:.3f}  "
              f"VSR {s['draft_acceptance_rate']:.3f}  select {100 * s['select_share']:.3f}% of step time", flush=True)

    print(f"batch {batch} ({n} requests):")
    go("none", PolicyConfig(name="none"))
    for k in (1, 2, 3, 4):
        go(f"fixed-k{k}", PolicyConfig(name="fixed", k=k))
    best = max((res[f"fixed-k{k}"]["output_throughput"], k) for k in (1, 2, 3, 4))[1]
    go("dsd", PolicyConfig(name="dsd", max_k=6))
    for e in (1, 2):
        go(f"tetris-k{best}-e{e}", PolicyConfig(name="tetris", k=best, extra=e))
    ref = res[f"fixed-k{best}"]["output_throughput"]
    none = res["none"]["output_throughput"]
    for e in (1, 2):
        t = res[f"tetris-k{best}-e{e}"]["output_throughput"]
        print(f"  TETRIS e={e} / best fixed (k={best}): {t / ref:.4f}x; / no-SD: {t / none:.4f}x")


def bench_vs_generate(args, target, draft, prompts, batch, clock) -> None:
    """2: the engine's no-SD against HF generate() at equal batch, same prompts."""
    from contract.workload import iter_requests

    one = load_config(None, [f"workload.num_requests={batch}", f"server.max_batch={batch}",
                             f"workload.prompt_len.value={args.prompt_len}",
                             f"workload.output_len={{dist=\"fixed\",value={args.output_len}}}"])
    wl1 = Workload(list(iter_requests(one)), prompts[:batch])
    eng_tps, hf = [], []
    for _ in range(max(args.repeats, 3)):  # interleaved, median; whole run incl. prefill, like generate()
        e = run_policy(one, PolicyConfig(name="none"), "none", target, draft, wl1, clock=clock).summary
        eng_tps.append(e["output_tokens"] / e["duration_s"])
        hf.append(hf_generate_tps(target, prompts[:batch], args.output_len, clock))
    eng_tps, hf = float(np.median(eng_tps)), float(np.median(hf))
    print(f"  no-SD engine {eng_tps:.1f} tok/s vs HF generate() {hf:.1f} tok/s at batch {batch}: {eng_tps / hf:.3f}x")


def main() -> int:
    args = parse_args()
    from engine.clock import make_clock

    clock = make_clock(args.clock)  # the engine's clocks (engine/clock.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    target, draft, tok, pair_name = load_bench_pair(args)
    print(f"pair: {pair_name}; device {args.device}; torch threads {torch.get_num_threads()}; "
          f"prompt {args.prompt_len}, output {args.output_len} tokens, T={args.temperature}; {args.clock} clock, "
          f"median of {args.repeats}")
    from engine.prompts import heldout_stream, snippet

    stream = heldout_stream(tok, None, args.prompt_len)
    for batch in [int(x) for x in args.batches.split(",")]:
        prompts = [snippet(stream, i, args.prompt_len) for i in range(2 * batch)]
        bench_policies(args, target, draft, prompts, batch, clock)
        bench_vs_generate(args, target, draft, prompts, batch, clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
