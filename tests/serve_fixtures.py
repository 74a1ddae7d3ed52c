"""A real `tetris serve` app on 127.0.0.1 (uvicorn in a thread), for tests/test_serve_*.py."""
from __future__ import annotations

import socket
import threading
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(*overrides: str):
    from contract.config import load_config

    base = tomllib.loads((REPO / "engine" / "default.toml").read_text())
    return load_config(None, list(overrides), base=base)


class LiveServer:
    """build_state + uvicorn on a free loopback port; .url, .state; stop() drains and joins (bounded)."""

    def __init__(self, cfg, models):
        from engine.http.server import bind, build_state, make_server

        self.state = build_state(cfg, models=models)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sock = bind("127.0.0.1", self.port)
        self.server = make_server(self.state, cfg.server.shutdown_grace_s)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(400):  # bounded: at most ~20 s
            if self.server.started:
                break
            time.sleep(0.05)
        assert self.server.started, "server did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.state.loop.close(timeout=20)
        self.sock.close()
