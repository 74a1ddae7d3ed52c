"""Bad input on every command: one line naming the problem, exit 2, no traceback, nothing
half-written, and no user file deleted, renamed or replaced (issue 11's table).

Each case builds its paths under tmp_path, runs `tetris ...` in-process and checks
(exit code, a fragment of the one-line message, which files must survive unchanged).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tetris_cli

SIM_FAST = ["--set", "workload.num_requests=8", "--set", "workload.output_len.value=8", "--quiet"]


def _setup(tmp: Path) -> dict:
    (tmp / "notes").mkdir()
    (tmp / "notes" / "notes.txt").write_text("my notes")
    (tmp / "file.txt").write_text("precious")
    (tmp / "latin1.toml").write_bytes(b"seed = 1 # caf\xe9\n")
    (tmp / "cfgdir").mkdir()
    return {"notes": tmp / "notes", "file": tmp / "file.txt", "latin1": tmp / "latin1.toml", "cfgdir": tmp / "cfgdir"}


CASES = [
    # (id, argv with {placeholders}, exit code, message fragment)
    ("config-not-utf8", ["simulate", "--config", "{latin1}", "--out", "{tmp}/r"], 2, "not UTF-8"),
    ("config-is-dir", ["simulate", "--config", "{cfgdir}", "--out", "{tmp}/r"], 2, "is a folder"),
    ("config-devnull", ["simulate", "--config", "/dev/null", "--out", "{tmp}/r"], 2, "not a regular file"),
    ("config-missing", ["simulate", "--config", "{tmp}/nope.toml", "--out", "{tmp}/r"], 2, "not found"),
    ("out-existing-file", ["simulate", *SIM_FAST, "--out", "{file}"], 2, "not a folder"),
    ("out-user-folder", ["simulate", *SIM_FAST, "--out", "{notes}"], 2, "not a run folder"),
    ("out-user-folder-force", ["simulate", *SIM_FAST, "--force", "--out", "{notes}"], 2, "not a run folder"),
    ("out-dot", ["simulate", *SIM_FAST, "--out", "."], 2, "current folder"),
    ("out-parent-is-file", ["simulate", *SIM_FAST, "--out", "{file}/r"], 2, "is a file"),
    ("report-out-is-input", ["report", "{notes}", "--out", "{notes}"], 2, "input folders"),
    ("report-board-config-missing", ["report", "{tmp}/x", "--board-config", "{tmp}/none.toml", "--out", "{tmp}/r"], 2,
     "not found"),
    ("plan-out-file", ["plan", "--qps", "5", "--slo-tpot-p99", "0.1", "--out", "{file}"], 2, "not a folder"),
    ("plan-out-user-folder", ["plan", "--qps", "5", "--slo-tpot-p99", "0.1", "--out", "{notes}"], 2, "not a run folder"),
    ("plan-qps-negative", ["plan", "--qps", "-5", "--slo-tpot-p99", "0.1", "--out", "{tmp}/p"], 2, "> 0"),
    ("plan-k-empty-item", ["plan", "--qps", "5", "--slo-tpot-p99", "0.1", "--k", "1,,", "--out", "{tmp}/p"], 2,
     "empty item"),
    ("zero-step-cost", ["simulate", *SIM_FAST, "--set", 'cost.model="constant"', "--set", "cost.step_s=0",
                        "--set", "cost.draft_step_s=0", "--out", "{tmp}/r"], 2, "takes 0 s"),
    ("sim-prompts-missing", ["simulate", *SIM_FAST, "--set", 'workload.prompts="{tmp}/p.jsonl"', "--out", "{tmp}/r"],
     2, "not found"),
    ("engine-dump-is-dir", ["engine", "--dump-outputs", "{notes}", "--out", "{tmp}/r"], 2, "is a folder"),
    ("engine-calibration-is-file", ["engine", "--calibration-report", "{file}", "--out", "{tmp}/r"], 2, "not a folder"),
    ("engine-out-user-folder", ["engine", "--out", "{notes}"], 2, "not a run folder"),
    ("profile-out-parent-file", ["profile", "--out", "{file}/x.csv"], 2, "is a file"),
    ("profile-out-is-dir", ["profile", "--out", "{notes}"], 2, "is a folder"),
    ("profile-batch-empty-item", ["profile", "--batch", "1,,", "--out", "{tmp}/p.csv"], 2, "empty item"),
    ("cost-table-devnull", ["simulate", *SIM_FAST, "--set", 'cost.model="table"', "--set", 'cost.table="/dev/null"',
                            "--out", "{tmp}/r"], 2, "not a regular file"),
    ("trace-is-dir", ["simulate", *SIM_FAST, "--set", 'workload.arrival="trace"', "--set", 'workload.trace="{cfgdir}"',
                      "--out", "{tmp}/r"], 2, "is a folder"),
    ("report-run-is-file", ["report", "{file}", "--out", "{tmp}/r"], 2, "is a file"),
    ("validate-profile-devnull", ["validate", "--profile", "/dev/null", "--out", "{tmp}/v"], 2, "not a regular file"),
    ("validate-out-file", ["validate", "--out", "{file}"], 2, "not a folder"),
]


@pytest.mark.parametrize("case,argv,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_table(case, argv, code, fragment, tmp_path, capsys, monkeypatch):
    paths = _setup(tmp_path) | {"tmp": tmp_path}
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    argv = [a.format(**paths) for a in argv]
    assert tetris_cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in err, err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing deleted, replaced or half-written
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_unreadable_config_is_one_line(tmp_path, capsys, monkeypatch):
    """PermissionError while reading (root ignores chmod, so the read itself is made to fail)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("seed = 1\n")
    real = Path.read_text

    def deny(self, *a, **k):
        if self == cfg:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)
    assert tetris_cli.main(["simulate", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Permission denied" in err and "\n" not in err and not (tmp_path / "r").exists()


def test_force_replaces_only_a_previous_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert tetris_cli.main(["simulate", *SIM_FAST, "--policy", "none", "--out", str(out)]) == 0
    assert (out / ".tetris-run").is_file()
    assert tetris_cli.main(["simulate", *SIM_FAST, "--policy", "none", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert tetris_cli.main(["simulate", *SIM_FAST, "--policy", "none", "--force", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("added by the user")  # now it is no longer only this tool's files
    assert tetris_cli.main(["simulate", *SIM_FAST, "--policy", "none", "--force", "--out", str(out)]) == 2
    assert (out / "notes.txt").read_text() == "added by the user"
    # report RUN --out RUN used to delete the run's own files
    assert tetris_cli.main(["report", str(out), "--out", str(out), "--force"]) == 2
    assert (out / "summary.json").is_file()


def test_help_describes_validate_and_plan(capsys):
    for cmd, word in (("validate", "--strict"), ("plan", "steady-state")):
        with pytest.raises(SystemExit):
            tetris_cli.main([cmd, "--help"])
        text = capsys.readouterr().out
        assert word in text and "usage:" in text


def test_sigterm_cleans_the_temporary_folder(tmp_path):
    """SIGTERM mid-run: exit 143, no hidden .<out>.tmp-PID folder left, no --out written."""
    out = tmp_path / "big"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-m", "tetris_cli", "simulate", "--quiet", "--set",
                             "workload.num_requests=200000", "--out", str(out)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not any(".tmp-" in p.name for p in tmp_path.iterdir()):
        time.sleep(0.1)
    assert any(".tmp-" in p.name for p in tmp_path.iterdir()), "the run never started"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    assert rc == 143, proc.stderr.read().decode()
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())
    assert not out.exists()


def test_validate_verdict_and_strict(tmp_path, capsys, monkeypatch):
    """A finished validate exits 0 with a verdict line; --strict exits 1 when a goal is missed."""
    import analysis.validate as v

    fake = {"policies": {
        "none@offline": {"measured": {"output_throughput": 100.0, "mean_tpot_s": 0.010},
                         "simulated": {"output_throughput": 101.0, "mean_tpot_s": 0.0101}},
        "tetris@offline": {"measured": {"output_throughput": 100.0, "mean_tpot_s": 0.010},
                           "simulated": {"output_throughput": 120.0, "mean_tpot_s": 0.0101}}}}
    monkeypatch.setattr(v, "_validate", lambda *a, **k: fake)
    assert v.goal_counts(fake) == (1, 4)
    assert tetris_cli.main(["validate", "--out", str(tmp_path / "a")]) == 0
    assert "verdict: 1 of 4 accuracy goals MISSED" in capsys.readouterr().out
    assert tetris_cli.main(["validate", "--strict", "--out", str(tmp_path / "b")]) == 1
    fake["policies"]["tetris@offline"]["simulated"]["output_throughput"] = 102.0  # negative control: all met
    assert tetris_cli.main(["validate", "--strict", "--out", str(tmp_path / "c")]) == 0
    assert "verdict: all 4 accuracy goals met" in capsys.readouterr().out


def test_size_warning_before_huge_runs():
    from sim.simulate import size_warning
    from contract.config import load_config

    assert size_warning(load_config(None, []), 1) is None
    big = load_config(None, ["workload.num_requests=1000000000"])
    assert "1,000,000,000 requests" in size_warning(big, 3)
    long_prompts = load_config(None, ["workload.prompt_len.value=10000000"])
    assert "context" in size_warning(long_prompts, 1)


def test_read_only_parent_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    """A parent folder without write permission (simulated: the tests may run as root, who bypasses modes)."""
    import contract.outpaths as op

    monkeypatch.setattr(op.os, "access", lambda path, mode: Path(path) != tmp_path)
    assert tetris_cli.main(["simulate", *SIM_FAST, "--out", str(tmp_path / "x")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert tetris_cli.main(["profile", "--out", str(tmp_path / "p.csv")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []


def test_sigterm_ends_the_run_even_when_the_exception_is_dropped(tmp_path):
    """A SIGTERM landing in a finalizer raises into nothing (Python drops it); the watchdog still
    removes the temporary run folder and exits 143 after the grace time.

    The child swallows Terminated in a loop, as a dropped exception would; negative control: with
    the watchdog disabled (grace 1e9 s) the child is still alive after 5 s."""
    script = (
        "import sys, time\n"
        "import tetris_cli\n"
        "from contract.runs import atomic_folder\n"
        "tetris_cli._on_sigterm()\n"
        "with atomic_folder(sys.argv[1]) as tmp:\n"
        "    (tmp / 'x.csv').write_text('a')\n"
        "    ready = False\n"
        "    while True:\n"
        "        try:\n"
        "            if not ready:\n"
        "                ready = print('ready', flush=True) or True\n"
        "            time.sleep(0.05)\n"
        "        except tetris_cli.Terminated:\n"
        "            pass  # dropped, as in a __del__\n")
    for grace, alive in (("0.5", False), ("1e9", True)):
        out = tmp_path / f"run{grace}"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), TETRIS_TERM_GRACE_S=grace)
        proc = subprocess.Popen([sys.executable, "-c", script, str(out)], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
            proc.kill()
            proc.wait()
        assert (rc is None) == alive
        if not alive:
            assert rc == 143
            assert not any(".tmp-" in p.name for p in tmp_path.iterdir())
