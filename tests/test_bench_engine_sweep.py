"""benchmarks/engine_sweep.py: --quick on one batch size and two policy groups (seconds).

Checks the JSON shape, that every policy saw the same requests (same output tokens), that the
Markdown names the speedup and TETRIS / best-fixed figures, and that bad input exits 2 with one
line and writes nothing. Power: a sweep that drops a policy, mislabels a point, or lets an unknown
--set key through fails here; no timed assertion (figures are not checked, only their presence).
"""
import json
from pathlib import Path

import pytest

import bench_module


def _sweep():
    return bench_module.load("engine_sweep")


@pytest.fixture(scope="module")
def pair_arg(tmp_path_factory):
    from engine.pairs import DEFAULT_PAIR

    if (Path(DEFAULT_PAIR) / "target" / "config.json").is_file():
        return "tiny"
    from engine.testing.tiny import save_tiny_pair

    return str(save_tiny_pair(tmp_path_factory.mktemp("pair") / "pair"))


def test_quick_sweep_json_and_table(tmp_path, capsys, pair_arg):
    out = tmp_path / "s.json"
    rc = _sweep().main(["--quick", "--pair", pair_arg, "--batches", "2", "--temperatures", "0",
                        "--policies", "none,tetris", "--num-requests", "3", "--repeats", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    labels = [p["policy"] for p in data["points"]]
    assert labels == ["none", "fixed-k1", "fixed-k2", "fixed-k3", "fixed-k4",
                      "tetris-kbest-e1", "tetris-kbest-e2", "tetris-kbest-e3"]
    assert {p["output_tokens"] for p in data["points"]} == {3 * 16}
    for p in data["points"]:
        assert p["output_throughput"] > 0 and 0 <= p["select_share"] < 1 and p["clock"] == "cpu"
    assert data["meta"]["clock"] == "cpu" and data["meta"]["threads"] == 1
    assert "TETRIS best / best fixed" in text and "Speculation stops paying" in text and "engine.clock = 'cpu'" in text
    assert "Where the time goes" in text
    for p in data["points"]:
        assert p["prefill_passes"] >= 1 and p["num_steps"] > 0 and p["prefill_time_s"] > 0


def test_budget_table_arithmetic():
    # plain: 8 requests x 11 step tokens in 2 s of steps at mean batch 8; speculative: the same
    # tokens in 1 s at mean batch 6: steps 2x faster, 2.667x at plain's batch; 3 s vs 4 s overall
    base = dict(temperature=0.0, batch=8, num_steps=11, mean_batch=8.0, tokens_per_step=8.0, step_time_s=2.0,
                output_tokens=96, num_requests=8, prefill_passes=1, prefill_time_s=1.0, duration_s=4.0,
                output_throughput=24.0)
    spec = dict(base, policy="fixed-k2", num_steps=5, mean_batch=6.0, tokens_per_step=17.6, step_time_s=1.0,
                prefill_passes=3, prefill_time_s=2.0, duration_s=3.0, output_throughput=32.0)
    row = _sweep().budget([dict(base, policy="none"), spec]).splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "fixed-k2" and cells[7] == "2.000x" and cells[8] == "2.667x"
    assert cells[9] == "3" and cells[10] == "2.00 (67%)" and cells[11] == "1.333x"


@pytest.mark.parametrize("argv, key", [
    (["--set", "engine.no_such_key=1"], "no_such_key"),
    (["--policies", "fixed,bogus"], "--policies"),
    (["--batches", "0"], "--batches"),
])
def test_bad_input_exits_2(tmp_path, capsys, argv, key):
    out = tmp_path / "s.json"
    assert _sweep().main(["--quick", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert not out.exists()
