"""Exact simulator timelines and closed forms (in the style of SimPy's own tests)."""
import numpy as np
import pytest

from theory.acceptance import expected_tokens_iid
from contract.config import load_config
from sim.simulate import simulate_policy


def config(tmp_path=None, trace_rows=None, **sections):
    base = {"seed": 3}
    base.update(sections)
    if trace_rows is not None:
        f = tmp_path / "trace.csv"
        f.write_text("arrival_s,prompt_len,output_len\n" + "".join(f"{a},{p},{o}\n" for a, p, o in trace_rows))
        base.setdefault("workload", {}).update(arrival="trace", trace=str(f), num_requests=len(trace_rows))
    return load_config(base=base)


def run(cfg, **kw):
    return simulate_policy(cfg, cfg.policy, **kw)


def test_continuous_batching_timeline(tmp_path):
    # max batch 2, plain decoding, 1 s per step:
    # t=0 r0 admitted; step [0,1]: r0 first token.
    # t=1 r1 and r2 have arrived, one free slot -> r1; step [1,2]: r0 done, r1 first and done.
    # t=2 r2 admitted; steps [2,3] and [3,4]: first token at 3, done at 4.
    # r3 arrives at 10 while idle: the replica sleeps until 10; steps [10,11], [11,12].
    cfg = config(tmp_path, [(0.0, 5, 2), (0.5, 5, 1), (0.6, 5, 2), (10.0, 5, 2)],
                 cost={"model": "constant", "step_s": 1.0}, server={"max_batch": 2}, policy={"name": "none"})
    r = run(cfg)
    c = r.columns
    assert c["first_token_s"].tolist() == [1.0, 2.0, 3.0, 11.0]
    assert c["finish_s"].tolist() == [2.0, 2.0, 4.0, 12.0]
    assert r.summary["num_steps"] == 6 and r.summary["duration_s"] == 12.0
    assert r.summary["mean_ttft_s"] == pytest.approx((1.0 + 1.5 + 2.4 + 1.0) / 4)


@pytest.mark.parametrize("early_stop, last", [(True, 5.3), (False, 5.8)])
def test_prefill_and_draft_costs_timeline(tmp_path, early_stop, last):
    # fixed k=2 with alpha=1: each step emits 3 tokens and costs prefill + 2 drafts + target.
    cfg = config(tmp_path, [(0.0, 10, 7), (0.0, 20, 3)],
                 acceptance={"model": "iid", "alpha": 1.0},
                 cost={"model": "constant", "step_s": 1.0, "draft_step_s": 0.25, "prefill_s": 0.5,
                       "prefill_per_token_s": 0.01},
                 policy={"name": "fixed", "k": 2, "early_stop": early_stop})
    r = run(cfg, keep_steps=True)
    # step 1: prefill 2*0.5 + 30*0.01 = 1.3, drafts 0.5, target 1 -> ends 2.8; both emit 3 (r1 done: 3 tokens)
    # step 2: r0 only: 1.5 -> 4.3, r0 at 6; step 3: only 1 token left, window 0: no draft -> 5.3
    # (policy.early_stop = false: it still drafts 2 -> 5.8)
    assert r.columns["first_token_s"].tolist() == [2.8, 2.8]
    assert r.columns["finish_s"].tolist() == pytest.approx([last, 2.8])
    assert [s[7] for s in r.steps] == [4, 2, 0]  # verified drafts per step (last window capped by the end)
    assert [s[6] for s in r.steps] == [2, 2, 0 if early_stop else 2]  # drafted per request
    assert r.stats.emitted_tokens == 10


@pytest.mark.parametrize("k, alpha", [(0, 0.6), (3, 1.0)])
def test_offline_saturated_closed_form(k, alpha):
    # m waves of B requests with identical lengths run in lock step:
    # time = m * ceil(L / (k+1)) * (step + k * draft); throughput = m*B*L / time
    B, m, L, step, draft = 8, 3, 10, 0.02, 0.003
    cfg = config(workload={"arrival": "offline", "num_requests": B * m, "output_len": {"dist": "fixed", "value": L}},
                 acceptance={"model": "iid", "alpha": alpha},
                 cost={"model": "constant", "step_s": step, "draft_step_s": draft},
                 server={"max_batch": B}, policy={"name": "fixed" if k else "none", "k": k})
    r = run(cfg)
    per_request_steps = -(-L // (k + 1))
    # step s drafts min(k, tokens left - 1): no deeper than a request can emit (policy.early_stop)
    drafted = sum(min(k, L - (k + 1) * s - 1) for s in range(per_request_steps))
    expect = m * (per_request_steps * step + drafted * draft)
    assert r.summary["duration_s"] == pytest.approx(expect, rel=1e-12)
    assert r.summary["output_throughput"] == pytest.approx(B * m * L / expect, rel=1e-12)
    assert r.summary["num_steps"] == m * per_request_steps


def test_speculative_tokens_per_step_batch1():
    # batch 1, iid alpha, fixed k: E[tokens/step] = (1 - a^(k+1)) / (1 - a); long outputs so
    # that the truncated last step of each request is negligible (< 1e-3 of the steps).
    a, k = 0.7, 4
    cfg = config(workload={"arrival": "offline", "num_requests": 4, "output_len": {"dist": "fixed", "value": 25000}},
                 acceptance={"model": "iid", "alpha": a}, server={"max_batch": 1}, policy={"name": "fixed", "k": k})
    r = run(cfg)
    steps = r.summary["num_steps"]
    mean = r.stats.emitted_tokens / steps
    from theory.acceptance import accepted_length_variance

    se = np.sqrt(accepted_length_variance(np.full(k, a)) / steps)
    assert abs(mean - expected_tokens_iid(a, k)) < 3 * se  # 3 standard errors
    assert r.summary["acceptance_length"] == pytest.approx(mean, rel=1e-3)
    # per-position acceptance of position j (given it was verified) is a^j
    assert r.summary["per_position_acceptance"] == pytest.approx([a ** j for j in range(1, k + 1)], abs=0.02)


@pytest.mark.parametrize("section", ["server", "cost"])  # the key, and its deprecated simulator-side alias
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_verify_layout_step_cost(layout, section):
    # linear cost, 1 s per target token, free drafting: a step costs exactly the tokens the
    # target scores: N + sum(L) when packed, N * (1 + max L) when right-padded.
    cost = {"model": "linear", "step_s": 0.0, "per_token_s": 1.0, "draft_step_s": 0.0}
    server = {"max_batch": 6}
    (server if section == "server" else cost)["verify_layout"] = layout
    cfg = load_config(base={
        "seed": 5, "workload": {"num_requests": 6, "output_len": {"dist": "fixed", "value": 12}},
        "acceptance": {"model": "mixture", "easy_alpha": 0.95, "hard_alpha": 0.2},
        "cost": cost, "server": server, "policy": {"name": "tetris", "k": 2, "extra": 2}})
    seen = []
    simulate_policy(cfg, cfg.policy, on_step=lambda rep, info: seen.append((info["dt"], info["batch"], info["lengths"])))
    uneven = 0
    for dt, n, lengths in seen:
        scored = n * (1 + int(lengths.max())) if layout == "padded" else n + int(lengths.sum())
        assert dt == pytest.approx(scored)
        uneven += int(lengths.max() * n != lengths.sum())
    assert uneven > 0  # TETRIS gave some step uneven windows, so the two layouts differ


def test_prefill_call_cost_once_per_admission_pass(tmp_path):
    # cost.prefill_call_s is paid once by each step that admits anyone, whatever the number joining
    # (the engine's one batched prefill forward). Timeline of test_continuous_batching_timeline with
    # 0.5 s per pass: r0 [0, 1.5]; r1 joins [1.5, 3]; r2 joins [3, 4.5], [4.5, 5.5]; r3 [10, 11.5], [11.5, 12.5].
    cfg = config(tmp_path, [(0.0, 5, 2), (0.5, 5, 1), (0.6, 5, 2), (10.0, 5, 2)],
                 cost={"model": "constant", "step_s": 1.0, "prefill_call_s": 0.5}, server={"max_batch": 2},
                 policy={"name": "none"})
    c = run(cfg).columns
    assert c["first_token_s"].tolist() == [1.5, 3.0, 4.5, 11.5]
    assert c["finish_s"].tolist() == [3.0, 3.0, 5.5, 12.5]
    # two requests joining at once pay one pass (per request would give 2.0 / 3.0: the negative control)
    cfg = config(tmp_path, [(0.0, 5, 2), (0.0, 5, 2)],
                 cost={"model": "constant", "step_s": 1.0, "prefill_call_s": 0.5}, server={"max_batch": 2},
                 policy={"name": "none"})
    c = run(cfg).columns
    assert c["first_token_s"].tolist() == [1.5, 1.5] and c["finish_s"].tolist() == [2.5, 2.5]


MIXED_ROWS = [(0.0, 10, 7), (0.5, 20, 3)]
MIXED_COST = {"model": "constant", "step_s": 1.0, "draft_step_s": 0.25, "prefill_call_s": 0.5, "prefill_s": 0.1,
              "prefill_per_token_s": 0.01}


def mixed_config(tmp_path, admission):
    return config(tmp_path, MIXED_ROWS, acceptance={"model": "iid", "alpha": 1.0}, cost=MIXED_COST,
                  server={"max_batch": 2, "admission": admission},
                  policy={"name": "fixed", "k": 2, "early_stop": False})  # every step drafts 2 (admission alone)


@pytest.mark.parametrize("admission, first, finish", [
    # step 1 (both): r0 alone, its own pass: 0.5 + 0.1 + 10 * 0.01 = 0.7, drafts 0.5, target 1 -> 2.2; r0 emits 3.
    # separate: r1 joins [2.2, 4.5] (pass 0.8 + 1.5), both emit 3 (r1 done); r0's last token [4.5, 6.0].
    ("separate", [2.2, 4.5], [6.0, 4.5]),
    # mixed: r1's prompt rides in r0's step [2.2, 4.0] (0.1 + 20 * 0.01, no pass of its own): r1 emits only its
    # first token, r0 3; then both decode [4.0, 5.5]: r0 its last token, r1 its last 2.
    ("mixed", [2.2, 4.0], [5.5, 5.5]),
])
def test_mixed_admission_timeline(tmp_path, admission, first, finish):
    r = run(mixed_config(tmp_path, admission), keep_steps=True)
    assert r.columns["first_token_s"].tolist() == pytest.approx(first)
    assert r.columns["finish_s"].tolist() == pytest.approx(finish)
    assert r.summary["output_tokens"] == 10
    # StepStats counts decoding rows only, as the engine's: a riding joiner's first token is not a step's
    assert r.stats.emitted_tokens == (10 if admission == "separate" else 9)
    # steps.csv counts the joiner's first token (first_ids) beside the decoders' tokens; batch = decoders
    assert [s[5] for s in r.steps] == ([1, 2, 1] if admission == "separate" else [1, 1, 2])
    assert [s[10] for s in r.steps] == pytest.approx([0.7, 0.8, 0.0] if admission == "separate" else [0.7, 0.3, 0.0])
    assert sum(s[-2] for s in r.steps) == 10


def test_mixed_admission_engine_semantics(tmp_path):
    # first_outside (analysis/calibrate.simulate_like_engine): the pass that computes a joiner's prompt emits
    # its first token outside output_len, so r1 (3 tokens) emits 0 counted tokens at [2.2, 4.0], then 3 at [4.0, 5.5].
    r = run(mixed_config(tmp_path, "mixed"), first_outside=True, keep_steps=True)
    assert r.columns["first_token_s"].tolist() == pytest.approx([2.2, 4.0])
    assert r.columns["finish_s"].tolist() == pytest.approx([5.5, 5.5])
    assert r.stats.emitted_tokens == 10


def test_mixed_admission_negative_controls(tmp_path, monkeypatch):
    """The timeline test fails when a riding join is charged its own pass, or drafts in its admission step."""
    from sim.cost import CostModel

    own_pass = CostModel.prefill
    monkeypatch.setattr(CostModel, "mixed_prefill", lambda self, b, t, c, m, p, pc: own_pass(self, m, p))
    r = run(mixed_config(tmp_path, "mixed"))
    assert r.columns["first_token_s"].tolist() == pytest.approx([2.2, 4.5])  # not [2.2, 4.0]
    monkeypatch.undo()
    cfg = mixed_config(tmp_path, "mixed")
    rep = {}

    def hook(replica, info):  # a simulator that lets the joiner speculate at once: mixed off mid-run
        rep.setdefault("r", replica).mixed = False

    r = run(cfg, on_step=hook)
    assert r.columns["finish_s"].tolist() != pytest.approx([5.5, 5.5])


def test_mixed_prefill_prices_the_prompt_not_a_pass():
    from contract.config import load_config as load
    from sim.cost import make_cost

    table = make_cost(load(base={"cost": MIXED_COST}).cost)
    assert table.mixed_prefill(8, 24, 100.0, 2, 150, 37.5) == pytest.approx(2 * 0.1 + 150 * 0.01)
    assert table.prefill(2, 150) == pytest.approx(0.5 + 2 * 0.1 + 150 * 0.01)
    roof = make_cost(load(base={"cost": {"model": "roofline"}}).cost)  # memory-bound: a prompt in the pass is cheap
    alone = roof.prefill(1, 96)
    riding = roof.mixed_prefill(8, 24, 500.0, 1, 96, 48.0)
    assert 0.0 < riding < 0.2 * alone
