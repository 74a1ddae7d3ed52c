"""Train the committed draft/target pair on the Python standard library (CPU, offline).

Stages (each resumable; a kill loses at most --ckpt-every steps):
  python3 scripts/train_pair.py data   --work DIR            # BPE tokenizer + token streams
  python3 scripts/train_pair.py target --work DIR --steps N  # LlamaForCausalLM, next-token CE
  python3 scripts/train_pair.py draft  --work DIR --steps M  # 1-layer Llama, KL to the target
  python3 scripts/train_pair.py export --work DIR --out engine/pair   # fp16 HF folders
The exact commands of the committed pair are in docs/models.md.
With --long-from S, steps >= S use --long-seqlen windows (same tokens per step), so the
models also see positions up to 512. Batches are drawn from a generator seeded by (seed, step), so a resumed run sees the
same data as an uninterrupted one.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_data  # noqa: E402

TARGET = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=6,
              num_attention_heads=8, num_key_value_heads=8)
DRAFT = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=1,
             num_attention_heads=8, num_key_value_heads=8)


def log(work, msg):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    with open(os.path.join(work, "train.log"), "a") as f:
        f.write(line + "\n")


def make_config(shape, vocab_size, tok):
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=vocab_size, max_position_embeddings=1024, rope_theta=10000.0,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        attn_implementation="sdpa", **shape)


def stage_data(args):
    os.makedirs(args.work, exist_ok=True)
    train, held = train_data.split_files()
    tok = train_data.train_tokenizer(train, args.vocab, os.path.join(args.work, "tokenizer"))
    np.save(os.path.join(args.work, "train.npy"), train_data.encode_files(tok, train))
    np.save(os.path.join(args.work, "heldout.npy"), train_data.encode_files(tok, held))
    meta = dict(python=train_data.python_version(), stdlib=train_data.stdlib_root(),
                train_files=len(train), heldout_files=len(held), vocab=args.vocab,
                heldout=held)
    with open(os.path.join(args.work, "data.json"), "w") as f:
        json.dump(meta, f, indent=1)
    log(args.work, "data: %d train files, %d held-out, python %s"
        % (len(train), len(held), meta["python"]))


def batch(stream, seed, step, bsz, seqlen):
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - seqlen - 1, size=bsz)
    x = np.stack([stream[s:s + seqlen + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(x)


def lr_at(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def draft_shape(layers):
    return dict(DRAFT, num_hidden_layers=layers)


def save_ckpt(path, model, opt, step, extra):
    tmp = path + ".tmp"
    torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), step=step, **extra), tmp)
    os.replace(tmp, path)


@torch.no_grad()
def heldout_loss(model, held, seqlen, n=16, teacher=None):
    """Mean CE on n fixed held-out windows (and agreement with teacher if given)."""
    model.eval()
    x = batch(held, 12345, 0, n, seqlen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=x[:, :-1]).logits.float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)).item()
    agree = None
    if teacher is not None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tl = teacher(input_ids=x[:, :-1]).logits.float()
        agree = (tl.argmax(-1) == logits.argmax(-1)).float().mean().item()
    model.train()
    return ce, agree


def load_tok(work):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(os.path.join(work, "tokenizer"))


def train_loop(args, name, model, loss_fn, held, teacher=None, extra=None):
    """Shared AdamW + cosine loop with checkpoint/resume. loss_fn(model, x) -> loss."""
    ckpt = os.path.join(args.work, name + ".pt")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.1),
                             dict(params=other, weight_decay=0.0)],
                            lr=args.lr, betas=(0.9, 0.95))
    start, elapsed = 0, 0.0
    if os.path.exists(ckpt):
        st = torch.load(ckpt, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start, elapsed = st["step"], st["elapsed"]
        log(args.work, "%s: resumed at step %d (%.1f min)" % (name, start, elapsed / 60))
    stream = np.load(os.path.join(args.work, "train.npy"))
    model.train()
    t0 = time.time() - elapsed
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        if 0 <= args.long_from <= step:  # second phase: longer windows, same tokens per step
            x = batch(stream, args.seed, step, args.batch * args.seqlen // args.long_seqlen, args.long_seqlen)
        else:
            x = batch(stream, args.seed, step, args.batch, args.seqlen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(model, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            msg = "%s step %d/%d loss %.4f lr %.2e %.1f min" % (
                name, done, args.steps, loss.item(), opt.param_groups[0]["lr"],
                (time.time() - t0) / 60)
            if done % (args.log_every * 5) == 0 or done == args.steps:
                ce, agree = heldout_loss(model, held, args.seqlen, teacher=teacher)
                msg += " | heldout ce %.4f" % ce
                if agree is not None:
                    msg += " greedy-match %.4f" % agree
            log(args.work, msg)
        if done % args.ckpt_every == 0 or done == args.steps:
            save_ckpt(ckpt, model, opt, done, dict(elapsed=time.time() - t0, **(extra or {})))
    return time.time() - t0


def stage_target(args):
    from transformers import LlamaForCausalLM
    torch.manual_seed(args.seed)
    tok = load_tok(args.work)
    model = LlamaForCausalLM(make_config(TARGET, len(tok), tok))
    held = np.load(os.path.join(args.work, "heldout.npy"))
    log(args.work, "target: %d params, %s" % (sum(p.numel() for p in model.parameters()), vars(args)))

    def loss_fn(m, x):
        logits = m(input_ids=x[:, :-1]).logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))

    secs = train_loop(args, "target", model, loss_fn, held)
    log(args.work, "target: done, %.1f min" % (secs / 60))


def load_target(work):
    from transformers import LlamaForCausalLM
    tok = load_tok(work)
    model = LlamaForCausalLM(make_config(TARGET, len(tok), tok))
    model.load_state_dict(torch.load(os.path.join(work, "target.pt"), weights_only=False)["model"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def stage_draft(args):
    from transformers import LlamaForCausalLM
    torch.manual_seed(args.seed + 1)
    tok = load_tok(args.work)
    teacher = load_target(args.work)
    shape = draft_shape(args.draft_layers)
    model = LlamaForCausalLM(make_config(shape, len(tok), tok))
    # Start from the target's embedding, first blocks and final norm (same width).
    tsd = teacher.state_dict()
    init = {k: v.clone() for k, v in tsd.items()
            if k in model.state_dict() and model.state_dict()[k].shape == v.shape}
    model.load_state_dict(init, strict=False)
    held = np.load(os.path.join(args.work, "heldout.npy"))
    log(args.work, "draft: %d params, init from target (%d tensors), %s"
        % (sum(p.numel() for p in model.parameters()), len(init), vars(args)))
    temp = args.kd_temp

    def loss_fn(m, x):
        inp = x[:, :-1]
        with torch.no_grad():
            t_logits = teacher(input_ids=inp).logits.float() / args.teacher_temp
        s_logits = m(input_ids=inp).logits.float()
        v = s_logits.shape[-1]
        p = F.log_softmax(t_logits.reshape(-1, v) / temp, -1)
        q = F.log_softmax(s_logits.reshape(-1, v) / temp, -1)
        kl = F.kl_div(q, p, log_target=True, reduction="batchmean") * temp * temp
        if args.ce_weight > 0:
            kl = kl + args.ce_weight * F.cross_entropy(s_logits.reshape(-1, v), x[:, 1:].reshape(-1))
        return kl

    secs = train_loop(args, args.draft_name, model, loss_fn, held, teacher=teacher, extra=dict(shape=shape))
    log(args.work, "draft: done, %.1f min" % (secs / 60))


def stage_export(args):
    from transformers import GenerationConfig, LlamaForCausalLM
    tok = load_tok(args.work)
    with open(os.path.join(args.work, "data.json")) as f:
        meta = json.load(f)
    for name, ckpt in (("target", "target"), ("draft", args.draft_name)):
        st = torch.load(os.path.join(args.work, ckpt + ".pt"), weights_only=False)
        model = LlamaForCausalLM(make_config(st.get("shape", TARGET), len(tok), tok))
        model.load_state_dict(st["model"])
        model = model.to(torch.float16)
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, do_sample=False)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        info = dict(steps=st["step"], train_minutes=round(st["elapsed"] / 60, 1),
                    params=sum(p.numel() for p in model.parameters()),
                    python=meta["python"], heldout_files=meta["heldout"])
        with open(os.path.join(out, "training.json"), "w") as f:
            json.dump(info, f, indent=1)
        log(args.work, "export %s -> %s (%d params, step %d)" % (name, out, info["params"], info["steps"]))
    # the engine's default prompts come from these files (one stdlib-relative path per line)
    with open(os.path.join(args.out, "heldout.txt"), "w") as f:
        f.write("# held-out stdlib files (python %s), never trained on\n" % meta["python"])
        f.write("".join(p + "\n" for p in meta["heldout"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["data", "target", "draft", "export"])
    ap.add_argument("--work", default="/tmp/pair/work", help="folder for tokens, checkpoints, log")
    ap.add_argument("--out", default="engine/pair", help="export: destination folder")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--long-seqlen", type=int, default=512, help="window length from --long-from on")
    ap.add_argument("--long-from", type=int, default=-1, help="first step with long windows (-1: never)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kd-temp", type=float, default=1.0, help="draft: distillation temperature")
    ap.add_argument("--teacher-temp", type=float, default=1.0,
                    help="draft: fit softmax(target logits / this); < 1 sharpens the teacher")
    ap.add_argument("--ce-weight", type=float, default=0.0, help="draft: weight of data CE")
    ap.add_argument("--draft-layers", type=int, default=1, help="draft: decoder layers")
    ap.add_argument("--draft-name", default="draft", help="draft/export: checkpoint name in --work")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--ckpt-every", type=int, default=25)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"data": stage_data, "target": stage_target, "draft": stage_draft, "export": stage_export}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
