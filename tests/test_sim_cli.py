"""`tetris simulate`: the public contract, the default scenario, and bad input."""
import json

import pytest

from tetris_cli import main

CONTRACT = """
seed = 1
[workload]
arrival = "offline"          # offline | poisson | gamma | trace
rate = 10.0                  # requests/s (poisson, gamma)
num_requests = 512
prompt_len = { dist = "fixed", value = 128 }
output_len = { dist = "fixed", value = 256 }
[acceptance]
model = "iid"                # iid | beta | mixture | trace
alpha = 0.7
[cost]
model = "constant"           # constant | linear | roofline | table
step_s = 0.02                # target step time (constant)
draft_step_s = 0.002         # one draft step
prefill_s = 0.0              # per request admission (constant)
[server]
max_batch = 64
[policy]
name = "tetris"              # none | fixed | tetris | threshold | dsd | oracle
k = 3
extra = 2
"""

METRICS = ("output_throughput", "request_throughput", "mean_ttft_s", "p50_ttft_s", "p99_ttft_s", "mean_tpot_s",
           "p50_tpot_s", "p99_tpot_s", "mean_e2e_s", "p50_e2e_s", "p99_e2e_s", "acceptance_length",
           "draft_acceptance_rate", "per_position_acceptance", "num_steps", "verified_tokens", "wasted_tokens",
           "mean_budget")


def test_public_contract_json(tmp_path, capsys):
    f = tmp_path / "f.toml"
    f.write_text(CONTRACT)
    out = tmp_path / "run"
    assert main(["simulate", "--config", str(f), "--json", "--quiet", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary) == ["policies"] and list(summary["policies"]) == ["tetris"]
    m = summary["policies"]["tetris"]
    for key in METRICS:
        assert key in m, key
    assert m["output_tokens"] == 512 * 256 and m["num_requests"] == 512
    assert 1.0 < m["acceptance_length"] <= 6.0 and len(m["per_position_acceptance"]) == 5
    assert (out / "summary.json").read_text() == json.dumps(summary, indent=2) + "\n"
    # --policy runs only that policy from [policy]; --set overrides a key
    assert main(["simulate", "--config", str(f), "--json", "--quiet", "--out", str(out), "--force", "--policy", "fixed",
                 "--set", "workload.num_requests=64"]) == 0
    fixed = json.loads(capsys.readouterr().out)["policies"]["fixed"]
    assert fixed["num_requests"] == 64 and len(fixed["per_position_acceptance"]) == 3


def test_default_scenario_table_and_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--quiet", "--out", str(out), "--steps"]) == 0
    text = capsys.readouterr().out
    for label in ("none", "fixed-k1", "fixed-k6", "dsd", "tetris-kbest-e1", "tetris-kbest-e3", "vs best fixed", "VSR"):
        assert label in text
    assert sorted(p.name for p in out.iterdir()) == [".tetris-run", "config.toml", "requests.csv", "steps.csv", "summary.json"]
    policies = json.loads((out / "summary.json").read_text())["policies"]
    assert len(policies) == 11 and all(p["num_requests"] == 512 for p in policies.values())
    rows = (out / "requests.csv").read_text().splitlines()
    assert rows[0].startswith("policy,id,arrival_s") and len(rows) == 1 + 11 * 512
    # the resolved config.toml reproduces the run byte for byte
    again = tmp_path / "again"
    assert main(["simulate", "--quiet", "--config", str(out / "config.toml"), "--out", str(again), "--no-requests"]) == 0
    assert (again / "summary.json").read_bytes() == (out / "summary.json").read_bytes()


@pytest.mark.parametrize("args, key", [
    (["--set", "workload.bogus=1"], "workload.bogus"),
    (["--set", "server.max_batch=\"many\""], "server.max_batch"),
    (["--set", "acceptance.alpha=1.5"], "acceptance.alpha"),
    (["--set", "policy.name=\"magic\""], "policy.name"),
    (["--policy", "magic"], "--policy"),
    (["--set", "cost.model=\"roofline\"", "--set", "cost.hardware=\"TPU\""], "cost.hardware"),
    (["--set", "cost.model=\"table\"", "--set", "cost.table=\"/no/such.csv\""], "cost.table"),
    (["--set", "sweep=[{name=\"fixed\", k=-1}]"], "sweep[0].k"),
    (["--set", "sweep=[{name=\"none\"}, {name=\"tetris\", k=\"best_fixed\"}]"], "sweep[1].k"),
    (["--set", "workload.output_len={dist=\"uniform\", low=5, high=2}"], "workload.output_len.low"),
    (["--config", "/no/such/file.toml"], "/no/such/file.toml"),
])
def test_bad_input_exits_2_naming_the_key(tmp_path, capsys, args, key):
    out = tmp_path / "run"
    assert main(["simulate", "--quiet", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert not out.exists()  # nothing half-written


def test_one_cost_model_and_one_request_count_per_run(tmp_path, monkeypatch):
    """`tetris simulate` builds the cost model once and counts the requests (reading a trace
    file) once, however many variants it runs; negative control: without the prepared objects
    every policy builds its own (the count then exceeds 1)."""
    import sim.simulate as ss

    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(f'{{"arrival_s": {0.01 * i}, "prompt_len": 8, "output_len": 6}}\n' for i in range(20)))
    calls = {"cost": 0, "count": 0}
    real_cost, real_count = ss.make_cost, ss.num_requests
    monkeypatch.setattr(ss, "make_cost", lambda *a, **k: calls.__setitem__("cost", calls["cost"] + 1) or real_cost(*a, **k))
    monkeypatch.setattr(ss, "num_requests", lambda *a, **k: calls.__setitem__("count", calls["count"] + 1) or real_count(*a, **k))
    args = ["simulate", "--quiet", "--out", str(tmp_path / "run"), "--set", 'workload.arrival="trace"',
            "--set", f'workload.trace="{trace}"', "--set", 'sweep=[{name="fixed", k=2}, {name="tetris", budget="goodput"}, {name="dsd"}]']
    assert main(args) == 0
    assert calls == {"cost": 1, "count": 1}
    from contract.config import load_config

    cfg = load_config(None, [a for a in args[5:] if a != "--set"][:2])
    calls.update(cost=0, count=0)
    for _ in range(2):  # the negative control: two policies, no Prepared handed down
        ss.simulate_policy(cfg, cfg.policy)
    assert calls == {"cost": 2, "count": 2}
