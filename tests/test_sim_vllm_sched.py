"""server.scheduler = "vllm" (sim/vllm_sched.py): exact timelines computed by hand, and invariants.

Cost model in the timelines: linear, target = 1 s + 0.01 s per scheduled token, so every step's
duration reveals how many tokens it scheduled (decodes + verified drafts + prefill chunks).
Power: a scheduler that served prefills before decodes, ignored the budget, did not chunk, or
emitted the first token one step late shifts at least one asserted time (each test names which).
"""
import numpy as np
import pytest

from contract.config import ConfigError, load_config
from sim.simulate import simulate_policy
from test_sim_timeline import config, run

LINEAR = {"model": "linear", "step_s": 1.0, "per_token_s": 0.01, "draft_step_s": 0.0}


def vllm_server(**kw):
    return {"scheduler": "vllm", **kw}


def test_chunked_prefill_timeline(tmp_path):
    # budget 10. r0 (prompt 6, out 3), r1 (prompt 8, out 2), both at t=0.
    # step 1: r0 whole (6) + r1's first chunk (4) = 10 tokens -> 1.10; r0's first token at 1.10
    # step 2: r0 decodes (1) + r1's last chunk (4) = 5 -> 1.05, ends 2.15; r1's first token at 2.15
    # step 3: both decode (2) -> 1.02, ends 3.17: r0 has 3 tokens, r1 2: both done
    cfg = config(tmp_path, [(0.0, 6, 3), (0.0, 8, 2)], cost=LINEAR, policy={"name": "none"},
                 server=vllm_server(max_batch=4, max_num_batched_tokens=10))
    r = run(cfg, keep_steps=True)
    assert r.columns["first_token_s"].tolist() == pytest.approx([1.10, 2.15])
    assert r.columns["finish_s"].tolist() == pytest.approx([3.17, 3.17])
    assert [s[4] for s in r.steps] == pytest.approx([1.10, 1.05, 1.02])
    assert r.summary["output_tokens"] == 5 and r.summary["num_steps"] == 3


def test_without_chunked_prefill_a_prompt_waits_whole(tmp_path):
    # the same requests, chunked_prefill = false: r1 (8) does not fit the 4 tokens left in step 1.
    # step 1: r0 alone (6) -> 1.06; step 2: r0 decodes (1) + r1 whole (8) -> 1.09, ends 2.15
    # step 3: both decode -> 1.02, ends 3.17
    cfg = config(tmp_path, [(0.0, 6, 3), (0.0, 8, 2)], cost=LINEAR, policy={"name": "none"},
                 server=vllm_server(max_batch=4, max_num_batched_tokens=10, chunked_prefill=False))
    r = run(cfg, keep_steps=True)
    assert r.columns["first_token_s"].tolist() == pytest.approx([1.06, 2.15])
    assert [s[4] for s in r.steps] == pytest.approx([1.06, 1.09, 1.02])


def test_decodes_first_and_drafts_cut_by_the_budget(tmp_path):
    # fixed k = 2, every draft accepted, drafts 0.25 s per forward, budget 5, two requests
    # (prompt 2, out 7). step 1: both prefills (4 tokens) -> 1.04, first tokens (no drafts yet).
    # step 2: asks 1+2 and 1+2 = 6 > 5: r1 gets 2 tokens (1 draft): 5 tokens -> 1.05 + 2 * 0.25 = 1.55
    #   ends 2.59; r0 emits 3 (4 tokens), r1 2 (3 tokens)
    # step 3: the same cut: ends 4.14; r0 done (7), r1 at 5
    # step 4: r1 alone, one draft left before its end: 2 tokens -> 1.02 + 0.5, ends 5.66
    cfg = config(tmp_path, [(0.0, 2, 7), (0.0, 2, 7)], acceptance={"model": "iid", "alpha": 1.0},
                 cost=LINEAR | {"draft_step_s": 0.25}, policy={"name": "fixed", "k": 2},
                 server=vllm_server(max_batch=2, max_num_batched_tokens=5))
    r = run(cfg, keep_steps=True)
    assert r.columns["first_token_s"].tolist() == pytest.approx([1.04, 1.04])
    assert r.columns["finish_s"].tolist() == pytest.approx([4.14, 5.66])
    assert [s[7] for s in r.steps] == [0, 3, 3, 1]  # verified drafts per step: the budget cut r1's window
    assert r.summary["acceptance_length"] == pytest.approx(1 + 7 / 5)
    # negative controls: without the budget cut, or with the simple scheduler, the timeline differs
    loose = config(tmp_path, [(0.0, 2, 7), (0.0, 2, 7)], acceptance={"model": "iid", "alpha": 1.0},
                   cost=LINEAR | {"draft_step_s": 0.25}, policy={"name": "fixed", "k": 2},
                   server=vllm_server(max_batch=2, max_num_batched_tokens=6))
    assert run(loose).columns["finish_s"].tolist() != pytest.approx([4.14, 5.66])
    simple = config(tmp_path, [(0.0, 2, 7), (0.0, 2, 7)], acceptance={"model": "iid", "alpha": 1.0},
                    cost=LINEAR | {"draft_step_s": 0.25}, policy={"name": "fixed", "k": 2}, server={"max_batch": 2})
    assert run(simple).columns["first_token_s"].tolist() != pytest.approx([1.04, 1.04])


def test_max_num_seqs_is_server_max_batch(tmp_path):
    # max_batch 1: r1 waits for r0 to finish although the budget has room.
    # step 1: r0 prefill (3) -> 1.03; step 2: r0 decodes -> 1.01, ends 2.04, done (2 tokens)
    # step 3: r1 prefill (3) -> 1.03, ends 3.07 = r1's first (and only) token
    cfg = config(tmp_path, [(0.0, 3, 2), (0.0, 3, 1)], cost=LINEAR, policy={"name": "none"},
                 server=vllm_server(max_batch=1))
    r = run(cfg)
    assert r.columns["first_token_s"].tolist() == pytest.approx([1.03, 3.07])
    assert r.columns["finish_s"].tolist() == pytest.approx([2.04, 3.07])


def test_a_prompt_larger_than_the_budget_without_chunking_is_a_config_error(tmp_path):
    cfg = config(tmp_path, [(0.0, 50, 2)], cost=LINEAR, policy={"name": "none"},
                 server=vllm_server(max_num_batched_tokens=10, chunked_prefill=False))
    with pytest.raises(ConfigError, match="server.max_num_batched_tokens"):
        run(cfg)


@pytest.mark.parametrize("policy", [{"name": "tetris", "k": 2, "extra": 2}, {"name": "fixed", "k": 3}, {"name": "dsd"}])
def test_budget_seats_and_tokens_invariants(policy):
    # a Poisson workload with mixed prompts: every step schedules <= budget tokens and <= max_batch
    # requests, every request gets exactly its output length (the run drains), none before arriving.
    budget, seats = 96, 6
    cfg = load_config(base={"seed": 4, "workload": {"arrival": "poisson", "rate": 40.0, "num_requests": 60,
                                                     "prompt_len": {"dist": "uniform", "low": 1, "high": 200},
                                                     "output_len": {"dist": "uniform", "low": 1, "high": 40}},
                            "acceptance": {"model": "mixture"}, "cost": {"model": "linear", "per_token_s": 1e-4},
                            "server": vllm_server(max_batch=seats, max_num_batched_tokens=budget), "policy": policy})
    seen = []
    res = simulate_policy(cfg, cfg.policy, on_step=lambda rep, info: seen.append((info["tokens"], rep.I.shape[0])))
    assert max(t for t, _ in seen) <= budget and max(b for _, b in seen) <= seats
    assert res.summary["num_requests"] == 60
    assert res.summary["output_tokens"] == int(res.columns["output_len"].sum())
    assert np.all(res.columns["first_token_s"] <= res.columns["finish_s"])
    assert np.all(res.columns["first_token_s"] > res.columns["arrival_s"])  # nobody served before arriving


def test_the_new_keys_leave_the_simple_scheduler_alone():
    # server.scheduler = "simple" (the default) ignores the vLLM keys: identical runs.
    base = {"seed": 2, "workload": {"num_requests": 40}, "acceptance": {"model": "mixture"}}
    a = load_config(base=base)
    b = load_config(base=base | {"server": {"max_num_batched_tokens": 1, "chunked_prefill": False}})
    ra, rb = simulate_policy(a, a.policy), simulate_policy(b, b.policy)
    assert a.server.scheduler == "simple"
    assert ra.summary == rb.summary
    for key in ra.columns:
        assert np.array_equal(ra.columns[key], rb.columns[key])


@pytest.mark.parametrize("policy", [{"name": "tetris", "k": 2, "extra": 2}, {"name": "none"}])
def test_the_decode_only_fast_path_changes_nothing(monkeypatch, policy):
    # VllmReplica._decode_step (steps of decodes only, within the budget) against the general path
    from sim.vllm_sched import VllmReplica

    cfg = load_config(base={"seed": 9, "workload": {"arrival": "poisson", "rate": 50.0, "num_requests": 80,
                                                     "prompt_len": {"dist": "uniform", "low": 1, "high": 300}},
                            "acceptance": {"model": "mixture"}, "cost": {"model": "linear", "per_token_s": 1e-4},
                            "server": vllm_server(max_batch=8, max_num_batched_tokens=64), "policy": policy})
    calls, orig = [], VllmReplica._decode_step

    def counted(self, *a):
        calls.append(1)
        yield from orig(self, *a)

    monkeypatch.setattr(VllmReplica, "_decode_step", counted)
    fast = simulate_policy(cfg, cfg.policy)
    assert 0 < len(calls) < fast.summary["num_steps"]  # both paths ran
    monkeypatch.setattr(VllmReplica, "FAST_DECODE", False)
    slow = simulate_policy(cfg, cfg.policy)
    assert fast.summary == slow.summary and fast.summary["num_steps"] > 0
    for key in fast.columns:
        assert np.array_equal(fast.columns[key], slow.columns[key])
