"""contract/metrics.py: summary metrics on hand-computed examples."""
import numpy as np
import pytest

from contract.config import SloConfig
from contract.metrics import RequestRecord, StepStats, summarize


def test_step_stats_positions_and_acceptance_length():
    s = StepStats()
    s.add_step(3, 4, np.array([0, 2, 4]), np.array([0, 1, 4]), np.array([1, 2, 5]))
    s.add_step(2, 0, np.zeros(2, np.int64), np.zeros(2, np.int64), np.ones(2, np.int64))
    assert s.verified_at.tolist() == [2, 2, 1, 1]  # positions 1..4 verified by windows 2 and 4
    assert s.accepted_at.tolist() == [2, 1, 1, 1]
    assert (s.num_steps, s.request_steps, s.num_drafts, s.drafted_tokens) == (2, 5, 2, 12)
    out = summarize([RequestRecord(0, 0.0, 1.0, 2.0, 5, 10)], s, 2.0)
    assert out["acceptance_length"] == pytest.approx(1 + 5 / 2)
    assert out["draft_acceptance_rate"] == pytest.approx(5 / 6)
    assert out["per_position_acceptance"] == pytest.approx([1.0, 0.5, 1.0, 1.0])
    assert out["wasted_tokens"] == 1 and out["mean_budget"] == 3.0 and out["tokens_per_step"] == 5.0
    other = StepStats()
    other.add_step(1, 6, np.array([6]), np.array([5]), np.array([6]))
    s.merge(other)
    assert s.verified_at.tolist() == [3, 3, 2, 2, 1, 1] and s.accepted_at.tolist() == [3, 2, 2, 2, 1, 0]


def test_latency_metrics_and_goodput():
    recs = [
        RequestRecord(0, 0.0, 0.5, 2.5, 10, 5),  # ttft .5, tpot .5, e2e 2.5
        RequestRecord(1, 1.0, 3.0, 3.0, 10, 1),  # ttft 2, one token: no tpot
        RequestRecord(2, 1.0, 1.5, 4.5, 10, 4),  # ttft .5, tpot 1, e2e 3.5
    ]
    out = summarize(recs, None, 5.0, SloConfig(ttft_s=1.0, tpot_s=0.6))
    assert out["output_throughput"] == pytest.approx(10 / 5.0)
    assert out["request_throughput"] == pytest.approx(3 / 5.0)
    assert out["mean_ttft_s"] == pytest.approx(1.0) and out["p50_ttft_s"] == pytest.approx(0.5)
    assert out["mean_tpot_s"] == pytest.approx(0.75)
    assert out["mean_e2e_s"] == pytest.approx((2.5 + 2.0 + 3.5) / 3)
    assert out["goodput"] == pytest.approx(1 / 5.0)  # only request 0 meets both SLOs
    cols = {k: np.array([getattr(r, k) for r in recs]) for k in ("id", "arrival_s", "first_token_s", "finish_s", "prompt_len", "output_len")}
    assert summarize(cols, None, 5.0) == summarize(recs, None, 5.0)  # columnar form gives the same
    assert "goodput" not in summarize(recs, None, 5.0)


def test_record_sink_streams_past_its_limit():
    from contract.metrics import RecordSink

    rng = np.random.default_rng(0)
    n = 5000
    arrival = np.sort(rng.uniform(0, 100, n))
    first = arrival + rng.exponential(0.5, n)
    out = rng.integers(1, 300, n)
    finish = first + (out - 1) * rng.uniform(0.01, 0.05, n)
    cols = dict(id=np.arange(n), arrival_s=arrival, first_token_s=first, finish_s=finish, prompt_len=np.ones(n), output_len=out)
    exact = summarize(cols, None, 120.0, SloConfig(ttft_s=0.7))
    seen = []
    sink = RecordSink(SloConfig(ttft_s=0.7), exact_limit=100, writer=lambda c: seen.append(c["id"].copy()), block=256)
    for lo in range(0, n, 7):  # finish in blocks of 7, like a step retiring a few requests
        hi = min(n, lo + 7)
        sink.add(np.arange(lo, hi), arrival[lo:hi], first[lo:hi], finish[lo:hi], np.ones(hi - lo), out[lo:hi])
    assert not sink.exact and sink.rows < 256 + 7  # bounded buffer
    got = summarize(sink, None, 120.0, SloConfig(ttft_s=0.7))
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(n))  # every row reached the writer once
    for key in ("num_requests", "output_tokens", "goodput", "slo_attainment"):
        assert got[key] == exact[key]
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        assert got[f"mean_{name}"] == pytest.approx(exact[f"mean_{name}"], rel=1e-12)
        # histogram bins are 0.1% wide; percentiles of 5000 samples also differ by interpolation
        # between neighbours, which is far below 1% here
        assert got[f"p50_{name}"] == pytest.approx(exact[f"p50_{name}"], rel=0.01)
        assert got[f"p99_{name}"] == pytest.approx(exact[f"p99_{name}"], rel=0.01)
