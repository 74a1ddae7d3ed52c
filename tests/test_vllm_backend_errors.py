"""engine.backend = "vllm" in the default environment (no vLLM): one-line errors, exit 2.
Default-run tests (not marked vllm): they never start vLLM."""
import subprocess
import sys
from pathlib import Path

import pytest

from contract.config import ConfigError, load_config
from engine.vllm import runner, setup

REPO = Path(__file__).resolve().parent.parent


def _cli(*args):
    return subprocess.run([sys.executable, str(REPO / "tetris_cli.py"), *args], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_backend_key_default_and_choices():
    assert load_config(None).engine.backend == "native"
    assert load_config(None, ['engine.backend="vllm"']).engine.backend == "vllm"
    with pytest.raises(ConfigError, match="engine.backend"):
        load_config(None, ['engine.backend="vlm"'])


@pytest.mark.skipif(setup.installed_version() is not None, reason="vLLM is installed in this environment")
def test_missing_vllm_one_line_exit_2(tmp_path):
    r = _cli("engine", "--set", 'engine.backend="vllm"', "--quiet", "--out", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines == ["tetris engine: error: " + setup.INSTALL_HINT], r.stderr
    assert not (tmp_path / "run").exists()


def test_version_pin(monkeypatch):
    assert setup.is_supported("0.32.0") and setup.is_supported("0.32.3+cpu")
    assert not setup.is_supported("0.33.0") and not setup.is_supported("0.3.2")
    monkeypatch.setattr(setup, "installed_version", lambda: "0.31.1")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    with pytest.raises(ConfigError, match=r"vLLM 0\.31\.1 is installed; this adapter supports 0\.32\.x"):
        setup.check()


@pytest.mark.parametrize("table,match", [
    ({"name": "threshold"}, "policy.name = 'threshold'"),
    ({"name": "oracle"}, "policy.name = 'oracle'"),
    ({"name": "tetris", "budget": "goodput"}, "policy.budget = 'goodput'"),
])
def test_unavailable_policies(table, match):
    cfg = load_config(None)
    with pytest.raises(ConfigError, match=match):
        runner.check_policies(cfg, [(table["name"], table)])


def test_spec_configs():
    from contract.config import PolicyConfig

    d = Path("/d")
    assert runner.spec_config(PolicyConfig(name="none"), d, 8) == (None, None)
    spec, table = runner.spec_config(PolicyConfig(name="fixed", k=3), d, 8)
    assert spec == {"method": "draft_model", "model": "/d", "num_speculative_tokens": 3} and table is None
    spec, table = runner.spec_config(PolicyConfig(name="tetris", k=2, extra=2), d, 8)
    assert spec["num_speculative_tokens"] == 4 and table["k"] == 2 and table["extra"] == 2
    spec, _ = runner.spec_config(PolicyConfig(name="dsd", k=3, disable_batch=4), d, 8)
    assert spec["num_speculative_tokens_per_batch_size"] == [(1, 4, 3), (5, 8, 0)]


@pytest.mark.skipif(setup.installed_version() is not None, reason="vLLM is installed in this environment")
def test_validate_routes_to_vllm_check(tmp_path):
    """validate never silently validates the native engine when the key says vllm."""
    r = _cli("validate", "--set", 'engine.backend="vllm"', "--out", str(tmp_path / "v"))
    assert r.returncode == 2, r.stderr
    assert setup.INSTALL_HINT in r.stderr and not (tmp_path / "v").exists()
