"""`tetris validate --set engine.backend='"vllm"'` (analysis/validate_vllm.py).

Default-run tests (no vLLM): the calibration's pure parts on synthetic step logs.
  - fit_cost recovers known step-time coefficients exactly from noise-free steps that include
    prefill and mixed steps, and keeps the fitted total time unbiased when the best free fit has a
    negative term (NNLS); negative control: the clipped free fit over-predicts by > 5%.
  - position_rates counts P(accepted >= j) / P(drafts >= j) over decode rows only (a prefill row
    with drafts would change the hand-counted figures).
  - sim_config writes the held-out workload without the native engine's output_len - 1 shift
    and selects server.scheduler = "vllm" (a shifted file fails the length check).
The vllm-marked test runs the whole route on the tiny pair (two vLLM engines: none and fixed k=2,
8 requests, offline, CPU clock): exit 0, every row measured and simulated, the same output tokens,
and the simulated step count within 25% of vLLM's (acceptance and the token budget decide the
step count, not timing: no timed assertion).
Run: PYTHONPATH=$PWD .venv-vllm/bin/python -m pytest -m vllm tests/test_validate_vllm.py -rf
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import validate_vllm as vv

REPO = Path(__file__).resolve().parent.parent
COEF = {"1": 2e-3, "batch": 1e-4, "tokens": 5e-5, "batch_x_k": 3e-4, "context_tokens": 1e-7}


def _step(n_dec, n_pre, k, chunk=40, ctx=50):
    n = n_dec + n_pre
    tokens = [1 + k] * n_dec + [chunk] * n_pre
    context = [ctx + 3 * i for i in range(n)]
    t = (COEF["1"] + COEF["batch"] * n + COEF["tokens"] * sum(tokens) + COEF["batch_x_k"] * n_dec * k
         + COEF["context_tokens"] * sum(context))
    return {"requests": list(range(n)), "tokens": tokens, "decode": [True] * n_dec + [False] * n_pre,
            "context": context, "k": k, "start_s": 0.0, "end_s": t, "cpu_start_s": 1.0, "cpu_end_s": 1.0 + t,
            "drafts": [k] * n_dec + [0] * n_pre, "accepted": [0] * n, "emitted": [1] * n}


def _steps(ks, gap=0.0):
    """One phase: consecutive steps, each starting `gap` seconds after the previous one ended."""
    steps = [_step(d, p, k, 20 + 7 * p, 30 + 11 * d) for k in ks for d in range(0, 6) for p in range(0, 3) if d + p]
    t = 0.0
    for s in steps:
        dur = s["end_s"]
        s["start_s"] = s["cpu_start_s"] = t
        s["end_s"] = s["cpu_end_s"] = t + dur
        t += dur + gap
    return steps


def test_fit_cost_recovers_coefficients_with_prefill_steps():
    fit = vv.fit_cost([_steps([0, 3])], "cpu")
    for f, c in COEF.items():
        assert fit["coef"][f] == pytest.approx(c, rel=1e-6, abs=1e-12), f
    assert fit["rel_rmse"] < 1e-9


def test_fit_cost_counts_the_gap_between_steps():
    """vLLM's output handling between steps belongs to the step (request times include it): a 1 ms
    gap after every step but each phase's last moves the intercept by 1 ms (the last step of a
    phase has no next start; two phases so that its share is small and known). Power: a fit of
    end - start (the bare step) gives c0 = 2 ms, 33% below the asserted 3 ms."""
    phases = [_steps([0, 3], gap=1e-3), _steps([0, 3], gap=1e-3)]
    fit = vv.fit_cost(phases, "wall")
    assert fit["coef"]["1"] == pytest.approx(COEF["1"] + 1e-3, rel=0.05)


def _total(fit, steps):
    c = fit["coef"]
    return sum(c["1"] + c["batch"] * len(s["requests"]) + c["tokens"] * sum(s["tokens"])
               + c["batch_x_k"] * sum(s["decode"]) * s["k"] + c["context_tokens"] * sum(s["context"]) for s in steps)


def test_fit_cost_unbiased_total_when_a_term_is_negative():
    """Real CPU logs gave a negative context term. NNLS keeps the fitted total time equal to the
    measured one (|bias| < 1%); the negative control, a free least-squares fit with the negative
    term clipped to 0 (what the fit did before), over-predicts the total by > 5%."""
    import numpy as np

    steps = _steps([0, 3])
    t = 0.0
    for s in steps:  # true time falls with context; re-chained
        dur = s["cpu_end_s"] - s["cpu_start_s"] - 4e-6 * sum(s["context"])
        s["cpu_start_s"], s["cpu_end_s"] = t, t + dur
        t += dur
    actual = sum(s["cpu_end_s"] - s["cpu_start_s"] for s in steps)
    assert _total(vv.fit_cost([steps], "cpu"), steps) == pytest.approx(actual, rel=0.01)
    a = np.array([[1.0, len(s["requests"]), sum(s["tokens"]), sum(s["decode"]) * s["k"], sum(s["context"])] for s in steps])
    clipped = np.maximum(np.linalg.lstsq(a, [s["cpu_end_s"] - s["cpu_start_s"] for s in steps], rcond=None)[0], 0)
    assert float((a @ clipped).sum()) > 1.05 * actual


def test_position_rates_decode_rows_only():
    steps = [{"drafts": [3, 3, 2, 3], "accepted": [3, 1, 2, 0], "decode": [True, True, True, False]}]
    # position 1: reached 3, accepted 3; position 2: reached 3, accepted 2; position 3: reached 2 (drafts 3), accepted 1
    assert vv.position_rates(steps, 3) == [1.0, 2 / 3, 1 / 2]


def test_sim_config_no_output_shift(tmp_path):
    from contract.config import load_config
    from contract.workload import iter_requests
    from engine.serve import Workload

    cfg = load_config(None, ["workload.num_requests=3"])
    reqs = list(iter_requests(cfg))
    wl = Workload(reqs, [[1] * r.prompt_len for r in reqs])
    table = tmp_path / "p.csv"
    from contract import profile_table
    from engine.vllm.steps import profile_rows

    profile_table.write(profile_rows({"coef": COEF}, [1, 2, 4, 8], [1, 2, 3], [1, 64, 512]), table)
    scfg = vv.sim_config(cfg, cfg.policy, wl, tmp_path, "t", table, {"model": "iid", "alpha": 0.5},
                         {"max_num_batched_tokens": 256, "chunked_prefill": True})
    lines = [json.loads(x) for x in (tmp_path / "workload_t.jsonl").read_text().splitlines()]
    assert [x["output_len"] for x in lines] == [r.output_len for r in reqs]
    assert scfg.server.scheduler == "vllm" and scfg.server.max_num_batched_tokens == 256
    sim = vv.simulate(scfg)
    assert sim["output_throughput"] > 0


@pytest.mark.vllm
def test_validate_vllm_route_tiny(tmp_path):
    from engine.vllm import setup

    try:
        setup.check()
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    out = tmp_path / "v"
    sets = ["engine.backend=\"vllm\"", "workload.num_requests=8", "policy.k=2", "policy.extra=1",
            "workload.output_len={dist=\"fixed\", value=24}"]
    cmd = [sys.executable, str(REPO / "tetris_cli.py"), "validate", "--policies", "fixed", "--loads", "offline",
           "--clock", "cpu", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verdict:" in r.stdout
    res = json.loads((out / "validate.json").read_text())
    assert set(res["policies"]) == {"fixed"} and res["backend"] == "vllm"
    row = res["policies"]["fixed"]
    for m in ("output_throughput", "mean_tpot_s", "p99_ttft_s"):
        assert row["measured"][m] > 0 and row["simulated"][m] > 0, m
    assert row["simulated"]["num_steps"] == pytest.approx(row["measured"]["num_steps"], rel=0.25)
    assert all(0 < x <= 1 for x in res["fits"]["rates_measured"])
    assert (out / "steps-none.jsonl").is_file() and (out / "profile.csv").is_file()


def test_engine_scales_follow_each_engines_speed():
    """An engine whose calibration steps all ran 1.5x slower gets scale 1.5 against the fit of the
    other (negative control: the joint fit's own scales are not both 1 when speeds differ)."""
    fast, slow = _steps([0, 3]), _steps([0, 3])
    for s in slow:
        for key in ("start_s", "end_s", "cpu_start_s", "cpu_end_s"):
            s[key] *= 1.5
    fit_fast = vv.fit_cost([fast], "cpu")
    sc = vv.engine_scales(fit_fast, {"a": fast, "b": slow}, "cpu")
    assert sc["a"] == pytest.approx(1.0, rel=1e-6) and sc["b"] == pytest.approx(1.5, rel=1e-6)
    joint = vv.engine_scales(vv.fit_cost([fast, slow], "cpu"), {"a": fast, "b": slow}, "cpu")
    assert joint["a"] < 0.95 and joint["b"] > 1.05
