"""The engine over batch sizes, temperatures and policies, side by side (figures, not assertions).

    PYTHONPATH=$PWD python3 benchmarks/engine_sweep.py [--pair tiny|smollm|DIR] [--batches 1,8,16,32,64]
        [--temperatures 0,1] [--policies none,fixed,dsd,threshold,tetris,tetris-goodput]
        [--num-requests N] [--prompt-len 96] [--output-len 64] [--repeats 1] [--quick] [--out FILE.json]
        [--set engine.KEY=<TOML> ...]

For each (temperature, batch) one `run_config` call (engine/serve.py) runs every policy of the
sweep on the same requests and acceptance draws (contract.runs.run_variants), all at t = 0:
  none                 plain decoding
  fixed                fixed k = 1..4
  dsd                  DSD (window from a quick step-time profile)
  threshold            threshold, k = best fixed, extra 1 (tau = policy.tau)
  tetris               TETRIS, k = best fixed, extra 1..3, fixed budget k*N
  tetris-goodput       TETRIS, k = best fixed, extra 1..3, goodput-maximising budget
  tetris-full, tetris-goodput-full   the same with policy.early_stop = false (always draft K;
                       labels end in -full): the early stop's saving, side by side
Timing: engine.clock = "cpu" and engine.threads = 1 unless --set says otherwise (this process's
CPU seconds: steady on a shared CPU box; the figures are CPU-seconds throughput).
--repeats R runs the whole sweep R times per point (policies interleaved A B A B); each policy's
fastest run counts (other load only ever slows a run: timeit's rule) and "runs" lists all R.
Selection share = seconds in estimates + allocation / seconds in decoding steps (the engine's own
timers: RunResult.select_s / step_s).

Writes JSON (--out): {"meta": {...}, "points": [{pair, temperature, batch, policy, output_throughput,
mean_tpot_s, acceptance_length, select_share, ...}]}, and prints Markdown tables: per-policy speedup
vs plain, best fixed k, TETRIS / best fixed, and the first batch where no speculative policy beats
plain decoding. --set keys go through the config loader (an unknown key exits 2 naming it).
--quick: requests = batch (at least 4), prompt 32, output 16 tokens, batches 1,8 unless given
(the tiny pair in < 1 min).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.config import ConfigError, load_config  # noqa: E402

GROUPS = ("none", "fixed", "dsd", "threshold", "tetris", "tetris-goodput", "tetris-full", "tetris-goodput-full")
FIXED_KS = (1, 2, 3, 4)
EXTRAS = (1, 2, 3)
TIMING = ['engine.clock="cpu"', "engine.threads=1"]  # defaults; --set may override them


def sweep_entries(groups) -> list[str]:
    """TOML inline tables of the sweep (order matters: k = "best_fixed" needs the fixed ones first)."""
    out = []
    if "none" in groups:
        out.append('{ name = "none" }')
    if "fixed" in groups or any(g.startswith(("threshold", "tetris")) for g in groups):
        out += [f'{{ name = "fixed", k = {k} }}' for k in FIXED_KS]
    if "dsd" in groups:
        out.append('{ name = "dsd" }')
    if "threshold" in groups:
        out.append('{ name = "threshold", k = "best_fixed", extra = 1 }')
    for group, budget, full in (("tetris", "fixed", False), ("tetris-goodput", "goodput", False),
                                ("tetris-full", "fixed", True), ("tetris-goodput-full", "goodput", True)):
        if group in groups:
            out += [_tetris_entry(e, budget, full) for e in EXTRAS]
    return out


def _tetris_entry(extra: int, budget: str, full: bool) -> str:
    """One TETRIS variant, k = best fixed; full: policy.early_stop = false (always draft K)."""
    label = f"tetris-kbest-e{extra}" + ("-goodput" if budget == "goodput" else "") + ("-full" if full else "")
    return (f'{{ name = "tetris", k = "best_fixed", extra = {extra}, budget = "{budget}", '
            f'early_stop = {str(not full).lower()}, label = "{label}" }}')


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="tiny", help="tiny (the committed engine/pair), smollm, or a pair folder")
    ap.add_argument("--batches", default=None, help="default 1,8,16,32,64 (--quick: 1,8)")
    ap.add_argument("--temperatures", default="0,1")
    ap.add_argument("--policies", default=",".join(GROUPS), help=f"subset of {','.join(GROUPS)}")
    ap.add_argument("--num-requests", type=int, default=0, help="requests per batch size (0: 2 x batch, at least 4)")
    ap.add_argument("--prompt-len", type=int, default=96)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of the whole sweep per point (interleaved A B A B); the fastest run of each policy counts")
    ap.add_argument("--quick", action="store_true", help="requests = batch (>= 4), prompt 32, output 16")
    ap.add_argument("--out", default="", help="write the JSON here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=TOML", help="config override (repeatable)")
    return ap.parse_args(argv)


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: {text!r}: expected comma-separated integers") from None
    if not vals or min(vals) < 1:
        raise ConfigError(f"{flag}: {text!r}: expected integers >= 1")
    return vals


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: {text!r}: expected comma-separated numbers") from None
    if not vals or min(vals) < 0:
        raise ConfigError(f"{flag}: {text!r}: expected numbers >= 0")
    return vals


def build_configs(args) -> list[tuple[float, int, object]]:
    """[(temperature, batch, Config)] for every point, all validated before anything runs."""
    groups = [g.strip() for g in args.policies.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        raise ConfigError(f"--policies: {','.join(bad) or args.policies!r}: expected a subset of {','.join(GROUPS)}")
    if args.repeats < 1:
        raise ConfigError(f"--repeats: {args.repeats}: expected >= 1")
    if args.num_requests < 0:
        raise ConfigError(f"--num-requests: {args.num_requests}: expected >= 0")
    pair = "" if args.pair == "tiny" else args.pair
    plen, olen = (32, 16) if args.quick else (args.prompt_len, args.output_len)
    if plen < 1 or olen < 1:
        raise ConfigError("--prompt-len / --output-len: expected >= 1")
    sweep = "sweep=[" + ", ".join(sweep_entries(groups)) + "]"
    batches = args.batches or ("1,8" if args.quick else "1,8,16,32,64")
    out = []
    for temp in _floats(args.temperatures, "--temperatures"):
        for b in _ints(batches, "--batches"):
            n = args.num_requests or (max(b, 4) if args.quick else max(2 * b, 4))
            sets = [sweep, f"engine.pair={json.dumps(pair)}", f"engine.temperature={temp}", f"server.max_batch={b}",
                    f"workload.num_requests={n}", 'workload.arrival="offline"', "policy.max_k=6",
                    f'workload.prompt_len={{dist="fixed",value={plen}}}',
                    f'workload.output_len={{dist="fixed",value={olen}}}'] + TIMING + list(args.set)
            out.append((temp, b, load_config(None, sets)))
    return out


def point(pair: str, temp: float, batch: int, label: str, run) -> dict:
    from contract import runs

    s = run.summary
    return {"pair": pair, "temperature": temp, "batch": batch, "policy": label,
            "resolved": runs.resolved_params(run.policy) if run.policy is not None else {},
            "output_throughput": s["output_throughput"], "mean_tpot_s": s.get("mean_tpot_s"),
            "acceptance_length": s.get("acceptance_length"), "select_share": s["select_share"],
            "select_time_s": s["select_time_s"], "step_time_s": s["step_time_s"],
            "mean_batch": s.get("mean_batch"), "num_requests": s.get("num_requests"),
            "output_tokens": s.get("output_tokens"), "clock": s["clock"], "num_steps": s.get("num_steps"),
            "tokens_per_step": s.get("tokens_per_step"), "prefill_time_s": s.get("prefill_time_s"),
            "prefill_passes": s.get("prefill_passes"), "mixed_prefills": s.get("mixed_prefills", 0),
            "duration_s": s.get("duration_s")}


def speculative(label: str) -> bool:
    return label != "none"


def markdown(points: list[dict]) -> str:
    """Per temperature: speedup vs plain per policy x batch, then a summary row per batch."""
    lines = []
    for temp in sorted({p["temperature"] for p in points}):
        pts = [p for p in points if p["temperature"] == temp]
        batches = sorted({p["batch"] for p in pts})
        labels = list(dict.fromkeys(p["policy"] for p in pts))
        at = {(p["batch"], p["policy"]): p for p in pts}
        lines += [f"### {pts[0]['pair']}, T={temp:g}: output tok/s and x plain (same requests per batch)", "",
                  "| policy | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|" + "---|" * len(batches)]
        for lab in labels:
            cells = []
            ks = sorted({at[(b, lab)]["resolved"].get("k") for b in batches if (b, lab) in at} - {None})
            name = f"{lab} (k={','.join(map(str, ks))})" if "kbest" in lab and ks else lab
            for b in batches:
                p, base = at.get((b, lab)), at.get((b, "none"))
                if p is None:
                    cells.append("")
                elif base is None or lab == "none":
                    cells.append(f"{p['output_throughput']:.1f}")
                else:
                    cells.append(f"{p['output_throughput']:.1f} ({p['output_throughput'] / base['output_throughput']:.2f}x)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| batch | plain tok/s | best fixed k | best fixed x plain | best policy | best x plain "
                      "| TETRIS best / best fixed | acc. len (TETRIS best) | mean TPOT plain / best ms | max select share |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        stop = None
        for b in batches:
            row = {lab: at[(b, lab)] for lab in labels if (b, lab) in at}
            none = row.get("none")
            fixed = {lab: p for lab, p in row.items() if lab.startswith("fixed-k")}
            tet = {lab: p for lab, p in row.items() if lab.startswith("tetris")}
            spec = {lab: p for lab, p in row.items() if speculative(lab)}
            bf = max(fixed.values(), key=lambda p: p["output_throughput"]) if fixed else None
            bt = max(tet.values(), key=lambda p: p["output_throughput"]) if tet else None
            bs = max(spec.values(), key=lambda p: p["output_throughput"]) if spec else None
            ref = none["output_throughput"] if none else None
            x = (lambda p: f"{p['output_throughput'] / ref:.3f}x" if (p and ref) else "")
            if stop is None and bs and ref and bs["output_throughput"] < ref:
                stop = b
            tpot = (f"{1e3 * none['mean_tpot_s']:.2f} / {1e3 * bs['mean_tpot_s']:.2f}"
                    if none and bs and none.get("mean_tpot_s") and bs.get("mean_tpot_s") else "")
            lines.append(" | ".join([
                f"| {b}", f"{ref:.1f}" if ref else "", bf["policy"] if bf else "", x(bf), bs["policy"] if bs else "",
                x(bs), f"{bt['output_throughput'] / bf['output_throughput']:.3f}x" if (bt and bf) else "",
                f"{bt['acceptance_length']:.3f}" if bt and bt.get("acceptance_length") is not None else "", tpot,
                f"{100 * max(p['select_share'] for p in row.values()):.2f}%"]) + " |")
        if any((b, "none") in at for b in batches):
            lines += ["", f"Speculation stops paying (best speculative policy < plain) at batch: "
                          f"{stop if stop is not None else 'none of ' + ','.join(map(str, batches))}", ""]
    return "\n".join(lines)


def budget(points: list[dict]) -> str:
    """Where each speculative policy's gain over plain goes, per (temperature, batch): the steps'
    own speedup (tokens emitted by steps / step seconds, vs plain), the same at plain's mean batch
    (requests finish at different steps, so a speculative run's batch drains at the end and
    refills one request at a time), and the prefill seconds (one pass per admission: plain admits
    whole waves, speculation mostly one request per pass; with server.admission = "mixed", "+ J mixed"
    joins rode in verification passes, their prefill counted in the steps' time)."""
    lines = ["| T | batch | policy | steps | mean batch | tokens / step | ms / step | step speedup "
             "| step speedup at plain's batch | prefill passes | prefill s (share) | x plain |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    at = {(p["temperature"], p["batch"], p["policy"]): p for p in points}

    def rate(q):  # tokens emitted by decoding steps per step second (each request's first token is prefill's)
        return (q["output_tokens"] - q["num_requests"]) / q["step_time_s"]

    def mixed(q):
        return f" + {q['mixed_prefills']} mixed" if q.get("mixed_prefills") else ""

    for p in points:
        base = at.get((p["temperature"], p["batch"], "none"))
        if not p.get("num_steps") or not p.get("step_time_s") or base is None or not base.get("num_steps"):
            continue
        x_step = rate(p) / rate(base)
        x_full = x_step * base["mean_batch"] / p["mean_batch"]
        share = p["prefill_time_s"] / p["duration_s"] if p.get("duration_s") else 0.0
        lines.append(f"| {p['temperature']:g} | {p['batch']} | {p['policy']} | {p['num_steps']} | {p['mean_batch']:.2f} "
                     f"| {p['tokens_per_step']:.2f} | {1e3 * p['step_time_s'] / p['num_steps']:.1f} | {x_step:.3f}x "
                     f"| {x_full:.3f}x | {p['prefill_passes']}{mixed(p)} | {p['prefill_time_s']:.2f} ({100 * share:.0f}%) "
                     f"| {p['output_throughput'] / base['output_throughput']:.3f}x |")
    return "\n".join(lines) if len(lines) > 2 else ""


def run_points(args, configs) -> list[dict]:
    from engine.serve import run_config

    pts = []
    for temp, b, cfg in configs:
        t0 = time.perf_counter()
        best: dict = {}  # label -> fastest point over the repeats (each repeat runs every policy: A B A B)
        for _ in range(args.repeats):
            res = run_config(cfg, progress=False)
            for label, r in res.items():
                p = point(args.pair, temp, b, label, r)
                runs = best.get(label, {}).get("runs", []) + [p["output_throughput"]]
                if label not in best or p["output_throughput"] > best[label]["output_throughput"]:
                    best[label] = p
                best[label]["runs"] = runs
        pts += best.values()
        print(f"# {args.pair} T={temp:g} batch {b}: {len(best)} policies x {args.repeats}, "
              f"{cfg.workload.num_requests} requests, {time.perf_counter() - t0:.1f} s wall", file=sys.stderr, flush=True)
    return pts


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        configs = build_configs(args)
        from engine.pairs import resolve_pair

        resolve_pair(configs[0][2].engine.pair)
        import torch

        e = configs[0][2].engine
        meta = {"pair": args.pair, "clock": e.clock, "threads": e.threads, "sets": list(args.set),
                "torch": torch.__version__, "quick": args.quick, "cpus": os.cpu_count(),
                "engine": {k: v for k, v in vars(e).items()},
                "prompt_len": configs[0][2].workload.prompt_len.value,
                "output_len": configs[0][2].workload.output_len.value}
        pts = run_points(args, configs)
    except ConfigError as err:
        print(f"engine_sweep: error: {err}", file=sys.stderr)
        return 2
    note = (f"Timing: engine.clock = {meta['clock']!r}, engine.threads = {meta['threads']} "
            f"({'CPU seconds of this process' if meta['clock'] == 'cpu' else 'wall-clock seconds'}); "
            f"prompt {meta['prompt_len']}, output {meta['output_len']} tokens, all requests at t = 0; "
            f"fastest of {args.repeats} interleaved run(s) per policy.")
    print(note + "\n")
    print(markdown(pts))
    table = budget(pts)
    if table:
        print("### Where the time goes (per policy vs plain, same requests)\n\n" + table + "\n")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"meta": meta, "note": note, "points": pts}, indent=1, default=str))
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
