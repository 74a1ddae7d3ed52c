"""Quality and cost of the SmolLM2 pair (prepared target + committed draft), on held-out text.

    python scripts/eval_smollm_pair.py [--target DIR] [--pair DIR] [--json out.json]

Teacher-forced on held-out windows (never seen in distillation: split by a hash of the file/topic
name) of standard-library code, English docs/man pages, and the target's own greedy chat answers
to held-out prompts (positions inside the answers only). Prints per set:
  greedy_match   P(draft argmax == target argmax)  (= greedy per-position acceptance)
  accept_sum     E[sum_v min(p_v, q_v)]            (= sampled acceptance at temperature 1)
  auc            ROC AUC of the draft's max-prob as a predictor of a greedy match
  own_match      (EAGLE drafts) greedy_match when the draft reads its own previous output g instead
                 of the target's feature f: the situation of every draft after the first in a step
and the decode-step cost (one token, KV cache, context 128, as the engine's forward runs it) of
draft and target measured side by side (interleaved, median) at batch 1 and 8.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.calibration import roc_auc  # noqa: E402
from engine.smollm import data  # noqa: E402
from engine.smollm.draft import PAIR_DIR, load_draft, load_target, load_tokenizer  # noqa: E402
from engine.smollm.shared import shift  # noqa: E402
from engine.smollm.prepare import DEFAULT_DIR, MissingDependency  # noqa: E402


@torch.no_grad()
def compare(target, drafts: list, seqs, batch: int = 8) -> list:
    """seqs: list of (ids, loss_start). The target runs once; one dict of figures per draft."""
    acc = [([], [], [], []) for _ in drafts]
    for s in range(0, len(seqs), batch):
        b = seqs[s:s + batch]
        L = max(len(w) for w, _ in b)
        x = torch.full((len(b), L), 0, dtype=torch.long)
        am = torch.zeros((len(b), L), dtype=torch.long)
        pm = torch.zeros((len(b), L), dtype=torch.bool)
        for r, (w, start) in enumerate(b):
            x[r, :len(w)] = torch.tensor(w)
            am[r, :len(w)] = 1
            pm[r, start:len(w) - 1] = True
        h = target.model(input_ids=x, attention_mask=am).last_hidden_state
        p = torch.softmax(target.lm_head(h[pm]).float(), -1)
        for draft, (m_all, a_all, c_all, o_all) in zip(drafts, acc):
            if getattr(draft, "reads_target_features", False):
                g = draft.model(inputs_embeds=draft.fuse(x, shift(h)), attention_mask=am).last_hidden_state
                q = torch.softmax(draft.lm_head(g[pm]).float(), -1)
                g2 = draft.model(inputs_embeds=draft.fuse(x, shift(g)), attention_mask=am).last_hidden_state
                o_all.append((p.argmax(-1) == draft.lm_head(g2[pm]).argmax(-1)).numpy())
            else:
                q = torch.softmax(draft(input_ids=x, attention_mask=am).logits[pm].float(), -1)
            m_all.append((p.argmax(-1) == q.argmax(-1)).numpy())
            a_all.append(torch.minimum(p, q).sum(-1).numpy())
            c_all.append(q.max(-1).values.numpy())
    out = []
    for m, a, c, o in acc:
        m, a, c = (np.concatenate(v) for v in (m, a, c))
        r = {"positions": int(m.size), "greedy_match": round(float(m.mean()), 4),
             "accept_sum": round(float(a.mean()), 4), "auc": round(roc_auc(c, m), 4)}
        if o:
            r["own_match"] = round(float(np.concatenate(o).mean()), 4)
        out.append(r)
    return out


def chat_set(tok, work: Path, target, n: int):
    """Held-out chat prompts with the target's own greedy answers (cached from training)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_smollm_draft import chat_ids, generate_answers
    path = work / "chat.jsonl"
    rows = [json.loads(l) for l in open(path)] if path.exists() else []
    rows = [r for r in rows if r["split"] == "heldout"][:n]
    if not rows:
        prompts = [(k, p) for k, p in data.chat_prompts() if data.split_of(k) == "heldout"][:n]
        answers = generate_answers(target, tok, [p for _, p in prompts], 160, 16, desc="heldout chat")
        rows = [{"prompt": p, "answer": a} for (_, p), a in zip(prompts, answers)]
    seqs = []
    for r in rows:
        p = chat_ids(tok, r["prompt"])
        seqs.append((p + r["answer"] + [tok.eos_token_id], max(len(p) - 1, 0)))
    return seqs


@torch.no_grad()
def step_costs(target, draft, batches=(1, 8), ctx: int = 128, reps: int = 30):
    """Median decode-step time (s) of each model as the engine runs it (engine.forward.forward:
    decoder + head on the last position, BatchKV cache; the EAGLE draft's fuse included), one
    token per request after a ctx-token prefill; interleaved so load affects both alike."""
    from engine import kv as kvm
    from engine.forward import forward
    out = {}
    g = torch.Generator().manual_seed(0)
    for B in batches:
        ids = torch.randint(0, target.config.vocab_size, (B, ctx), generator=g).tolist()
        state = {name: forward(m, kvm.empty(B), ids, logits=False)[1] for name, m in (("target", target), ("draft", draft))}
        times = {"target": [], "draft": []}
        nxt = [[row[-1]] for row in ids]
        for r in range(reps + 3):
            for name, m in (("target", target), ("draft", draft)):
                t0 = time.perf_counter()
                forward(m, state[name], nxt, last_only=True)   # the state is not changed (spare slots)
                if r >= 3:
                    times[name].append(time.perf_counter() - t0)
        t, d = np.median(times["target"]), np.median(times["draft"])
        out[f"batch{B}"] = {"target_ms": round(float(t) * 1e3, 2), "draft_ms": round(float(d) * 1e3, 2),
                            "ratio": round(float(d / t), 4)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="evaluate the SmolLM2 target/draft pair")
    ap.add_argument("--target", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--pair", type=Path, nargs="+", default=[PAIR_DIR], help="draft folder(s); the target runs once")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/tetris/smollm-distill")
    ap.add_argument("--windows", type=int, default=32, help="held-out windows (chat: answers) per text set")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--draft-dtype", choices=("float32", "bfloat16"), default="float32",
                    help="the drafts' dtype (engine.draft_dtype; the engine's default on CPU: float32)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        target = load_target(args.target)
    except MissingDependency as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for pair in args.pair:
        if not (pair / "draft.safetensors").is_file():
            print(f"error: no draft in {pair}; run scripts/train_smollm_draft.py", file=sys.stderr)
            return 2
    tok = load_tokenizer(args.target)
    drafts = [load_draft(pair_dir=pair, target=target, dtype=getattr(torch, args.draft_dtype)) for pair in args.pair]
    res = {str(pair): {"draft": json.loads((pair / "draft_config.json").read_text())} for pair in args.pair}
    sets = {}
    for name, items in (("code", data.stdlib_code()), ("prose", data.english_docs())):
        held = sorted(t for n, t in items if data.split_of(n) == "heldout")
        np.random.default_rng(1234).shuffle(held)
        sets[name] = [(w, 0) for t in held[:args.windows] for w in list(data.chunks([t], tok, args.seq_len))[:1]]
    sets["chat"] = chat_set(tok, args.work, target, args.windows)
    for name, seqs in sets.items():
        for pair, r in zip(args.pair, compare(target, drafts, seqs)):
            res[str(pair)][name] = r
            print(pair.name, name, r, flush=True)
    if not args.no_cost:
        for pair, draft in zip(args.pair, drafts):
            res[str(pair)]["step_cost"] = step_costs(target, draft, reps=args.reps)
            print(pair.name, "step_cost", res[str(pair)]["step_cost"], flush=True)
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
