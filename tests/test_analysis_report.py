"""analysis.report on a tiny hand-made run folder; the validate error table."""
import json

import numpy as np
import pytest

from analysis.report import board_data, policy_params
from analysis.validate_math import error_table, goal_check, rel_error


def _run_folder(path):
    path.mkdir()
    pols = {}
    for k in (1, 2, 3):
        pols[f"fixed k={k}"] = {"output_throughput": 100.0 + 10 * k, "acceptance_length": 1.5 + 0.2 * k,
                                "draft_acceptance_rate": 0.7 - 0.05 * k, "mean_tpot_s": 0.01}
        for e in (1, 2):
            pols[f"tetris k={k} e={e}"] = {"output_throughput": 105.0 + 10 * k + e, "acceptance_length": 1.6 + 0.2 * k,
                                           "draft_acceptance_rate": 0.75 - 0.05 * k, "mean_tpot_s": 0.009}
    pols["none"] = {"output_throughput": 80.0, "acceptance_length": 1.0, "draft_acceptance_rate": 0.0}
    (path / "summary.json").write_text(json.dumps({"policies": pols}))
    (path / "config.toml").write_text('seed = 3\n[acceptance]\nmodel = "mixture"\neasy_alpha = 0.95\nhard_alpha = 0.2\n[policy]\nk = 2\nextra = 1\n')
    return path


def test_policy_params_from_names_and_fields():
    assert policy_params("tetris k=3 e=2", {}) == ("tetris", 3, 2)
    assert policy_params("fixed k=4", {}) == ("fixed", 4, 0)
    assert policy_params("best", {"policy": {"name": "tetris", "k": 2, "extra": 1}}) == ("tetris", 2, 1)
    assert policy_params("dsd", {}) == ("dsd", None, None)


def test_report_writes_markdown_and_plots(tmp_path):
    import tetris_cli

    run = _run_folder(tmp_path / "run1")
    v = tmp_path / "val"
    v.mkdir()
    (v / "validate.json").write_text(json.dumps({"policies": {"fixed": {
        "measured": {"output_throughput": 100.0, "mean_tpot_s": 0.02},
        "simulated": {"output_throughput": 104.0, "mean_tpot_s": 0.019}}}}))
    out = tmp_path / "rep"
    assert tetris_cli.main(["report", str(run), str(v), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for png in ("throughput.png", "acceptance.png", "board.png", "scatter.png"):
        assert (out / png).stat().st_size > 1000 and f"({png})" in md
    assert "| output_throughput | 100 | 104 | +4.0% |" in md
    assert "tetris k=3 e=2" in md


def test_report_bad_folder_exits_2(tmp_path, capsys):
    import tetris_cli

    assert tetris_cli.main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{nope")
    assert tetris_cli.main(["report", str(tmp_path / "bad"), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_board_tetris_moves_budget_to_easy_requests():
    # fixed-k verifies k everywhere; TETRIS at equal capacity k*N gives easy requests longer windows
    alpha, boards = board_data({"acceptance": {"easy_alpha": 0.9, "hard_alpha": 0.2, "easy_frac": 0.5}},
                               n_requests=12, n_steps=10, k=2, extra=2, seed=5)
    assert (boards["fixed"] == 2).all()
    assert (boards["tetris"].sum(axis=0) <= 2 * 12).all()  # capacity k*N every step
    easy, hard = alpha > 0.5, alpha < 0.5
    assert easy.any() and hard.any()
    assert boards["tetris"][easy].mean() > boards["tetris"][hard].mean()


def test_error_table_per_metric():
    v = {"policies": {"tetris": {"measured": {"output_throughput": 200.0, "mean_tpot_s": 0.05, "p99_ttft_s": 0.0},
                                 "simulated": {"output_throughput": 190.0, "mean_tpot_s": 0.056, "p99_ttft_s": 0.1}}}}
    t = error_table(v)["tetris"]
    assert t["output_throughput"] == (200.0, 190.0, pytest.approx(-0.05))
    assert t["mean_tpot_s"][2] == pytest.approx(0.12)
    assert t["p99_ttft_s"][2] is None and t["acceptance_length"] == (None, None, None)
    g = goal_check(error_table(v))["tetris"]
    assert g == {"output_throughput": True, "mean_tpot_s": False}
    assert rel_error(1.0, float("nan")) is None


def test_report_on_a_simulator_run_folder(tmp_path, capsys):
    import tetris_cli

    sim_out = tmp_path / "sim"
    assert tetris_cli.main(["simulate", "--set", "workload.num_requests=16", "--set", "workload.output_len={dist='fixed', value=32}",
                            "--quiet", "--out", str(sim_out)]) == 0
    assert policy_params("tetris-kbest-e2", {}) == ("tetris", None, 2)
    assert policy_params("fixed-k3", {}) == ("fixed", 3, 0)
    out = tmp_path / "rep"
    assert tetris_cli.main(["report", str(sim_out), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "short rerun of the simulator" in md  # per-request windows via the sim's on_step hook
    assert "tetris-kbest-e1" in md and (out / "throughput.png").is_file() and (out / "board.png").is_file()
    from analysis.report import _rows, best_fixed_k, load_run

    run = load_run(sim_out)
    kb = best_fixed_k(run["summary"])
    tet = [r for r in _rows([run]) if r["family"] == "tetris"]
    assert tet and all(r["k"] == kb for r in tet)


def test_report_pair_acceptance_from_a_trace(tmp_path):
    import tetris_cli
    from contract.trace import TraceRecord, write_trace

    rng = np.random.default_rng(3)
    recs = []
    for req in range(6):
        a = 0.9 if req % 2 else 0.2  # easy and hard requests
        for step in range(20):
            m = [bool(x) for x in rng.random(3) < a]
            recs.append(TraceRecord(req, step, 1 + 2 * step, [a] * 3, matches=m, selected=3, accepted=0, emitted=1))
    write_trace(tmp_path / "t.jsonl", recs, {"pair": "synthetic"})
    run = _run_folder(tmp_path / "run")
    out = tmp_path / "rep"
    assert tetris_cli.main(["report", str(run), "--trace", str(tmp_path / "t.jsonl"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Acceptance distribution of the pair" in md and (out / "pair.png").stat().st_size > 1000
    first = np.mean([r.matches[0] for r in recs])
    assert f"mean acceptance of the first draft {first:.3f}" in md


def test_report_without_out_writes_a_new_folder_each_time(tmp_path, monkeypatch):
    """No --out: runs/<timestamp>-report, never an existing folder (a rerun needs no --force)."""
    import tetris_cli
    from contract import outpaths

    run = _run_folder(tmp_path / "run1")
    monkeypatch.chdir(tmp_path)
    stamps = iter(["20260101-000000", "20260101-000001"])
    monkeypatch.setattr(outpaths, "default_run_folder", lambda name: outpaths.Path("runs") / f"{next(stamps)}-{name}")
    assert tetris_cli.main(["report", str(run)]) == 0
    assert tetris_cli.main(["report", str(run)]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["20260101-000000-report", "20260101-000001-report"]
