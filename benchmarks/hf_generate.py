"""The engine's plain decoding (policy none) vs HF model.generate(), side by side (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/hf_generate.py [--pair tiny|smollm|DIR] [--batches 1,8,32]
        [--prompt-len 64] [--output-len 32] [--repeats 3] [--set engine.KEY=<TOML> ...]

At each batch size b: b requests with the same held-out prompts of exactly --prompt-len tokens
(so generate() needs no padding), --output-len new tokens each (generate: min_new_tokens =
max_new_tokens, so end-of-sequence never stops it early), greedy. The engine runs through
engine.serve.run_config (sweep = [none], all requests at t = 0, max_batch = b); HF generate() runs
on the very same target module afterwards (same weights, same dtype, same torch threads).
Order A B, B A, A B, ... (--repeats pairs; each pair's order alternates, so a drift or an order effect
cancels); tok/s = output tokens / seconds of the whole call, prefill
included, on the engine's clock (default engine.clock = "cpu", engine.threads = 1: this process's
CPU seconds, steadier on a shared box). Prints the median of each, the median of the paired ratios
engine / generate (>= 1.0: the engine is not slower) and its 95% bootstrap confidence interval
(scipy.stats.bootstrap over the pairs; with --repeats >= 3): an interval that holds 1.0 says no gap is
distinguishable at this box's noise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.config import ConfigError, load_config  # noqa: E402

TIMING = ['engine.clock="cpu"', "engine.threads=1"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="tiny", help="tiny (the committed engine/pair), smollm, or a pair folder")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="A B pairs per batch size")
    ap.add_argument("--out", default="", help="write the JSON here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=TOML", help="config override (repeatable)")
    return ap.parse_args(argv)


def config_for(args, batch: int):
    pair = "" if args.pair == "tiny" else args.pair
    sets = ['sweep=[{ name = "none" }]', f"engine.pair={json.dumps(pair)}", "engine.temperature=0.0",
            f"server.max_batch={batch}", f"workload.num_requests={batch}", 'workload.arrival="offline"',
            f'workload.prompt_len={{dist="fixed",value={args.prompt_len}}}',
            f'workload.output_len={{dist="fixed",value={args.output_len}}}'] + TIMING + list(args.set)
    return load_config(None, sets)


def generate_tps(target, prompts, out_len: int, clock) -> float:
    import torch

    ids = torch.tensor(prompts, device=next(target.parameters()).device)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=out_len, min_new_tokens=out_len,
              do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        t0 = clock()
        out = target.generate(ids, **kw)
        dt = clock() - t0
    assert out.shape[1] == ids.shape[1] + out_len
    return ids.shape[0] * out_len / dt


def engine_tps(cfg, models) -> tuple[float, list]:
    from engine.serve import run_config

    run = next(iter(run_config(cfg, progress=False, models=models).values()))
    s = run.summary
    return s["output_tokens"] / s["duration_s"], [list(q.prompt) for q in run.result.seqs]


def median_ci(ratios: list[float]) -> list[float] | None:
    """95% bootstrap confidence interval [lo, hi] of the median paired ratio (None under 3 pairs)."""
    if len(ratios) < 3:
        return None
    from scipy.stats import bootstrap

    ci = bootstrap((ratios,), statistics.median, n_resamples=2000, method="percentile",
                   random_state=0).confidence_interval
    return [float(ci.low), float(ci.high)]


def bench_batch(args, batch: int, models) -> dict:
    import torch
    from engine.clock import make_clock

    cfg = config_for(args, batch)
    clock = make_clock(cfg.engine.clock)
    target = models[0]
    eng, hf = [], []
    with torch.inference_mode():  # generate() warm-up at this batch shape (the engine warms up itself)
        target.generate(torch.ones(batch, 8, dtype=torch.long), max_new_tokens=2, min_new_tokens=2, do_sample=False,
                        pad_token_id=0)
    prompts = None
    for i in range(args.repeats):
        if i % 2 and prompts is not None:  # B A: generate() first (the prompts are the same every run)
            hf.append(generate_tps(target, prompts, args.output_len, clock))
            eng.append(engine_tps(cfg, models)[0])
            continue
        tps, prompts = engine_tps(cfg, models)
        if len({len(p) for p in prompts}) != 1:
            raise ConfigError("--prompt-len: the prompts are not all the same length (generate() would need padding)")
        eng.append(tps)
        hf.append(generate_tps(target, prompts, args.output_len, clock))
    ratios = [e / h for e, h in zip(eng, hf)]
    return {"batch": batch, "engine_tps": statistics.median(eng), "generate_tps": statistics.median(hf),
            "ratio": statistics.median(ratios), "ratio_ci95": median_ci(ratios), "engine_runs": eng,
            "generate_runs": hf,
            "dtype": str(next(target.parameters()).dtype).replace("torch.", ""), "clock": cfg.engine.clock,
            "threads": cfg.engine.threads}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        batches = [int(x) for x in args.batches.split(",")]
        if min(batches) < 1 or args.repeats < 1 or args.prompt_len < 1 or args.output_len < 1:
            raise ValueError
    except ValueError:
        print("hf_generate: error: --batches / --repeats / --prompt-len / --output-len: expected integers >= 1",
              file=sys.stderr)
        return 2
    try:
        cfgs = [config_for(args, b) for b in batches]  # every point validated before anything runs
        from engine.pairs import load_pair

        e = cfgs[0].engine
        models = load_pair(e.pair, e.device, e.draft_dtype, e.dtype)  # engine.dtype (auto: bf16 on AMX/AVX512-BF16)
        rows = [bench_batch(args, b, models) for b in batches]
    except ConfigError as err:
        print(f"hf_generate: error: {err}", file=sys.stderr)
        return 2
    r0 = rows[0]
    print(f"{args.pair}: engine plain decoding vs HF generate(), prompt {args.prompt_len}, output {args.output_len} "
          f"tokens, greedy, target {r0['dtype']}; engine.clock = {r0['clock']!r}, threads {r0['threads']}; "
          f"{args.repeats} pairs, order alternating, medians\n")
    print("| batch | engine tok/s | generate() tok/s | engine / generate | 95% CI |")
    print("|---|---|---|---|---|")
    for r in rows:
        ci = r["ratio_ci95"]
        ci = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        print(f"| {r['batch']} | {r['engine_tps']:.1f} | {r['generate_tps']:.1f} | {r['ratio']:.3f}x | {ci} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"pair": args.pair, "sets": args.set, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
