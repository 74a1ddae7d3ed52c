"""`tetris serve` as a real process: SIGTERM drains and exits; a busy port is a one-line exit 2.

Power: a server that hangs after SIGTERM fails the bounded wait (60 s, far above the 1 s grace);
an in-flight stream that is cut without an answer (no finish_reason and no error chunk, or no
[DONE]) fails; a traceback or a zero exit on a busy port fails.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from serve_fixtures import REPO, free_port  # noqa: E402


def serve_cmd(port: int, *sets: str) -> list[str]:
    cmd = [sys.executable, str(REPO / "tetris_cli.py"), "serve", "--port", str(port)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def env():
    return dict(os.environ, PYTHONPATH=str(REPO))


def test_sigterm_drains_and_exits():
    port = free_port()
    proc = subprocess.Popen(serve_cmd(port, "server.shutdown_grace_s=1", "policy.name=\"fixed\"", "policy.k=2"),
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # bounded: ~60 s for start-up on a busy box
            if proc.poll() is not None:
                break
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        lines = []
        with httpx.stream("POST", url + "/v1/completions", timeout=60,
                          json={"prompt": "import os\n", "max_tokens": 1000, "ignore_eos": True, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    lines.append(line[6:])
                    if len(lines) == 1:
                        proc.send_signal(signal.SIGTERM)  # mid-stream
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 143, err
    assert "shutting down" in err and "Traceback" not in err
    assert lines[-1] == "[DONE]"
    last = json.loads(lines[-2])
    # either it finished within the grace, or it got a clear error
    assert ("error" in last and "shutdown_grace_s" in last["error"]["message"]) or \
        last["choices"][0]["finish_reason"] == "length"


def test_busy_port_is_one_line_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run(serve_cmd(port), env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and f"--port {port}" in p.stderr, p.stderr


def test_bad_config_key_is_exit_2():
    p = subprocess.run(serve_cmd(free_port(), "server.max_queue=-1"), env=env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "server.max_queue" in p.stderr and "Traceback" not in p.stderr
