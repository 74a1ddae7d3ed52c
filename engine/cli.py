"""`tetris engine` and `tetris profile`: the real engine's command line."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from contract.runs import add_run_arguments

DEFAULT_SCENARIO = Path(__file__).with_name("default.toml")
ENGINE_TOKENS_PER_S = 700.0  # rough output tokens/s of the committed pair on CPU (docs/engine.md order of magnitude)


def add_commands(sub) -> None:
    p = sub.add_parser(
        "engine",
        help="run a workload on the real PyTorch engine (draft/target pair) and compare policies",
        description="Serve a workload with batched speculative decoding on a local HF draft/target pair and report "
        "the same metrics as `tetris simulate`, measured. Without --config: 32 held-out stdlib prompts, batch 8, "
        "greedy, none / fixed k=1..4 / DSD / TETRIS on the committed pair (engine/pair).",
    )
    add_run_arguments(p, "scenario file: the simulate config plus [engine]")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<timestamp>-engine-<scenario>); must be "
                   "new, or a previous run folder with --force")
    p.add_argument("--force", action="store_true", help="replace --out if it is a previous run folder of this tool")
    p.add_argument("--dump-outputs", metavar="FILE.jsonl", help="write {id, prompt_ids, output_ids} per request")
    p.add_argument("--calibration-report", metavar="DIR",
                   help="verify every draft and write calibration.json + reliability PNGs per estimator to DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_engine)

    q = sub.add_parser(
        "profile",
        help="measure draft and target step times over a grid; writes the simulator's cost table",
        description="Time one target forward (batch x tokens per request x context) and one draft forward "
        "(batch x context) on the pair; writes CSV batch,tokens_per_request,context,target_s,draft_s "
        "(read by `tetris simulate --set cost.model=table --set cost.table=FILE`).",
    )
    q.add_argument("--config", metavar="FILE.toml", help="config whose [engine] names pair/device")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q.add_argument("--batch", default="1,4,8,16,32", help="comma list of batch sizes (default 1,4,8,16,32)")
    q.add_argument("--tokens", default="1,2,3,4,6,8", help="comma list of tokens per request (default 1,2,3,4,6,8)")
    q.add_argument("--context", default="64,256,512", help="comma list of context lengths (default 64,256,512)")
    q.add_argument("--repeats", type=int, default=3, help="timed repeats per point after one warm-up (the minimum counts; default 3)")
    q.add_argument("--out", metavar="FILE.csv", default="profile.csv", help="output CSV (default profile.csv)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_profile)


def _load(args):
    import tomllib

    from contract.config import load_config

    base = None if args.config else tomllib.loads(DEFAULT_SCENARIO.read_text())
    return load_config(args.config, args.overrides, base=base)


def comparison_table(results: dict) -> str:
    from contract.runs import baseline_throughputs

    fixed = baseline_throughputs(results)
    ref = max(fixed) if fixed else next(iter(results.values())).summary["output_throughput"]
    ref_name = "best fixed" if fixed else "first"
    head = (f"{'policy':<22} {'tok/s':>9} {'vs ' + ref_name:>14} {'TPOT ms':>9} {'E2E s':>7} {'acc.len':>8} "
            f"{'VSR':>6} {'select%':>8}")
    match = all("greedy_prefix_match" in r.summary for r in results.values())
    if match:  # greedy, with plain decoding among the variants: prefix match vs plain (engine.match)
        head += f" {'match':>7}"
    lines = [head, "-" * len(head)]
    for lab, r in results.items():
        s = r.summary
        ratio = s["output_throughput"] / ref if ref else float("nan")
        lines.append(f"{lab:<22} {s['output_throughput']:>9.1f} {ratio:>14.4f} {1e3 * s['mean_tpot_s']:>9.2f} "
                     f"{s['mean_e2e_s']:>7.2f} {s['acceptance_length']:>8.3f} {s['draft_acceptance_rate']:>6.3f} "
                     f"{100 * s['select_share']:>8.3f}" + (f" {s['greedy_prefix_match']:>7.4f}" if match else ""))
    return "\n".join(lines)


def _engine(args) -> int:
    from engine.serve import run_config, summary_json, write_run
    from contract.outpaths import check_out_dir, check_out_file, default_run_folder

    cfg = _load(args)
    name = Path(args.config).stem if args.config else "default"
    out = Path(args.out) if args.out else default_run_folder(f"engine-{name}")
    check_out_dir(out, force=args.force)  # every output is checked before the (long) run
    if args.dump_outputs:
        check_out_file(args.dump_outputs, "--dump-outputs")
    if args.calibration_report:
        check_report_dir(args.calibration_report)
    if cfg.engine.trace_out:
        check_out_file(cfg.engine.trace_out, "engine.trace_out")
    from contract.runs import policy_variants
    from contract.workload import size_note

    todo = policy_variants(cfg, args.policy)  # validated once, before the (long) run
    note = size_note(cfg, len(todo), ENGINE_TOKENS_PER_S, "engine time")
    if note:
        print(note + f" (at ~{ENGINE_TOKENS_PER_S:.0f} tokens/s, the committed pair on one CPU core)", file=sys.stderr)
    t0 = time.perf_counter()
    extra = None
    if cfg.engine.backend == "vllm":  # docs/vllm.md
        from engine.vllm.runner import check_backend_args, run_config as run_vllm, step_files

        check_backend_args(cfg, args, todo)
        results = run_vllm(cfg, only=args.policy, progress=not args.quiet, todo=todo)
        extra = step_files(results)
    else:
        results = run_config(cfg, only=args.policy, progress=not args.quiet,
                             calibration=bool(args.calibration_report), todo=todo)
    wall = time.perf_counter() - t0
    write_run(out, cfg, results, dump_outputs=args.dump_outputs, extra_files=extra)
    if extra:  # the vLLM step logs now live in the run folder; drop their temporary folder
        import shutil

        for folder in {Path(src).parent for src in extra.values()}:
            shutil.rmtree(folder, ignore_errors=True)
    if args.calibration_report:
        from engine.calibration import write_report

        write_report(args.calibration_report, results)
    if args.json:
        sys.stdout.write(summary_json(results))
    else:
        tokens = sum(r.summary["output_tokens"] for r in results.values())
        print(comparison_table(results))
        dtype = next(iter(results.values())).summary.get("resolved_dtype", "")
        print(f"\n{len(results)} policies, {tokens} output tokens in {wall:.1f} s; target {dtype}; run folder: {out}")
    return 0


def check_report_dir(path) -> None:
    """--calibration-report: a new folder, or one holding only files this tool writes."""
    from contract.config import ConfigError
    from contract.outpaths import check_out_file, is_run_folder

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--calibration-report {str(p)!r}: exists and is not a folder")
    if p.is_dir():
        if any(p.iterdir()) and not is_run_folder(p):
            raise ConfigError(f"--calibration-report {str(p)!r}: folder holds other files; name a new folder")
        return
    check_out_file(p / "calibration.json", "--calibration-report")


def _ints(text: str, flag: str) -> list[int]:
    from contract.config import ConfigError

    parts = text.split(",")
    if any(not x.strip() for x in parts):
        raise ConfigError(f"{flag}: empty item in {text!r}; expected a comma list of integers such as 1,4,8")
    try:
        vals = [int(x) for x in parts]
    except ValueError:
        raise ConfigError(f"{flag}: expected a comma list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ConfigError(f"{flag}: expected positive integers, got {text!r}")
    return sorted(set(vals))


def _profile(args) -> int:
    from engine.pairs import load_pair
    from engine.profile import profile, write_csv
    from contract.config import ConfigError

    batches, tokens, contexts = _ints(args.batch, "--batch"), _ints(args.tokens, "--tokens"), _ints(args.context, "--context")
    if args.repeats < 1:
        raise ConfigError(f"--repeats: expected >= 1, got {args.repeats}")
    from contract.outpaths import check_out_file

    check_out_file(args.out, "--out")  # before profiling: the measurement is never lost to a bad path
    cfg = _load(args)
    if cfg.engine.threads:
        import torch

        torch.set_num_threads(cfg.engine.threads)
    target, draft, _ = load_pair(cfg.engine.pair, cfg.engine.device, cfg.engine.draft_dtype, cfg.engine.dtype)
    for name, model in (("target", target), ("draft", draft)):
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if limit and max(contexts) + max(tokens) > limit:
            raise ConfigError(f"--context {max(contexts)}: context + tokens per request = {max(contexts) + max(tokens)} "
                              f"exceeds the {name}'s max_position_embeddings = {limit}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(batches) * len(tokens) * len(contexts), unit="pt", file=sys.stderr, desc="profile", leave=False)
    from engine.clock import make_clock

    if cfg.engine.clock == "cpu" and cfg.engine.device == "cuda":
        raise ConfigError("engine.clock: 'cpu' counts this process's CPU seconds only; use 'wall' with engine.device = 'cuda'")
    try:
        rows = profile(target, draft, batches, tokens, contexts, args.repeats, progress=bar,
                       clock=make_clock(cfg.engine.clock))
    finally:
        if bar is not None:
            bar.close()
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0
