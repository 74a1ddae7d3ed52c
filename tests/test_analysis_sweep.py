"""analysis.sweep: one result file per config, resume without rerunning, Dask LocalCluster path."""
import json
import threading

import pytest

from analysis.sweep import atomic_write_text, config_key, load_result, resolve, run_sweep
from contract.config import ConfigError, load_config

CALLS: list[str] = []
_LOCK = threading.Lock()


def _record(config):
    """Deterministic function of the config; records every call (threads share this module)."""
    with _LOCK:
        CALLS.append(config_key(config))
    return {"rate": config.workload.rate, "k": config.policy.k, "score": config.workload.rate * (config.policy.k + 1)}


def _configs(n):
    return [[f"workload.rate={1.0 + i}", f"policy.k={i % 3}"] for i in range(n)]


@pytest.fixture(scope="module")
def client():
    from analysis.sweep import make_client

    c = make_client(n_workers=2, processes=False)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def test_key_is_stable_and_spelling_independent():
    a = resolve(["workload.rate=2", "policy.k=1"])
    b = resolve({"policy": {"k": 1}, "workload": {"rate": 2.0}})
    assert config_key(a) == config_key(b)
    assert config_key(a) != config_key(resolve(["workload.rate=3", "policy.k=1"]))


def test_resume_runs_each_config_once(tmp_path, client):
    CALLS.clear()
    full = _configs(8)
    first = run_sweep(full[:3], _record, tmp_path, client=client, progress=False)  # "killed" after 3
    assert len(CALLS) == 3 and len(first) == 3
    assert len(list(tmp_path.glob("*.json"))) == 3
    results = run_sweep(full + full[:2], _record, tmp_path, client=client, progress=False)  # restart, dupes
    assert len(CALLS) == 8  # only the 5 missing ran
    assert len(set(CALLS)) == 8  # nothing ran twice
    assert list(results) == [config_key(resolve(c)) for c in full]
    for c in full:
        cfg = resolve(c)
        assert results[config_key(cfg)]["score"] == pytest.approx(cfg.workload.rate * (cfg.policy.k + 1))
    # files are complete JSON with the resolved config beside the result
    stored = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert set(stored) == {"key", "config", "result"}
    assert not list(tmp_path.glob(".*.tmp"))
    run_sweep(full, _record, tmp_path, client=client, progress=False)
    assert len(CALLS) == 8  # a third run does nothing


def test_half_written_file_is_rerun(tmp_path):
    CALLS.clear()
    cfgs = _configs(2)
    run_sweep(cfgs, _record, tmp_path, scheduler="serial", progress=False)
    key = config_key(resolve(cfgs[0]))
    (tmp_path / f"{key}.json").write_text('{"key": "trunc')  # torn file from a foreign writer
    assert load_result(tmp_path, key) is None
    run_sweep(cfgs, _record, tmp_path, scheduler="serial", progress=False)
    assert CALLS.count(key) == 2 and len(CALLS) == 3


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "x.json", 123)  # not text: fails mid-write
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="workload.rate"):
        resolve(["workload.rate=-1"])
    with pytest.raises(ConfigError, match="scheduler"):
        run_sweep(_configs(1), _record, tmp_path, scheduler="nonsense", progress=False)
    assert load_config().seed == 1


_CHILD = r"""
import sys, time
from pathlib import Path
from analysis.sweep import config_key, run_sweep
log = Path(sys.argv[2])
def slow(config):
    with open(log, "a") as fh:
        fh.write(config_key(config) + "\n")
    time.sleep(0.15)
    return {"rate": config.workload.rate}
cfgs = [[f"workload.rate={1.0 + i}"] for i in range(int(sys.argv[3]))]
run_sweep(cfgs, slow, sys.argv[1], scheduler="serial", progress=False)
"""


def test_killed_sweep_resumes_without_rerunning_finished_configs(tmp_path):
    """A real SIGKILL mid-sweep: configs whose file was written never run again; the rest run once more at most."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out, log, n = tmp_path / "res", tmp_path / "calls.log", 20
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), str(log), str(n)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.json"))) < 4:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_at_kill = {p.stem for p in out.glob("*.json")}
    assert 4 <= len(done_at_kill) < n
    CALLS.clear()
    cfgs = [[f"workload.rate={1.0 + i}"] for i in range(n)]
    results = run_sweep(cfgs, _record, out, scheduler="serial", progress=False)
    assert len(results) == n
    assert not (set(CALLS) & done_at_kill)  # nothing finished before the kill ran again
    assert len(CALLS) == n - len(done_at_kill)  # and everything else ran exactly once after the restart
    assert all(results[config_key(resolve(c))]["rate"] == 1.0 + i for i, c in enumerate(cfgs))


def test_existing_cluster_by_address(tmp_path):
    """--scheduler ADDRESS: the sweep connects to a running cluster instead of starting one."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        CALLS.clear()
        res = run_sweep(_configs(4), _record, tmp_path, scheduler=cluster.scheduler_address, progress=False)
        assert len(res) == 4 and len(CALLS) == 4
