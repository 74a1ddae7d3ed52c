"""`tetris engine` / `tetris profile` end to end on a tiny saved pair; traces replay in the simulator."""
import json

import numpy as np
import pytest

from tetris_cli import main
from contract.trace import read_trace


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from engine.testing.tiny import save_tiny_pair

    return save_tiny_pair(tmp_path_factory.mktemp("pair"))


def small(pair, *extra):
    sets = [f'engine.pair="{pair}"', "workload.num_requests=6", "workload.prompt_len.value=12",
            "workload.output_len.value=10", "server.max_batch=4", "engine.threads=1",
            'engine.dtype="float32"', *extra]  # greedy identity is exact in float32 only (docs/engine.md)
    return [a for s in sets for a in ("--set", s)]


def test_engine_json_and_outputs(pair, tmp_path, capsys):
    dump = tmp_path / "out.jsonl"
    rc = main(["engine", *small(pair), "--policy", "tetris", "--json", "--quiet", "--out", str(tmp_path / "run"),
               "--dump-outputs", str(dump)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    s = data["policies"]["tetris"]
    for key in ("output_throughput", "request_throughput", "mean_ttft_s", "p99_tpot_s", "mean_e2e_s",
                "acceptance_length", "draft_acceptance_rate", "per_position_acceptance", "num_steps",
                "verified_tokens", "wasted_tokens"):
        assert key in s
    assert s["num_requests"] == 6 and s["output_tokens"] == 60
    assert s["resolved_dtype"] == "float32" and s["resolved_draft_dtype"] == "float32"
    assert s["verified_tokens"] <= 3 * s["num_steps"] * 4  # C = k*N with k = 3, N <= 4
    for name in ("summary.json", "requests.csv", "config.toml"):
        assert (tmp_path / "run" / name).is_file()
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(6))
    assert all(len(r["output_ids"]) == 10 and len(r["prompt_ids"]) == 12 for r in rows)


def test_greedy_outputs_identical_across_policies(pair, tmp_path, capsys):
    outs = {}
    for pol in ("none", "fixed", "tetris", "dsd"):
        dump = tmp_path / f"{pol}.jsonl"
        assert main(["engine", *small(pair), "--policy", pol, "--quiet", "--out", str(tmp_path / pol),
                     "--dump-outputs", str(dump)]) == 0
        outs[pol] = [json.loads(line)["output_ids"] for line in dump.read_text().splitlines()]
    capsys.readouterr()
    assert outs["fixed"] == outs["none"] and outs["tetris"] == outs["none"] and outs["dsd"] == outs["none"]


def test_timed_poisson_arrivals(pair, tmp_path, capsys):
    rc = main(["engine", *small(pair, 'workload.arrival="poisson"', "workload.rate=200.0"), "--policy", "fixed",
               "--quiet", "--json", "--out", str(tmp_path / "r")])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)["policies"]["fixed"]
    assert s["output_tokens"] == 60 and s["mean_ttft_s"] >= 0
    rows = (tmp_path / "r" / "requests.csv").read_text().splitlines()[1:]
    arrivals = [float(r.split(",")[2]) for r in rows]
    assert arrivals == sorted(arrivals) and arrivals[-1] > 0  # wall-clock arrivals, not all at t=0


def test_prompts_file_and_sampling(pair, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "def f(x):\\n    return"}\n{"prompt_ids": [5, 6, 7]}\n')
    dump = tmp_path / "o.jsonl"
    rc = main(["engine", *small(pair, f'workload.prompts="{prompts}"', "engine.temperature=0.7"),
               "--policy", "tetris", "--quiet", "--json", "--out", str(tmp_path / "r"), "--dump-outputs", str(dump)])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["policies"]["tetris"]["estimator"] == "max_prob"
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert rows[1]["prompt_ids"] == [5, 6, 7] and rows[3]["prompt_ids"] == [5, 6, 7]
    assert rows[0]["prompt_ids"] == rows[2]["prompt_ids"] and len(rows[0]["prompt_ids"]) > 3


@pytest.mark.parametrize("bad,key", [
    ("engine.device=\"tpu\"", "engine.device"),
    ("engine.temperature=-1", "engine.temperature"),
    ("engine.estimator=\"magic\"", "engine.estimator"),
    ("workload.prompts=\"/nonexistent/p.jsonl\"", "workload.prompts"),
    ("engine.pair=\"/nonexistent\"", "engine.pair"),
])
def test_bad_input_exits_2(pair, tmp_path, capsys, bad, key):
    out = tmp_path / "run"
    args = small(pair) + ["--set", bad]
    assert main(["engine", *args, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert not out.exists()


def test_trace_replays_in_simulator(pair, tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    assert main(["engine", *small(pair, f'engine.trace_out="{trace}"', "policy.k=1", "policy.extra=2"),
                 "--policy", "tetris", "--quiet", "--out", str(tmp_path / "r")]) == 0
    header, recs = read_trace(trace)
    assert header["policy"] == "tetris" and recs
    for r in recs:
        assert len(r.estimates) == 3 and len(r.matches) == 3 and r.accept_probs is None
        assert 0 <= r.accepted <= r.selected <= 3
        lead = int(np.cumprod(r.matches[: r.selected]).sum())  # greedy: accepted = leading matches
        assert r.accepted == lead
        assert 1 <= r.emitted <= r.accepted + 1
    assert sum(r.selected for r in recs) > 0
    capsys.readouterr()
    rc = main(["simulate", "--set", "acceptance.model=\"trace\"", "--set", f'acceptance.trace="{trace}"',
               "--set", "workload.num_requests=8", "--set", "workload.output_len={dist=\"fixed\",value=12}",
               "--set", "cost.model=\"constant\"", "--policy", "tetris", "--json", "--quiet", "--out", str(tmp_path / "sim")])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["policies"]["tetris"]["num_requests"] == 8


def test_profile_table_reads_in_simulator(pair, tmp_path, capsys):
    out = tmp_path / "prof.csv"
    assert main(["profile", "--set", f'engine.pair="{pair}"', "--batch", "1,2", "--tokens", "1,3", "--context",
                 "8,16", "--repeats", "1", "--quiet", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "batch,tokens_per_request,context,target_s,draft_s" and len(lines) == 9
    from contract.profile_table import ProfileTable

    t = ProfileTable.read(str(out))
    assert t.target(2, 3, 16) > 0 and t.has_draft
    assert main(["profile", "--set", f'engine.pair="{pair}"', "--batch", "0", "--out", str(tmp_path / "x.csv")]) == 2
    # beyond the pair's positions: rejected before profiling, not a hang
    assert main(["profile", "--set", f'engine.pair="{pair}"', "--context", "100000", "--out", str(tmp_path / "y.csv")]) == 2
    assert "max_position_embeddings" in capsys.readouterr().err and not (tmp_path / "y.csv").exists()


def test_calibration_report(pair, tmp_path, capsys):
    rep = tmp_path / "cal"
    assert main(["engine", *small(pair), "--policy", "tetris", "--quiet", "--out", str(tmp_path / "r"),
                 "--calibration-report", str(rep)]) == 0
    data = json.loads((rep / "calibration.json").read_text())
    for name in ("token_prob", "max_prob", "calibrated"):
        r = data["tetris"][name]
        assert 0.0 <= r["ece"] <= 1.0 and r["count"] > 0
    assert (rep / "reliability-tetris.png").stat().st_size > 1000
