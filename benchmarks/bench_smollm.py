"""The SmolLM2-135M pair on the engine, side by side (figures, not assertions).

    python3 benchmarks/bench_smollm.py [--batches 1,8,32] [--output-len 64] [--requests-per-batch 2]
        [--threads 2] [--clock wall|cpu] [--tau 0.3]

Same prompts for every policy: held-out standard-library code, held-out English docs and held-out
chat prompts (chat template), in rotation. Greedy. Policies: plain decoding, fixed k = 1..4,
threshold (K = best fixed k + 1, capacity k*N), TETRIS with k = best fixed and e = 1..3. Prints
output throughput and its ratio to plain decoding, acceptance length (vLLM's: 1 + accepted per
request-step that verified a draft), draft acceptance rate (accepted / verified), tokens emitted
per request-step (counting request-steps given no draft: the figure to compare policies by) and
draft tokens verified per request-step (the budget actually spent).
Needs the prepared target (python -m engine.smollm.prepare) and the committed draft.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def heldout_prompts(tok, n: int, length: int) -> list[list[int]]:
    """n prompts cycling code / prose / chat, all from the held-out split."""
    from engine.smollm import data
    code = [t for k, t in data.stdlib_code() if data.split_of(k) == "heldout"]
    prose = [t for k, t in data.english_docs() if data.split_of(k) == "heldout"]
    chat = [p for k, p in data.chat_prompts() if data.split_of(k) == "heldout"]
    rng = np.random.default_rng(7)
    for lst in (code, prose, chat):
        rng.shuffle(lst)
    out = []
    for i in range(n):
        src, j = i % 3, i // 3
        if src == 2:
            msgs = [{"role": "user", "content": chat[j % len(chat)]}]
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            out.append(list(ids))
        else:
            text = (code if src == 0 else prose)[j % len(code if src == 0 else prose)]
            out.append(tok(text, add_special_tokens=False)["input_ids"][:length])
    return out


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--requests-per-batch", type=int, default=2, help="requests = this x batch, at least 3 (all at t=0)")
    ap.add_argument("--prompt-len", type=int, default=96, help="code/prose prompt tokens (chat prompts keep theirs)")
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tau", type=float, default=0.3, help="threshold policy: stop where cumulative score < tau")
    ap.add_argument("--fixed", default="1,2,3,4")
    ap.add_argument("--extras", default="1,2,3")
    ap.add_argument("--layout", choices=("packed", "padded"), default="packed",
                    help="server.verify_layout: ragged forwards packed (cost follows real tokens) or right-padded")
    ap.add_argument("--draft-dtype", choices=("float32", "bfloat16"), default="float32",
                    help="the draft's dtype (engine.draft_dtype; the engine's default on CPU: float32)")
    ap.add_argument("--pair", type=Path, default=None, help="draft folder (default engine/smollm_pair)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU seconds (use with --threads 1 on a shared machine)")
    return ap.parse_args()


def bench_batch(args, target, draft, tok, batch: int, clock) -> None:
    """Every policy on max(requests-per-batch x batch, 3) requests; best TETRIS vs best fixed k."""
    from engine.serve import Workload, run_policy, warmup
    from contract.config import PolicyConfig, load_config
    from contract.workload import iter_requests
    n = max(args.requests_per_batch * batch, 3)            # >= one code, one prose, one chat prompt
    cfg = load_config(None, [f"workload.num_requests={n}", f"server.max_batch={batch}",
                             f"workload.prompt_len.value={args.prompt_len}",
                             f"workload.output_len={{dist=\"fixed\",value={args.output_len}}}",
                             "engine.temperature=0.0", "policy.max_k=6",
                             f"server.verify_layout=\"{args.layout}\""])
    prompts = heldout_prompts(tok, n, args.prompt_len)
    reqs = [dataclasses.replace(r, prompt_len=len(p)) for r, p in zip(iter_requests(cfg), prompts)]
    wl = Workload(reqs, prompts)
    warmup(target, draft, cfg)
    step_time = None                                  # no dsd / goodput budgets here
    res = {}

    def go(label, pcfg):
        s = res[label] = run_policy(cfg, pcfg, label, target, draft, wl, step_time, clock=clock).summary
        base = res.get("none", s)["output_throughput"]
        print(f"  {label:<16} {s['output_throughput']:8.2f} tok/s  x{s['output_throughput'] / base:.3f} vs plain  "
              f"acc.len {s['acceptance_length']:.3f}  draft acc. rate {s['draft_acceptance_rate']:.3f}  "
              f"tok/req-step {s['tokens_per_step'] / s['mean_batch']:.3f}  "
              f"verified/req-step {s['mean_budget'] / s['mean_batch']:.3f}", flush=True)

    print(f"batch {batch} ({n} requests):")
    go("none", PolicyConfig(name="none"))
    ks = [int(k) for k in args.fixed.split(",")]
    for k in ks:
        go(f"fixed-k{k}", PolicyConfig(name="fixed", k=k))
    best = max((res[f"fixed-k{k}"]["output_throughput"], k) for k in ks)[1]
    go(f"threshold-k{best}", PolicyConfig(name="threshold", k=best, extra=1, tau=args.tau))
    for e in [int(x) for x in args.extras.split(",")]:
        go(f"tetris-k{best}-e{e}", PolicyConfig(name="tetris", k=best, extra=e))
    ref, none = res[f"fixed-k{best}"]["output_throughput"], res["none"]["output_throughput"]
    top = max((v["output_throughput"], k) for k, v in res.items() if k.startswith("tetris"))
    print(f"  best TETRIS ({top[1]}) / best fixed (k={best}): {top[0] / ref:.3f}x; / plain: {top[0] / none:.3f}x")


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from engine.smollm.draft import PAIR_DIR, load_draft, load_target, load_tokenizer
    from engine.smollm.prepare import DEFAULT_DIR, MissingDependency
    pair = args.pair or PAIR_DIR
    if not (pair / "draft.safetensors").is_file():
        print(f"error: --pair: no draft.safetensors in {pair}", file=sys.stderr)
        return 2
    try:
        target = load_target(DEFAULT_DIR)
    except MissingDependency as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    draft = load_draft(pair_dir=pair, target=target, dtype=getattr(torch, args.draft_dtype))
    tok = load_tokenizer(DEFAULT_DIR)
    from engine.clock import make_clock

    clock = make_clock(args.clock)  # the engine's clocks (engine/clock.py)
    print(f"SmolLM2-135M target + distilled draft ({pair.name}, {'EAGLE' if getattr(draft, 'reads_target_features', False) else 'token'}); torch threads {torch.get_num_threads()}; output {args.output_len} "
          f"tokens, greedy; {args.clock} clock; {args.layout} layout; draft {args.draft_dtype}")
    for batch in [int(x) for x in args.batches.split(",")]:
        bench_batch(args, target, draft, tok, batch, clock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
