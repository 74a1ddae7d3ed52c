"""Building and running the server: config -> engine + loop + app -> uvicorn on a bound socket.

    state = build_state(cfg)                  # loads the pair (or models=(target, draft, tokenizer))
    sock = bind(host, port)                   # ConfigError (exit 2) when the port cannot be used
    run(state, sock, cfg.server.shutdown_grace_s)   # until SIGINT/SIGTERM; drains, then returns

One policy per server: the config's [policy] table (a sweep is ignored). The engine times itself
with the wall clock here (engine.clock is for batch runs); latencies in /metrics are wall seconds.
"""
from __future__ import annotations

import dataclasses
import socket
import sys
import time
from types import SimpleNamespace

from contract.config import Config, ConfigError, PolicyConfig, build, verify_layout


def model_name(cfg: Config) -> str:
    return cfg.server.model_name or cfg.engine.pair or "engine/pair"


def serve_policy(cfg: Config) -> tuple[str, PolicyConfig]:
    from contract.runs import policy_variants

    (label, table), = policy_variants(dataclasses.replace(cfg, sweep=[]))
    return label, build(PolicyConfig, table, "policy")


def max_positions(*models) -> int:
    limits = [getattr(getattr(m, "config", None), "max_position_embeddings", None) for m in models]
    limits = [int(x) for x in limits if x]
    return min(limits) if limits else 1 << 20


def build_state(cfg: Config, models=None):
    """ServeState with a started engine thread (cfg validated; the pair loaded unless models given)."""
    import torch

    from engine.core import Engine
    from engine.http.app import ServeState
    from engine.http.loop import EngineLoop
    from engine.http.metrics import ServeMetrics
    from engine.http.protocol import Limits
    from engine.pairs import device_dtype, load_pair
    from engine.serve import step_time_for, warmup
    from theory.policies import needs_step_time
    from theory.policy import make_policy

    e = cfg.engine
    label, pcfg = serve_policy(cfg)
    device_dtype(e.device)  # fail early on a missing CUDA
    if e.threads:
        torch.set_num_threads(e.threads)
    target, draft, tokenizer = models if models is not None else load_pair(e.pair, e.device, e.draft_dtype, e.dtype)
    if tokenizer is None:
        raise ConfigError("engine.pair: the pair has no tokenizer; tetris serve needs one")
    warmup(target, draft, cfg)
    step_time = None
    if needs_step_time(pcfg):  # dsd / goodput: a step-time model at the workload's prompt length
        from contract.workload import mean_length

        wl = SimpleNamespace(prompts=[[0] * max(1, int(mean_length(cfg.workload.prompt_len)))])
        step_time = step_time_for(cfg, target, draft, wl)
    policy = make_policy(pcfg, step_time, layout=verify_layout(cfg, "engine"))
    engine = Engine(target, draft, policy, temperature=e.temperature, estimator=e.estimator, clock=time.perf_counter,
                    packed=verify_layout(cfg, "engine") == "packed", slots=cfg.server.max_batch,
                    mixed=cfg.server.admission == "mixed")
    name = model_name(cfg)
    holder = {}
    metrics = ServeMetrics(name, running=lambda: holder["loop"].num_running(),
                           waiting=lambda: holder["loop"].num_waiting())
    loop = holder["loop"] = EngineLoop(engine, cfg.server.max_batch, cfg.server.max_queue, metrics)
    vocab = int(getattr(getattr(target, "config", None), "vocab_size", 0) or len(tokenizer))
    limits = Limits(name, float(e.temperature), max_positions(target, draft), vocab)
    state = ServeState(loop, tokenizer, limits, metrics, cfg.seed, getattr(tokenizer, "eos_token_id", None), label)
    loop.start()
    return state


def bind(host: str, port: int) -> socket.socket:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port: expected 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ConfigError(f"--host {host!r}: {err.strerror or err}") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def make_server(state, grace_s: float):
    """A uvicorn.Server whose first SIGINT/SIGTERM drains: new requests get 503, running ones
    may finish for grace_s, then end with an error; uvicorn then closes the connections."""
    import uvicorn

    from engine.http.app import make_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not state.draining:
                state.draining = True
                state.loop.drain(grace_s)
                print(f"tetris serve: shutting down (in-flight requests have {grace_s:g} s)", file=sys.stderr,
                      flush=True)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(make_app(state), log_level="warning", timeout_graceful_shutdown=grace_s + 5.0,
                            access_log=False)
    return Server(config)


def run(state, sock: socket.socket, grace_s: float) -> None:
    server = make_server(state, grace_s)
    try:
        server.run(sockets=[sock])
    finally:
        state.draining = True
        state.loop.close(timeout=grace_s + 5.0)
        sock.close()
