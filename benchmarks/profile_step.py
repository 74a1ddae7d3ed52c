"""Where an engine step's time goes: a whole-step profile (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/profile_step.py [--pair smollm|tiny] [--batch 8[,32]]
        [--requests-per-batch 2] [--prompt-len 96] [--output-len 64] [--repeats 2]
        [--policies none,fixed2,tetris2e1] [--dtypes float32,bfloat16] [--layout packed|padded]

Runs the engine (engine.serve.run_policy, greedy, offline: all requests at t = 0) for plain
decoding, fixed k = 2 and TETRIS k = 2 e = 1, with the target in float32 and in bfloat16 (a copy
of the target cast with .to(torch.bfloat16) here only; the draft stays float32 and keeps reading
the float32 target's embedding/head rows). One torch thread, the CPU clock (engine.clock).
Runs alternate fp32 / bf16 per policy and repeat (A B A B); figures are the mean over repeats.

Every timed part is exclusive (a part's time excludes the parts nested inside it), so the rows
add up to the whole run. Instrumentation wraps engine functions from outside (no engine change):
  draft fwd        engine.forward.forward on the draft (count = forwards per step)
  verify fwd       the target's verification forward, split by forward hooks into
    :linear          every nn.Linear (q/k/v/o, MLP, the head)
    :attention       the attention modules minus their linears (rope, KV cache write, sdpa)
    :mask/pos/pad    engine.kv.attention_mask / positions / pad_tokens / append
    :other           the rest (embedding, norms, MLP activation, cache wrap, glue)
  propose (py)     _propose outside the draft forwards (argmax / sampling, estimator features)
  select           _select (estimates + policy.allocate)
  verify (py)      _verify outside the forward and the acceptance rule (token lists)
  accept           engine.sampling.verify (the acceptance rule)
  kv keep_from     engine.kv.keep_from (roll back rejected slots) in _commit
  commit (py)      _commit outside keep_from (per-request Python: emit, feed the draft)
  observe (py)     _observe (policy feedback, trace records)
  kv compact/join  engine.kv.compact / concat (finish, join, hole squeezing)
  prefill          admit: prefill forwards (target + draft) and the rest of admission
  loop/other       engine.run.run and Engine.step outside the above (uniforms, stats)
Hooks cost ~1-2 us per module call; the plain (unhooked) throughput of each run is printed
beside the profiled one so the overhead is visible.
"""
from __future__ import annotations

import argparse
import copy
import functools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

POLICIES = {"none": ("plain", dict(name="none")), "fixed2": ("fixed k=2", dict(name="fixed", k=2)),
            "tetris2e1": ("TETRIS k=2 e=1", dict(name="tetris", k=2, extra=1))}


class Timer:
    """Exclusive seconds per label over nested frames (a stack), plus call counts."""

    def __init__(self, clock):
        self.clock = clock
        self.excl = defaultdict(float)  # label -> seconds (exclusive)
        self.calls = defaultdict(int)  # label -> calls
        self.stack: list[list] = []  # [label, start seconds, child seconds]
        self.on = False

    def push(self, label: str) -> None:
        self.stack.append([label, self.clock(), 0.0])

    def pop(self) -> None:
        label, t0, child = self.stack.pop()
        dt = self.clock() - t0
        self.excl[label] += dt - child
        self.calls[label] += 1
        if self.stack:
            self.stack[-1][2] += dt

    def top(self) -> str:
        return self.stack[-1][0] if self.stack else ""

    def reset(self) -> None:
        self.excl.clear()
        self.calls.clear()


def wrap(timer: Timer, owner, name: str, label):
    """Replace owner.name by a timed wrapper; label: str or f(args) -> str. Returns an undo."""
    orig = getattr(owner, name)

    @functools.wraps(orig)
    def timed(*a, **kw):
        if not timer.on:
            return orig(*a, **kw)
        timer.push(label(a) if callable(label) else label)
        try:
            return orig(*a, **kw)
        finally:
            timer.pop()

    setattr(owner, name, timed)
    return lambda: setattr(owner, name, orig)


def hook_modules(timer: Timer, model) -> list:
    """Forward hooks: nn.Linear -> '<forward>:linear', attention modules -> '<forward>:attention'."""
    handles = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            part = "linear"
        elif type(m).__name__.endswith("Attention"):
            part = "attention"
        else:
            continue

        def pre(mod, args, part=part):
            if timer.on:
                base = timer.top().split(":")[0]
                timer.push(f"{base}:{part}")

        def post(mod, args, out):
            if timer.on:
                timer.pop()

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    return handles


def instrument(timer: Timer, targets: list, draft):
    """Wrap the engine's parts; returns undo callables."""
    from engine import core, kv as kvm, serve

    target_ids = {id(t) for t in targets}

    def fwd_label(a):
        model = a[0]
        if any(f[0] == "prefill" for f in timer.stack):
            return "prefill fwd"
        return "verify fwd" if id(model) in target_ids else "draft fwd"

    def sub(name):
        return lambda a: f"{timer.top().split(':')[0]}:{name}" if timer.top().endswith("fwd") or ":" in timer.top() \
            else name

    undo = [wrap(timer, core, "forward", fwd_label),
            wrap(timer, core, "verify", "accept"),
            wrap(timer, kvm, "keep_from", "kv keep_from"),
            wrap(timer, kvm, "compact", "kv compact/join"),
            wrap(timer, kvm, "concat", "kv compact/join"),
            wrap(timer, kvm, "attention_mask", sub("mask/pos/pad")),
            wrap(timer, kvm, "positions", sub("mask/pos/pad")),
            wrap(timer, kvm, "pad_tokens", sub("mask/pos/pad")),
            wrap(timer, kvm, "append", sub("mask/pos/pad")),
            wrap(timer, core.Engine, "_propose", "propose (py)"),
            wrap(timer, core.Engine, "_select", "select"),
            wrap(timer, core.Engine, "_verify", "verify (py)"),
            wrap(timer, core.Engine, "_commit", "commit (py)"),
            wrap(timer, core.Engine, "_observe", "observe (py)"),
            wrap(timer, core.Engine, "admit", "prefill"),
            wrap(timer, core.Engine, "step", "loop/other"),
            wrap(timer, serve, "run", "loop/other")]
    handles = [h for m in [*targets, draft] for h in hook_modules(timer, m)]
    return undo, handles


ROWS = ["draft fwd:linear", "draft fwd:attention", "draft fwd:mask/pos/pad", "draft fwd",
        "propose (py)", "select",
        "verify fwd:linear", "verify fwd:attention", "verify fwd:mask/pos/pad", "verify fwd",
        "verify (py)", "accept", "kv keep_from", "commit (py)", "observe (py)", "kv compact/join",
        "prefill fwd:linear", "prefill fwd:attention", "prefill fwd:mask/pos/pad", "prefill fwd", "prefill",
        "loop/other"]
NAMES = {"draft fwd": "draft fwd: other", "verify fwd": "verify fwd: other", "prefill fwd": "prefill fwd: other",
         "prefill": "admission (py)"}


def load(pair: str):
    """(fp32 target, bf16 target copy, draft float32, tokenizer, pair dir)."""
    from engine.pairs import load_pair, resolve_pair

    name = "smollm" if pair == "smollm" else ""
    target, draft, tok = load_pair(name, "cpu", "float32")
    return target, copy.deepcopy(target).to(torch.bfloat16).eval(), draft, tok, resolve_pair(name)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", choices=("smollm", "tiny"), default="smollm")
    ap.add_argument("--batch", default="8", help="comma list of server.max_batch")
    ap.add_argument("--requests-per-batch", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="fp32/bf16 alternations per policy (A B A B)")
    ap.add_argument("--policies", default="none,fixed2,tetris2e1")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--layout", choices=("packed", "padded"), default="packed")
    return ap.parse_args()


def check_args(args) -> str | None:
    """The one-line error for a bad flag, or None."""
    for p in args.policies.split(","):
        if p not in POLICIES:
            return f"--policies: unknown {p!r} (expected {', '.join(POLICIES)})"
    if any(d not in ("float32", "bfloat16") for d in args.dtypes.split(",")):
        return f"--dtypes {args.dtypes!r}: expected float32 and/or bfloat16"
    try:
        if all(int(b) >= 1 for b in args.batch.split(",")):
            return None
    except ValueError:
        pass
    return f"--batch {args.batch!r}: expected a comma list of positive integers"


def profile_policy(args, timer, models, draft, cfg, wl, key, dtypes):
    """Each dtype A B A B: an unhooked run (throughput) then a timed one (parts)."""
    from contract.config import PolicyConfig
    from engine.clock import make_clock
    from engine.serve import run_policy

    _, kw = POLICIES[key]
    acc = {d: defaultdict(float) for d in dtypes}
    cnt = {d: defaultdict(float) for d in dtypes}
    steps = {d: 0 for d in dtypes}
    tput = {d: [] for d in dtypes}
    bare = {d: [] for d in dtypes}
    for _ in range(args.repeats):
        for d in dtypes:  # A B A B
            timer.on = False
            r = run_policy(cfg, PolicyConfig(**kw), key, models[d], draft, wl, clock=make_clock("cpu"))
            bare[d].append(r.summary["output_throughput"])
            timer.reset()
            timer.on = True
            r = run_policy(cfg, PolicyConfig(**kw), key, models[d], draft, wl, clock=make_clock("cpu"))
            timer.on = False
            tput[d].append(r.summary["output_throughput"])
            steps[d] += r.result.stats.num_steps
            for k_, v in timer.excl.items():
                acc[d][k_] += v
                cnt[d][k_] += timer.calls[k_]
    return acc, cnt, steps, tput, bare


def main() -> int:
    args = parse_args()
    err = check_args(args)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dtypes, batches = args.dtypes.split(","), [int(b) for b in args.batch.split(",")]
    torch.set_num_threads(1)
    from contract.config import ConfigError, load_config
    from engine.clock import make_clock
    from engine.serve import build_workload, warmup

    try:
        t32, t16, draft, tok, pair_dir = load(args.pair)
    except ConfigError as e:
        print(f"error: --pair {args.pair}: {e}", file=sys.stderr)
        return 2
    models = {"float32": t32, "bfloat16": t16}
    timer = Timer(make_clock("cpu"))
    undo, handles = instrument(timer, [t32, t16], draft)
    print(f"pair {args.pair}; torch threads {torch.get_num_threads()}; cpu clock; greedy; {args.layout} layout; "
          f"prompt {args.prompt_len}, output {args.output_len} tokens; draft float32; repeats {args.repeats}")
    try:
        for batch in batches:
            n = max(args.requests_per_batch * batch, 3)
            cfg = load_config(None, [f"workload.num_requests={n}", f"server.max_batch={batch}",
                                     f"workload.prompt_len.value={args.prompt_len}",
                                     f"workload.output_len={{dist=\"fixed\",value={args.output_len}}}",
                                     "engine.temperature=0.0", "engine.clock=\"cpu\"",
                                     f"server.verify_layout=\"{args.layout}\""])
            wl = build_workload(cfg, tok, pair_dir)
            for d in dtypes:
                warmup(models[d], draft, cfg)
            for key in args.policies.split(","):
                parts = profile_policy(args, timer, models, draft, cfg, wl, key, dtypes)
                report(batch, n, POLICIES[key][0], dtypes, *parts)
    finally:
        for u in undo:
            u()
        for h in handles:
            h.remove()
    return 0


def report(batch, n, label, dtypes, acc, cnt, steps, tput, bare) -> None:
    print(f"\nbatch {batch}, {n} requests, {label}")
    head = "| part | " + " | ".join(f"{d} ms/step | share | calls/step" for d in dtypes) + " |"
    print(head)
    print("|" + "---|" * (1 + 3 * len(dtypes)))
    tot = {d: sum(acc[d].values()) for d in dtypes}
    extra = sorted(set().union(*[acc[d].keys() for d in dtypes]) - set(ROWS))
    for row in ROWS + extra:
        if all(acc[d].get(row, 0.0) == 0.0 for d in dtypes):
            continue
        cells = []
        for d in dtypes:
            s = max(steps[d], 1)
            cells.append(f"{1e3 * acc[d].get(row, 0.0) / s:.2f} | {acc[d].get(row, 0.0) / tot[d]:.1%} | "
                         f"{cnt[d].get(row, 0) / s:.1f}")
        print(f"| {NAMES.get(row, row)} | " + " | ".join(cells) + " |")
    cells = [f"**{1e3 * tot[d] / max(steps[d], 1):.2f}** | 100% | " for d in dtypes]
    print("| **whole step** | " + " | ".join(cells) + " |")
    for d in dtypes:
        s = max(steps[d], 1)
        parts = {p: sum(v for k, v in acc[d].items() if k.split(":")[0] == p) for p in ("draft fwd", "verify fwd")}
        print(f"  {d}: draft forwards {1e3 * parts['draft fwd'] / s:.2f} ms/step "
              f"({cnt[d].get('draft fwd', 0) / s:.1f} per step), target verify forward "
              f"{1e3 * parts['verify fwd'] / s:.2f} ms/step ({parts['verify fwd'] / tot[d]:.1%})")
        lin = sum(v for k, v in acc[d].items() if k.endswith(":linear"))
        print(f"  {d}: {steps[d] / len(tput[d]):.0f} steps/run; profiled {np.mean(tput[d]):.2f} tok/s, "
              f"unhooked {np.mean(bare[d]):.2f} tok/s; all nn.Linear {lin / tot[d]:.1%} of the run, "
              f"target verify linears {acc[d].get('verify fwd:linear', 0.0) / tot[d]:.1%}")


if __name__ == "__main__":
    sys.exit(main())
