"""`tetris validate`, `tetris report`, `tetris plan` (heavy imports inside the commands)."""
from __future__ import annotations


def _plan(args) -> int:
    from analysis.plan_run import run

    return run(args)


def _report(args) -> int:
    from analysis.report import run

    return run(args)


def _validate(args) -> int:
    from analysis.validate import run

    return run(args)


def _config_args(p) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config (the simulate/engine format)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (TOML value), repeatable")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "plan", help="capacity planning: SLO-meeting rate per replica per policy, replicas for a qps",
        description="Capacity planning on the simulator: for every policy family (none, fixed k, DSD, TETRIS k/e) "
        "find the highest Poisson request rate per replica whose steady-state p99 TTFT / p99 TPOT meet the SLOs "
        "(warm-up discarded, growing queues called overloaded, never above the replica's saturation throughput), "
        "with a confidence interval over --seeds independent replications; then the replicas needed for --qps. "
        "Writes plan.json, plan.png and config.toml to --out; a rerun with the same --out resumes from its cache.")
    p.add_argument("--slo-tpot-p99", type=float, default=0.0, metavar="S", help="p99 TPOT SLO (s); 0 = none")
    p.add_argument("--slo-ttft-p99", type=float, default=0.0, metavar="S", help="p99 TTFT SLO (s); 0 = none")
    p.add_argument("--qps", type=float, required=True, metavar="Q", help="aggregate request rate to serve (req/s)")
    _config_args(p)
    p.add_argument("--seeds", type=int, default=5,
                   help="independent replications (seeds) per refined candidate; the answer is their mean with a "
                   "95%% t interval (default 5)")
    p.add_argument("--rounds", type=int, default=7,
                   help="bisection rounds in (0, saturation) per seed; resolution saturation/2^rounds (default 7)")
    p.add_argument("--k", default="1,2,3,4", help="fixed-k windows searched (default 1,2,3,4); dsd max_k = max")
    p.add_argument("--extra", default="1,2,3", help="tetris extra tokens e (default 1,2,3)")
    p.add_argument("--tetris-k", default="", help="tetris k values (default: the --k list)")
    p.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="dask scheduler tcp://HOST:PORT (default: embedded LocalCluster; 'serial': no dask)")
    p.add_argument("--out", default="runs/plan", metavar="DIR",
                   help="output folder (default runs/plan); an existing plan folder is resumed from its cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_plan)

    p = sub.add_parser("report", help="Markdown report with PNG plots from run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by simulate / engine / validate")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/<timestamp>-report); "
                   "must be new, or a previous run folder with --force")
    p.add_argument("--force", action="store_true", help="replace --out if it is a previous run folder of this tool")
    p.add_argument("--trace", default="", metavar="FILE", help="engine acceptance trace (JSONL) for the acceptance plot")
    p.add_argument("--board-config", default=None, metavar="FILE",
                   help="simulate config (TOML) to rerun for the fixed-k vs TETRIS board when no run has per-request "
                   "windows (default: the first run's config)")
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "validate", help="simulator vs real engine on identical requests: error per policy and metric",
        description="Run the real engine and the simulator on identical requests (offline and at fractions of the "
        "measured capacity), fit the simulator's cost table to the engine's profile, and report the relative error "
        "per policy and metric against the project's accuracy goals. Exit 0 for a finished run with a verdict line "
        "(goals met / missed); --strict exits 1 when a goal is missed. Writes validate.json, validate.md, "
        "scatter.png to --out.")
    _config_args(p)
    p.add_argument("--measured", default="", metavar="RESULT.json",
                   help="validate against a `vllm bench serve --save-result` JSON instead of running the engine: "
                   "simulate the same workload with the configured cost model and policy (docs/validation.md)")
    p.add_argument("--metrics", default="", metavar="PROM.txt",
                   help="with --measured: a Prometheus text dump of the vLLM server's /metrics; its spec-decode "
                   "counters give the acceptance model")
    p.add_argument("--policies", default="none,fixed,tetris", help="comma list (default none,fixed,tetris)")
    p.add_argument("--loads", default="offline,0.5,0.9", help="offline and/or fractions of measured capacity (default offline,0.5,0.9)")
    p.add_argument("--profile", default="", metavar="CSV", help="reuse this `tetris profile` table instead of profiling")
    p.add_argument("--clock", choices=("cpu", "wall"), default=None,
                   help="engine clock: cpu = CPU seconds of a one-thread engine (default on CPU: immune to other load), wall")
    p.add_argument("--speed-probe", action="store_true",
                   help="rescale the simulated costs by a machine-speed probe taken before each run (experimental)")
    p.add_argument("--repeats", type=int, default=3, help="engine runs per point; the fastest (shortest-duration) one counts (default 3)")
    p.add_argument("--json", action="store_true", help='print {"policies": {name: {"measured": .., "simulated": ..}}}')
    p.add_argument("--strict", action="store_true", help="exit 1 when any accuracy goal is missed (for CI)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/<timestamp>-validate); "
                   "must be new, or a previous run folder with --force")
    p.add_argument("--force", action="store_true", help="replace --out if it is a previous run folder of this tool")
    p.set_defaults(func=_validate)
