"""Quality and cost of a draft/target pair on held-out stdlib files (CPU, float32).

  python3 scripts/eval_pair.py [--pair engine/pair] [--max-tokens 65536] [--json out.json]

Under teacher forcing on real held-out text, per position:
  greedy match     draft argmax == target argmax
  acceptance (T=1) sum_x min(p(x), q(x))  (p target, q draft)
  confidence       max_x q(x) (also the top1-top2 margin of q): ROC AUC for predicting a greedy match, and a reliability
                   table (match rate by max-q bin)
Cost ratio: one draft decode step / one target decode step, batch 8, KV cache, after a
128-token prefill, interleaved rounds, medians.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_data  # noqa: E402
from engine.calibration import roc_auc  # noqa: E402

BINS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0001]


def load_pair(pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(os.path.join(pair, "target"))
    target = AutoModelForCausalLM.from_pretrained(os.path.join(pair, "target"), dtype=torch.float32).eval()
    draft = AutoModelForCausalLM.from_pretrained(os.path.join(pair, "draft"), dtype=torch.float32).eval()
    return tok, target, draft


def heldout_files(pair):
    """The pair's held-out list (heldout.txt), else the hash split of this machine's stdlib."""
    path = os.path.join(pair, "heldout.txt")
    if os.path.exists(path):
        with open(path) as f:
            return [s.strip() for s in f if s.strip() and not s.startswith("#")]
    return train_data.split_files()[1]


def heldout_windows(tok, files, seqlen, max_tokens):
    """Non-overlapping windows [n, seqlen] of the held-out stream (<bos> file <eos> ...)."""
    root = train_data.stdlib_root()
    files = [p for p in files if os.path.exists(os.path.join(root, p))]
    stream = train_data.encode_files(tok, files, root)
    n = min(len(stream) // seqlen, max(1, max_tokens // seqlen))
    return torch.from_numpy(stream[: n * seqlen].reshape(n, seqlen).astype(np.int64)), len(files)


@torch.no_grad()
def pair_stats(target, draft, windows, batch=8):
    """Per-position arrays over all windows: match, acceptance, max-q, CE of each model."""
    match, acc, maxq, margin, ce_t, ce_d = [], [], [], [], [], []
    for i in range(0, len(windows), batch):
        x = windows[i:i + batch]
        lp = torch.log_softmax(target(input_ids=x).logits.float(), -1)[:, :-1]
        lq = torch.log_softmax(draft(input_ids=x).logits.float(), -1)[:, :-1]
        y = x[:, 1:]
        p, q = lp.exp(), lq.exp()
        match.append((lp.argmax(-1) == lq.argmax(-1)).reshape(-1))
        acc.append(torch.minimum(p, q).sum(-1).reshape(-1))
        top2 = q.topk(2, -1).values
        maxq.append(top2[..., 0].reshape(-1))
        margin.append((top2[..., 0] - top2[..., 1]).reshape(-1))
        ce_t.append(-lp.gather(-1, y[..., None]).reshape(-1))
        ce_d.append(-lq.gather(-1, y[..., None]).reshape(-1))
    cat = lambda xs: torch.cat(xs).numpy().astype(np.float64)  # noqa: E731
    return dict(match=cat(match), acc=cat(acc), maxq=cat(maxq), margin=cat(margin), ce_target=cat(ce_t), ce_draft=cat(ce_d))


def reliability(maxq, match):
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (maxq >= lo) & (maxq < hi)
        rows.append(dict(bin="[%.1f,%.1f)" % (lo, min(hi, 1.0)) if hi < 1 else "[%.1f,1.0]" % lo,
                         share=float(m.mean()), mean_maxq=float(maxq[m].mean()) if m.any() else float("nan"),
                         match_rate=float(match[m].mean()) if m.any() else float("nan")))
    return rows


@torch.no_grad()
def cost_ratio(target, draft, vocab, batch=8, prefill=128, steps=16, rounds=5, seed=0):
    """Median seconds of one decode step (batch tokens, KV cache) for each model, and the ratio."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, vocab, (batch, prefill), generator=g)
    times = {"draft": [], "target": []}
    for _ in range(rounds):
        for name, model in (("draft", draft), ("target", target)):
            out = model(input_ids=x, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(steps):
                t0 = time.perf_counter()
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                times[name].append(time.perf_counter() - t0)
                cache = out.past_key_values
    d, t = float(np.median(times["draft"])), float(np.median(times["target"]))
    return dict(draft_step_ms=d * 1e3, target_step_ms=t * 1e3, ratio=d / t)


def evaluate(pair, max_tokens=65536, seqlen=256, with_cost=True):
    tok, target, draft = load_pair(pair)
    windows, nfiles = heldout_windows(tok, heldout_files(pair), seqlen, max_tokens)
    s = pair_stats(target, draft, windows)
    res = dict(
        pair=pair, heldout_files=nfiles, positions=int(len(s["match"])),
        greedy_match=float(s["match"].mean()),
        acceptance_mean=float(s["acc"].mean()),
        acceptance_p10=float(np.percentile(s["acc"], 10)),
        acceptance_p50=float(np.percentile(s["acc"], 50)),
        acceptance_p90=float(np.percentile(s["acc"], 90)),
        auc_maxq_match=roc_auc(s["maxq"], s["match"]),
        auc_margin_match=roc_auc(s["margin"], s["match"]),
        reliability=reliability(s["maxq"], s["match"]),
        ce_target=float(s["ce_target"].mean()), ce_draft=float(s["ce_draft"].mean()),
        params_target=sum(p.numel() for p in target.parameters()),
        params_draft=sum(p.numel() for p in draft.parameters()),
    )
    if with_cost:
        res["cost"] = cost_ratio(target, draft, len(tok))
    return res


def print_table(r):
    print("pair %s: %d held-out files, %d positions (teacher forcing, float32)"
          % (r["pair"], r["heldout_files"], r["positions"]))
    print("| metric | value |\n|---|---|")
    print("| params target / draft | %d / %d |" % (r["params_target"], r["params_draft"]))
    print("| held-out CE target / draft (nats/token) | %.4f / %.4f |" % (r["ce_target"], r["ce_draft"]))
    print("| greedy match | %.4f |" % r["greedy_match"])
    print("| acceptance sum min(p,q), T=1: mean | %.4f |" % r["acceptance_mean"])
    print("| acceptance p10 / p50 / p90 | %.4f / %.4f / %.4f |"
          % (r["acceptance_p10"], r["acceptance_p50"], r["acceptance_p90"]))
    print("| ROC AUC, max-q predicts match | %.4f |" % r["auc_maxq_match"])
    print("| ROC AUC, top1-top2 margin of q predicts match | %.4f |" % r["auc_margin_match"])
    if "cost" in r:
        c = r["cost"]
        print("| step ms draft / target (batch 8, KV cache) | %.2f / %.2f |" % (c["draft_step_ms"], c["target_step_ms"]))
        print("| cost ratio draft/target | %.3f |" % c["ratio"])
    print("\n| max-q bin | share of positions | mean max-q | greedy match rate |\n|---|---|---|---|")
    for row in r["reliability"]:
        print("| %s | %.4f | %.4f | %.4f |" % (row["bin"], row["share"], row["mean_maxq"], row["match_rate"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="engine/pair")
    ap.add_argument("--max-tokens", type=int, default=65536, help="held-out tokens to score")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    r = evaluate(args.pair, args.max_tokens, args.seqlen, with_cost=not args.no_cost)
    print_table(r)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(r, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
