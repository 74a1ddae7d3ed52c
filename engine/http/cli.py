"""`tetris serve` (the engine behind an OpenAI-compatible API) and `tetris bench-serve` (the load generator)."""
from __future__ import annotations

import os
import sys


def add_commands(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the native engine behind an OpenAI-compatible HTTP API (/v1/completions, /metrics, ...)",
        description="The engine (continuous batching, the config's [policy] per step) behind /v1/completions, "
        "/v1/chat/completions, /v1/models, /health and /metrics (Prometheus, vLLM's names). Without --config: "
        "engine/default.toml's [engine] and [server] (the committed pair, batch 8, greedy, TETRIS k=3 e=2). "
        "See docs/serve.md.",
    )
    p.add_argument("--config", metavar="FILE.toml", help="config file: [engine], [server], [policy] are read")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted path, TOML value), repeatable, e.g. policy.name='\"none\"'")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.set_defaults(func=_serve)

    b = sub.add_parser(
        "bench-serve",
        help="replay the config's workload against an OpenAI-compatible server; vllm bench serve's result JSON",
        description="Send the workload's requests (arrival times, prompt token ids, output lengths, ignore_eos) "
        "to a running server (tetris serve or vLLM's) as streaming /v1/completions, and write the result in "
        "`vllm bench serve`'s JSON format (client: this in-house httpx client). See docs/serve.md.",
    )
    b.add_argument("--config", metavar="FILE.toml", help="config whose [workload] is replayed (and [engine] pair/temperature)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--base-url", default="http://127.0.0.1:8000", help="server address (default http://127.0.0.1:8000)")
    b.add_argument("--model", help="model id to send (default: the server's first /v1/models entry)")
    b.add_argument("--out", metavar="FILE.json", required=True, help="result JSON (vllm bench serve's fields)")
    b.add_argument("--label", default="", help="free text stored in the result")
    b.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take (default 600)")
    b.set_defaults(func=_bench)


def _serve(args) -> int:
    from engine.cli import _load
    from engine.http.server import bind, build_state, run

    cfg = _load(args)
    sock = bind(args.host, args.port)  # before loading the models: a busy port fails fast
    try:
        state = build_state(cfg)
    except BaseException:
        sock.close()
        raise
    lim = state.limits
    print(f"tetris serve: http://{args.host}:{args.port} model {lim.model_name!r}, policy {state.policy_label}, "
          f"max_batch {cfg.server.max_batch}, max_queue {cfg.server.max_queue}, temperature {lim.temperature:g}",
          file=sys.stderr, flush=True)
    code = 0
    try:
        run(state, sock, cfg.server.shutdown_grace_s)  # returns once drained (uvicorn re-raises the signal)
    except KeyboardInterrupt:
        code = 130
    except BaseException as err:  # tetris_cli.Terminated (SIGTERM)
        if type(err).__name__ != "Terminated":
            raise
        code = 143
    print(f"tetris serve: stopped ({'interrupted' if code == 130 else 'terminated' if code else 'done'})",
          file=sys.stderr, flush=True)
    # drained and closed: skip the interpreter's slow teardown of torch and the models (seconds here)
    sys.stdout.flush()
    os._exit(code)


def _bench(args) -> int:
    from engine.cli import _load
    from engine.http.bench import run_bench
    from contract.outpaths import check_out_file

    check_out_file(args.out, "--out")
    cfg = _load(args)
    result = run_bench(cfg, args.base_url, args.model, label=args.label, timeout=args.timeout)
    from engine.http.bench import summary_line, write_result

    write_result(args.out, result)
    print(summary_line(result))
    return 0
