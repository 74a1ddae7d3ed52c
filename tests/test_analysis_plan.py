"""analysis.plan: bisection on a stubbed monotone SLO check, replicas, CLI input errors."""
import math

import pytest

from analysis import plan


def _stub(thresholds, calls):
    def probe(points):
        calls.append(list(points))
        return [r <= thresholds[n] for n, r in points]
    return probe


def test_bisection_finds_each_threshold_in_batched_rounds():
    thr = {"a": 3.7, "b": 0.42, "c": 25.0}
    calls = []
    br = plan.search_max_rates(list(thr), _stub(thr, calls), hi0=1.0, rounds=12)
    for n, t in thr.items():
        b = br[n]
        assert b.lo <= t < b.hi  # bracket always contains the true threshold
        assert b.hi - b.lo <= 2 * max(t, 1.0) / 2**12  # 12 halvings of the first bracket [lo, 2 lo] or [0, hi0]
    # every round probes all unfinished candidates at once, one point each
    assert all(len({n for n, _ in c}) == len(c) for c in calls)
    assert len(calls) <= 6 + 1 + 12


def test_nothing_feasible_gives_zero_and_inf_replicas():
    br = plan.search_max_rates(["x"], lambda pts: [False] * len(pts), hi0=2.0, rounds=5)
    assert br["x"].lo == 0.0 and br["x"].hi < 2.0 / 2**4
    assert plan.replicas_needed(10.0, br["x"].lo) == math.inf


def test_always_feasible_stops_doubling():
    br = plan.search_max_rates(["x"], lambda pts: [True] * len(pts), hi0=1.0, rounds=3, max_doublings=4)
    assert br["x"].lo == 16.0 and math.isinf(br["x"].hi)


def test_replicas_and_meets():
    assert plan.replicas_needed(10.0, 2.5) == 4
    assert plan.replicas_needed(10.0, 3.0) == 4
    assert plan.replicas_needed(9.0, 3.0) == 3
    s = [{"p99_ttft_s": 0.5, "p99_tpot_s": 0.05}, {"p99_ttft_s": 1.5, "p99_tpot_s": 0.07}]
    assert plan.meets(s, slo_ttft=1.0, slo_tpot=0.0601)  # means 1.0 and 0.06
    assert not plan.meets(s, slo_ttft=0.99, slo_tpot=0.0)
    assert not plan.meets(s, slo_ttft=0.0, slo_tpot=0.059)
    assert not plan.meets([{"p99_ttft_s": float("nan")}], slo_ttft=1.0, slo_tpot=0.0)


def test_candidates():
    c = plan.candidates([1, 2], [1, 3])
    assert list(c) == ["none", "fixed k=1", "fixed k=2", "dsd", "tetris k=1 e=1", "tetris k=1 e=3",
                       "tetris k=2 e=1", "tetris k=2 e=3"]
    assert c["dsd"]["max_k"] == 2


@pytest.mark.parametrize("argv,word", [
    (["plan", "--qps", "0", "--slo-tpot-p99", "0.1"], "--qps"),
    (["plan", "--qps", "5"], "SLO"),
    (["plan", "--qps", "5", "--slo-tpot-p99", "0.1", "--k", "x"], "--k"),
    (["plan", "--qps", "5", "--slo-tpot-p99", "0.1", "--set", "workload.rate=-3"], "workload.rate"),
    (["plan", "--qps", "5", "--slo-tpot-p99", "0.1", "--set", "workload.arrival=offline"], "workload.arrival"),
])
def test_bad_input_exits_2_with_one_line(argv, word, capsys, tmp_path):
    import tetris_cli

    assert tetris_cli.main(argv + ["--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and word in err
    assert not (tmp_path / "p").exists()


def test_plan_on_the_real_simulator_tiny_and_resumes(tmp_path, capsys):
    import json

    import tetris_cli

    argv = ["plan", "--slo-tpot-p99", "0.03", "--slo-ttft-p99", "1.0", "--qps", "50", "--k", "1,2", "--extra", "1",
            "--tetris-k", "2", "--seeds", "2", "--rounds", "3", "--scheduler", "serial", "--quiet",
            "--set", "workload.num_requests=64", "--set", "server.max_batch=4", "--set", "workload.output_len={dist='fixed', value=24}",
            "--out", str(tmp_path / "plan")]
    assert tetris_cli.main(argv) == 0
    out = capsys.readouterr().out
    plan_json = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert set(plan_json["policies"]) == {"none", "fixed k=1", "fixed k=2", "dsd", "tetris k=2 e=1", "tetris goodput K=3"}
    for row in plan_json["policies"].values():
        assert 0 < row["max_rate"] < row["saturation_rps"]  # never at or above saturation
        assert row["replicas"] == math.ceil(50 / row["max_rate"])
        assert row["at_max_rate"]["p99_tpot_s"] <= 0.03 and row["at_max_rate"]["p99_ttft_s"] <= 1.0
        if row["stage"] == "refined":
            assert len(row["per_seed"]) == 2 and row["ci95"] is not None
    fams = plan_json["family_best"]
    assert set(fams) == {"none", "fixed", "dsd", "tetris"}
    assert plan_json["best"]["max_rate"] == max(plan_json["policies"][n]["max_rate"] for n in fams.values())
    assert "best:" in out and "resumed" not in out and (tmp_path / "plan" / "plan.png").stat().st_size > 1000
    points = sorted(p.name for p in (tmp_path / "plan" / "points").rglob("*.json"))
    assert tetris_cli.main(argv) == 0  # restart: every point comes from the cache, same answer
    assert "resumed:" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "plan" / "points").rglob("*.json")) == points
    again = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert again["points"]["computed"] == 0
    assert {k: v for k, v in again.items() if k != "points"} == {k: v for k, v in plan_json.items() if k != "points"}


def test_plan_tpot_only_slo_stays_below_saturation(tmp_path):
    """The issue's case: a TPOT-only SLO once gave 1973 req/s; a growing queue must fail the probe."""
    from analysis.plan_run import PLAN_BASE, search
    from contract.config import load_config

    base = load_config(None, ["slo.tpot_s=0.05", "workload.num_requests=600"], base=PLAN_BASE)
    res = search(base, {"fixed k=2": {"name": "fixed", "k": 2}}, [0, 1], 4, tmp_path, scheduler="serial",
                 progress=False, screen_rounds=3, keep=1)
    row = res["policies"]["fixed k=2"]
    assert 0 < row["max_rate"] < row["saturation_rps"]
    over = [p for p in res["probes"]["fixed k=2"] if p["rate"] > row["saturation_rps"] * 0.99]
    assert all(p["overloaded"] for p in over)


def test_steady_window_and_growth_detection():
    """Warm-up deletion drops the ramp; a linearly growing TTFT is called overloaded, a flat one is not."""
    import numpy as np

    from analysis.plan_steady import steady_metrics, window

    n = 2000
    arr = np.arange(n) / 10.0
    flat = {"arrival_s": arr, "first_token_s": arr + 0.1 + 0.01 * np.random.default_rng(0).random(n),
            "output_len": np.full(n, 10)}
    flat["finish_s"] = flat["first_token_s"] + 0.9
    grow = dict(flat, first_token_s=arr + 0.1 + 0.05 * arr)
    grow["finish_s"] = grow["first_token_s"] + 0.9
    idx = window(flat)
    assert idx.size == int(0.9 * n) - int(0.2 * n) and idx.min() == int(0.2 * n)
    assert not steady_metrics(flat)["overloaded"]
    assert steady_metrics(grow)["overloaded"]  # negative control of the flat case
