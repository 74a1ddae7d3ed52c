"""analysis.validate / calibrate pieces that need no engine: trace cleaning, Beta fit, cost fit, inputs."""
import numpy as np
import pytest

from analysis import calibrate as cal
from analysis.validate import parse_loads, parse_policies
from contract.config import ConfigError
from contract.trace import TraceRecord


def _rec(req, step, pos, matches, est=None):
    est = est or [0.5] * len(matches)
    return TraceRecord(request=req, step=step, position=pos, estimates=est, matches=matches,
                       selected=len(matches), accepted=0, emitted=1)


def test_clean_trace_keeps_valid_prefix_and_shifts_positions():
    recs = [_rec(0, 0, 1, [True, False, True, True]), _rec(0, 1, 3, [True, True, True, False]),
            _rec(1, 0, 0, [False, True])]  # position 0 precedes the prefill token: dropped
    out = cal.clean_trace(recs)
    assert [(r.request, r.position, r.matches) for r in out] == [(0, 0, [True, False]), (0, 2, [True, True, True, False])]
    assert out[0].estimates == [0.5, 0.5]


def test_fit_beta_recovers_mean_and_spread():
    # per-request acceptance drawn from Beta(6, 3): mean 2/3, sd 0.149; trials long enough that
    # binomial noise is small; tolerance 0.04 on the mean, 30% on the sd (20 requests, fixed seed)
    rng = np.random.default_rng(0)
    recs = []
    alphas = rng.beta(6.0, 3.0, size=20)
    for i, a in enumerate(alphas):
        for step in range(300):
            recs.append(_rec(i, step, 1 + step, [bool(rng.random() < a)]))
    fit = cal.fit_beta(recs)
    mean = fit["beta_a"] / (fit["beta_a"] + fit["beta_b"])
    a, b = fit["beta_a"], fit["beta_b"]
    sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert abs(mean - alphas.mean()) < 0.04
    assert abs(sd - alphas.std()) < 0.3 * alphas.std()
    assert fit["decay"] == 1.0  # one position only


def test_fit_costs_splits_the_step_time():
    from analysis.engine_io import Measured

    m_none = Measured({}, prefill_s=1.0, draft_s=0.0, target_s=10.0, step_s=12.0, select_s=0.0, num_steps=100, duration_s=13.0)
    m_spec = Measured({}, prefill_s=1.0, draft_s=6.0, target_s=12.0, step_s=22.0, select_s=0.5, num_steps=100, duration_s=23.0)
    s_none = {"target_time_s": 8.0, "draft_time_s": 0.0, "num_steps": 100}
    s_spec = {"target_time_s": 14.0, "draft_time_s": 3.0, "num_steps": 100}
    fit = cal.fit_costs(m_none, s_none, m_spec, s_spec, k_spec=3, prompt_tokens=1000)
    assert fit["overhead_s"] == pytest.approx(0.02)  # (13 - 1 - 10) / 100
    assert fit["spec_overhead_s"] == pytest.approx(0.02)  # (23 - 1 - 6 - 12) / 100 - 0.02
    assert fit["target_scale"] == pytest.approx(1.0)  # 22 / 22
    assert fit["draft_scale"] == pytest.approx(2.0)  # 0.06 / 0.03 per step
    assert fit["prefill_per_token_s"] == pytest.approx(1e-3)  # no pass log: the pooled seconds per token
    assert fit["prefill_call_s"] == 0.0


def _prefill_run(passes: list[int], a: float = 0.05, b: float = 5e-4, noise: float = 0.0, seed: int = 0):
    """A Measured whose admission passes (prompt tokens each) cost a + b * tokens seconds (+ noise)."""
    from analysis.engine_io import Measured

    rng = np.random.default_rng(seed)
    log = tuple((tok, a + b * tok + noise * rng.standard_normal()) for tok in passes)
    return Measured({}, prefill_s=sum(s for _, s in log), draft_s=0.0, target_s=1.0, step_s=1.0, select_s=0.0,
                    num_steps=10, duration_s=2.0, prefill_log=log)


def test_fit_prefill_per_pass_and_per_token():
    # plain: whole waves of 8 x 96-token prompts; speculative: mostly one request per pass.
    # 50 ms per pass + 0.5 ms per token are recovered exactly; the pooled per-token figure (the fit
    # before) charges 0.59 ms / token for both: 16% too much for a wave, 30% too little for one request.
    a, b = 0.05, 5e-4
    m_plain, m_spec = _prefill_run([768] * 4), _prefill_run([768] + [96] * 24)
    assert cal.fit_prefill(m_plain, m_spec, 3072) == pytest.approx((a, b), rel=1e-9)
    # with timing noise (2 ms per pass, 29 passes) both figures land within 10%: the test's power
    noisy = cal.fit_prefill(_prefill_run([768] * 4, noise=2e-3, seed=1), _prefill_run([768] + [96] * 24, noise=2e-3, seed=2), 3072)
    assert noisy == pytest.approx((a, b), rel=0.1)
    # every pass the same size: no split, the pooled seconds per token
    same = cal.fit_prefill(_prefill_run([96] * 8), _prefill_run([96] * 8), 768)
    assert same == (0.0, pytest.approx(a / 96 + b))
    # a fixed part cannot be negative (nnls): passes that cost less than proportional give a = 0
    assert cal.fit_prefill(_prefill_run([768, 96], a=-0.01), _prefill_run([96], a=-0.01), 960)[0] == 0.0


def test_scale_table(tmp_path):
    src = tmp_path / "p.csv"
    src.write_text("batch,tokens_per_request,context,target_s,draft_s\n1,1,64,0.01,0.002\n1,2,64,0.02,0.002\n")
    out = cal.scale_table(src, tmp_path / "q.csv", 2.0, 3.0, 0.005)
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [float(r[3]) for r in rows] == pytest.approx([0.02, 0.045])
    assert [float(r[4]) for r in rows] == pytest.approx([0.006, 0.006])


def test_parse_inputs():
    assert parse_policies("none, fixed,tetris,fixed") == ["none", "fixed", "tetris"]
    assert parse_loads("offline,0.5,0.9") == ["offline", 0.5, 0.9]
    for bad in ("oracle", "bogus", ""):
        with pytest.raises(ConfigError, match="--policies"):
            parse_policies(bad)
    for bad in ("0", "x", "2.0", ""):
        with pytest.raises(ConfigError, match="--loads"):
            parse_loads(bad)


@pytest.mark.parametrize("argv,word", [
    (["validate", "--policies", "nope"], "--policies"),
    (["validate", "--loads", "1.9"], "--loads"),
    (["validate", "--set", "workload.arrival=poisson"], "workload.arrival"),
    (["validate", "--set", "server.max_batch=0"], "server.max_batch"),
    (["validate", "--repeats", "0"], "--repeats"),
    (["validate", "--set", 'server.scheduler="vllm"'], "server.scheduler"),
    (["validate", "--set", 'server.admission="fused"'], "server.admission"),
    (["validate", "--set", 'engine.admission="mixed"'], "engine.admission"),  # the key is server.admission
])
def test_validate_bad_input_exits_2(argv, word, capsys, tmp_path):
    import tetris_cli

    assert tetris_cli.main(argv + ["--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and word in err
    assert not (tmp_path / "v").exists()


def _engine_like(tmp_path, admission, monkeypatch=None):
    """simulate_like_engine on two requests (engine output lengths 7 and 5; the second joins at 0.5 s)."""
    import json
    from contract.config import load_config

    wl = tmp_path / f"wl-{admission}.jsonl"
    wl.write_text("".join(json.dumps({"arrival_s": a, "prompt_len": p, "output_len": o - 1}) + "\n"
                          for a, p, o in [(0.0, 10, 7), (0.5, 20, 5)]))
    cfg = load_config(base={"seed": 3, "acceptance": {"model": "iid", "alpha": 1.0},
                            "cost": {"model": "constant", "step_s": 1.0, "draft_step_s": 0.25, "prefill_call_s": 0.5,
                                     "prefill_s": 0.1, "prefill_per_token_s": 0.01},
                            "server": {"max_batch": 2, "admission": admission},
                            "policy": {"name": "fixed", "k": 2, "early_stop": False}})  # every step drafts 2
    return cal.simulate_like_engine(cfg, cfg.policy, wl)


def test_simulate_like_engine_mixed_admission(tmp_path, monkeypatch):
    """The engine's mixed admission: the verification pass that carries a joiner's prompt emits its first
    token at its end; decoding starts the step after. Timeline (fixed k=2, alpha 1, 1 s target, 0.25 s
    per draft): r0's own pass 0.7 s emits its first token, its step ends at 2.2 (3 more tokens); r1's prompt
    rides in [2.2, 4.0] (0.1 + 20 x 0.01 s) and gives its first token at 4.0; r0 emits its last 3, r1 then
    decodes 3 + 1 tokens in [4.0, 5.5] and [5.5, 7.0]. Separate admission: r1's own pass [2.2, 3.0]."""
    s = _engine_like(tmp_path, "mixed")
    assert s["output_tokens"] == 12
    assert s["mean_ttft_s"] == pytest.approx((0.7 + (4.0 - 0.5)) / 2)
    assert s["duration_s"] == pytest.approx(7.0)
    sep = _engine_like(tmp_path, "separate")
    assert sep["output_tokens"] == 12 and sep["mean_ttft_s"] == pytest.approx((0.7 + (3.0 - 0.5)) / 2)
    # negative control: the simulator's own semantics (the first token counted in output_len) there
    import sim.simulate as simulate

    own = simulate.simulate_policy
    monkeypatch.setattr(simulate, "simulate_policy", lambda *a, **k: own(*a, **(k | {"first_outside": False})))
    assert _engine_like(tmp_path, "mixed")["duration_s"] == pytest.approx(5.5)  # not 7.0: the test sees it


def test_calibration_runs_admit_separately(monkeypatch, tmp_path):
    """validate's calibration runs time every prefill as a pass of its own, whatever server.admission says."""
    import dataclasses
    import analysis.validate as v
    from contract.config import load_config

    seen = []

    class Stop(Exception):
        pass

    def measure(pair, cfg, *a, **k):
        seen.append(cfg.server.admission)
        raise Stop

    monkeypatch.setattr(v.eio, "build_requests", lambda cfg, tok, path: [])
    monkeypatch.setattr(v.cal, "write_workload", lambda path, reqs: path)
    monkeypatch.setattr(v.eio, "measure_best", measure)
    cfg = load_config(base={"server": {"admission": "mixed"}})
    pair = dataclasses.make_dataclass("P", ["tokenizer", "path"])(None, None)
    with pytest.raises(Stop):
        v.calibrate_costs(pair, cfg, tmp_path / "p.csv", {"beta_a": 1.0, "beta_b": 1.0, "decay": 0.0}, tmp_path, "cpu", 1)
    assert seen == ["separate"]


def test_fit_mixed_recovers_the_riding_cost():
    """calibrate.fit_mixed on a synthetic mixed run: steps whose target pass costs 20 ms + 2 ms per row +
    0.5 ms per verified draft + 1 us per context token + 0.5 ms per riding prompt token, and whose draft
    pass costs 3 ms per draft + 0.2 ms per prompt token that rode in the step before (the draft's prefill),
    with 1 ms of noise per step: 0.7 ms per riding token within 5%. Reading the riding tokens of this step
    only (the negative control) misses the draft's share."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    n = 200
    batch = rng.integers(2, 9, n)
    drafts = np.full(n, 2)
    verified = batch * drafts - rng.integers(0, 3, n)
    context = batch * rng.integers(60, 160, n)
    riding = np.where(rng.random(n) < 0.15, rng.integers(32, 97, n), 0)
    before = np.concatenate([[0], riding[:-1]])
    target = 0.020 + 0.002 * batch + 5e-4 * verified + 1e-6 * context + 5e-4 * riding + rng.normal(0, 1e-3, n)
    draft = 0.003 * drafts + 2e-4 * before + rng.normal(0, 2e-4, n)
    log = tuple(zip(batch, drafts, verified, context, riding, target, draft))
    assert cal.fit_mixed(SimpleNamespace(step_log=log), 1e-3) == pytest.approx(7e-4, rel=0.05)
    two = np.flatnonzero(riding)[2]  # only the first two riding steps kept: too few, the fallback
    few = tuple((*r[:4], r[4] if i < two else 0, *r[5:]) for i, r in enumerate(log))
    assert cal.fit_mixed(SimpleNamespace(step_log=few), 1e-3) == 1e-3
    # negative control: the draft's share (previous step's riders) dropped from the regression
    x = np.column_stack([np.ones(n), batch, batch * drafts, verified, context, riding])
    coef, *_ = np.linalg.lstsq(x, target + draft, rcond=None)
    assert abs(coef[5] - 7e-4) > 0.2 * 7e-4
