"""`tetris check lossless`: the configured policy on exact models; is the output distribution the target's?"""
from __future__ import annotations

import json
import sys

DEFAULT_TEMPERATURES = (0.5, 1.0, 1.7)


def add_commands(sub) -> None:
    p = sub.add_parser("check", help="correctness checks an engine builder can run on any policy config",
                       description="Correctness checks. `tetris check lossless` runs the configured policy.")
    p.set_defaults(func=_lossless)  # no CHECK named: one-line error, exit 2
    checks = p.add_subparsers(dest="check", metavar="CHECK")
    q = checks.add_parser(
        "lossless",
        help="run the configured policy on exact tabular models at T > 0: chi-square vs the exact target joint",
        description="Serve many requests with the config's [policy] (and engine.estimator, server.verify_layout) "
        "on models whose output distribution is known exactly, at engine.temperature (or 0.5, 1.0, 1.7 when the "
        "config is greedy), and compare the joint of the first --tokens emitted tokens with the exact target joint "
        "(chi-square, cells with expected count < 5 pooled). Prints the statistic, p-value and the smallest TV the "
        "test detects half the time. Exit 0: consistent with lossless; 1: distribution off (p < alpha / #tests); "
        "2: bad input. --control runs a deliberate break that must fail (shows the check has power).",
    )
    q.add_argument("--config", metavar="FILE.toml", help="config whose [policy] and [engine] are checked")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted path, TOML value), repeatable, e.g. policy.budget=\"goodput\"")
    q.add_argument("--temperatures", metavar="T,T", help="comma list of temperatures > 0 (default: engine.temperature, "
                   "or 0.5,1.0,1.7 when it is 0)")
    q.add_argument("--requests", type=int, default=6000, help="requests per temperature (default 6000)")
    q.add_argument("--tokens", type=int, default=4, help="emitted tokens per request in the tested joint (default 4)")
    q.add_argument("--model", default="tabular", help="tabular (default), tiny (tiny Llama pair) or eagle "
                   "(tiny target + EAGLE-style draft reading its hidden states)")
    q.add_argument("--step-time", default="knee", help="step-cost model for goodput/dsd budgets: knee (default), "
                   "sqrt, flag (1 + 0.6 [verified > 0]), affine")
    q.add_argument("--max-batch", type=int, default=0, help="running requests (default server.max_batch, at most 32)")
    q.add_argument("--seed", type=int, default=0, help="seed of the models and the draws (default 0)")
    q.add_argument("--alpha", type=float, default=1e-3, help="significance level over all tests (default 1e-3)")
    q.add_argument("--control", default="", help="NEGATIVE CONTROL (must fail): all_scores, token_prob, accept_all, "
                   "p_temp (see engine/lossless.py)")
    q.add_argument("--json", action="store_true", help="print one JSON object per temperature")
    q.set_defaults(func=_lossless)


def _floats(text: str, flag: str) -> list[float]:
    from contract.config import ConfigError

    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: expected a comma list of numbers, got {text!r}") from None
    if not vals or min(vals) <= 0 or max(vals) > 100:
        raise ConfigError(f"{flag}: expected temperatures in (0, 100], got {text!r}")
    return vals


def _lossless(args) -> int:
    from engine import lossless as L
    from contract.config import ConfigError, load_config, verify_layout

    if getattr(args, "check", None) != "lossless":
        raise ConfigError("check: name a check, e.g. `tetris check lossless`")
    cfg = load_config(args.config, args.overrides)
    for flag, value, allowed in (("--model", args.model, L.MODELS), ("--step-time", args.step_time, tuple(L.STEP_TIMES)),
                                 ("--control", args.control, L.CONTROLS)):
        if value not in allowed:
            raise ConfigError(f"{flag}: expected one of {', '.join(a for a in allowed if a)}, got {value!r}")
    if not 100 <= args.requests <= 10_000_000:
        raise ConfigError(f"--requests: expected 100..10000000, got {args.requests}")
    if not 1 <= args.tokens <= 6:
        raise ConfigError(f"--tokens: expected 1..6, got {args.tokens}")
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha: expected 0 < alpha < 1, got {args.alpha}")
    if args.max_batch < 0 or args.seed < 0:
        raise ConfigError("--max-batch and --seed must be >= 0")
    if args.temperatures:
        temps = _floats(args.temperatures, "--temperatures")
    else:
        temps = [cfg.engine.temperature] if cfg.engine.temperature > 0 else list(DEFAULT_TEMPERATURES)
    max_batch = args.max_batch or min(cfg.server.max_batch, 32)
    level = args.alpha / len(temps)
    results = []
    for t in temps:
        r = L.check(cfg.policy, t, estimator=cfg.engine.estimator, requests=args.requests, tokens=args.tokens,
                    seed=args.seed, max_batch=max_batch, model=args.model,
                    packed=verify_layout(cfg, "engine") == "packed",
                    step_time=args.step_time, control=args.control)
        results.append(r)
        if args.json:
            sys.stdout.write(json.dumps(dict(r.__dict__, ok=r.pvalue >= level)) + "\n")
        else:
            print(f"{r.label:<10} T={t:<5g} chi2={r.statistic:9.1f} df={r.df:<4d} p={r.pvalue:<10.3g} "
                  f"detectable TV={r.detectable_tv:.4f} verified={r.verified} accepted={r.accepted} "
                  f"{'ok' if r.pvalue >= level else 'OFF'}")
    bad = [r for r in results if r.pvalue < level]
    if not args.json:
        what = f" (negative control {args.control!r})" if args.control else ""
        print(f"{'distribution OFF' if bad else 'consistent with lossless'}{what}: {len(temps)} test(s), "
              f"{args.requests} requests x {args.tokens} tokens each, level {level:.3g} per test")
    return 1 if bad else 0
