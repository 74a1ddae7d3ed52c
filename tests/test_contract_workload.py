"""contract/workload.py: determinism, samplers (KS tests), trace formats, acceptance draws."""
import json

import numpy as np
import pytest
from scipy import stats

from contract.config import ConfigError, load_config
from contract.workload import (CHUNK, acceptance_rng, acceptance_uniforms, iter_request_chunks, iter_requests,
                             num_requests, read_trace_file)

# KS tests: fixed seeds; we require p > 0.001, so a correct sampler fails with
# probability 0.1% per test at most, and these seeds are fixed (never flaky).
P_MIN = 1e-3


def cfg(**workload):
    return load_config(base={"seed": 7, "workload": workload})


def columns(c):
    chunks = list(iter_request_chunks(c))
    return {k: np.concatenate([getattr(ch, k) for ch in chunks]) for k in ("id", "arrival_s", "prompt_len", "output_len")}


def test_same_seed_same_workload_and_streams_independent():
    a = columns(cfg(arrival="poisson", rate=3.0, num_requests=500, output_len={"dist": "uniform", "low": 1, "high": 90}))
    b = columns(cfg(arrival="poisson", rate=3.0, num_requests=500, output_len={"dist": "uniform", "low": 1, "high": 90}))
    for k in a:
        assert np.array_equal(a[k], b[k])
    # changing the prompt distribution leaves arrivals and output lengths untouched
    c = columns(cfg(arrival="poisson", rate=3.0, num_requests=500, output_len={"dist": "uniform", "low": 1, "high": 90},
                    prompt_len={"dist": "lognormal", "median": 50.0}))
    assert np.array_equal(a["arrival_s"], c["arrival_s"]) and np.array_equal(a["output_len"], c["output_len"])
    assert not np.array_equal(a["prompt_len"], c["prompt_len"])


def test_iter_requests_matches_chunks_across_chunk_boundary():
    c = cfg(arrival="gamma", rate=50.0, cv=3.0, num_requests=CHUNK + 10)
    cols = columns(c)
    reqs = list(iter_requests(c))
    assert len(reqs) == CHUNK + 10 == num_requests(c)
    assert [r.id for r in reqs[-3:]] == list(range(CHUNK + 7, CHUNK + 10))
    assert np.array_equal([r.arrival_s for r in reqs], cols["arrival_s"])
    assert np.all(np.diff(cols["arrival_s"]) >= 0)  # the clock carries over the chunk boundary


def test_offline_all_at_zero():
    cols = columns(cfg(arrival="offline", num_requests=100))
    assert np.all(cols["arrival_s"] == 0) and np.array_equal(cols["id"], np.arange(100))


def test_ks_poisson_gaps():
    gaps = np.diff(columns(cfg(arrival="poisson", rate=4.0, num_requests=5000))["arrival_s"])
    assert stats.kstest(gaps, "expon", args=(0, 1 / 4.0)).pvalue > P_MIN


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_ks_gamma_gaps(cv):
    gaps = np.diff(columns(cfg(arrival="gamma", rate=4.0, cv=cv, num_requests=5000))["arrival_s"])
    shape = 1 / cv**2
    assert stats.kstest(gaps, "gamma", args=(shape, 0, 1 / (4.0 * shape))).pvalue > P_MIN
    assert abs(gaps.std() / gaps.mean() - cv) < 0.1 * cv  # 5000 gaps: sampling error well under 10%


def test_uniform_lengths_chi_square():
    x = columns(cfg(num_requests=6000, output_len={"dist": "uniform", "low": 3, "high": 8}))["output_len"]
    assert x.min() == 3 and x.max() == 8
    counts = np.bincount(x - 3, minlength=6)
    assert stats.chisquare(counts).pvalue > P_MIN


def test_ks_lognormal_lengths():
    x = columns(cfg(num_requests=5000, prompt_len={"dist": "lognormal", "median": 2000.0, "sigma": 0.4, "max": 10**6}))["prompt_len"]
    # rounding to integers moves log(x) by < 1/1000 at these sizes: negligible for KS at n=5000
    assert stats.kstest(np.log(x), "norm", args=(np.log(2000.0), 0.4)).pvalue > P_MIN


def test_lognormal_clipped_to_max():
    x = columns(cfg(num_requests=2000, output_len={"dist": "lognormal", "median": 100.0, "sigma": 2.0, "max": 300}))["output_len"]
    assert x.min() >= 1 and x.max() == 300


def test_empirical_lengths_chi_square(tmp_path):
    f = tmp_path / "lens.txt"
    f.write_text("10\n20\n20\n30\n")
    x = columns(cfg(num_requests=4000, output_len={"dist": "empirical", "path": str(f)}))["output_len"]
    counts = np.array([(x == v).sum() for v in (10, 20, 30)])
    assert counts.sum() == 4000
    assert stats.chisquare(counts, [1000, 2000, 1000]).pvalue > P_MIN


def test_trace_formats(tmp_path):
    j = tmp_path / "t.jsonl"
    j.write_text('{"arrival_s": 1.5, "prompt_len": 3, "output_len": 4}\n{"arrival_s": 0.5, "prompt_len": 5, "output_len": 6}\n')
    cols = read_trace_file(str(j))
    assert list(cols["arrival_s"]) == [0.5, 1.5] and list(cols["output_len"]) == [6, 4]  # sorted by arrival
    c = tmp_path / "t.csv"
    c.write_text("arrival_s,prompt_len,output_len\n0.0,7,8\n2.0,9,10\n")
    got = columns(cfg(arrival="trace", trace=str(c), num_requests=10))
    assert list(got["arrival_s"]) == [0.0, 2.0] and list(got["prompt_len"]) == [7, 9]
    s = tmp_path / "sharegpt.json"
    s.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "x" * 40},
                                                          {"from": "gpt", "value": "y" * 400}]}] * 3))
    sg = cfg(arrival="trace", trace=str(s), num_requests=2, rate=2.0)
    got = columns(sg)
    assert list(got["prompt_len"]) == [10, 10] and list(got["output_len"]) == [100, 100]  # ~4 chars/token
    assert np.all(got["arrival_s"] > 0)  # no timestamps: Poisson arrivals at workload.rate


@pytest.mark.parametrize("workload, key", [
    ({"output_len": {"dist": "uniform", "low": 9, "high": 3}}, "workload.output_len.low"),
    ({"prompt_len": {"dist": "empirical", "path": "/nonexistent"}}, "workload.prompt_len.path"),
    ({"arrival": "trace", "trace": "/nonexistent.jsonl"}, "workload.trace"),
])
def test_bad_workload_names_key(workload, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        list(iter_request_chunks(cfg(**workload)))


def test_acceptance_draws_are_counter_based():
    ids = np.arange(50)[:, None]
    pos = np.arange(40)[None, :]
    full = acceptance_uniforms(3, ids, pos)
    assert np.array_equal(full[7:9, 5:11], acceptance_uniforms(3, ids[7:9], pos[:, 5:11]))  # any sub-batch
    assert full[4, 6] == acceptance_uniforms(3, 4, 6)
    assert not np.array_equal(full, acceptance_uniforms(4, ids, pos))  # the seed matters
    assert stats.kstest(full.ravel(), "uniform").pvalue > P_MIN
    # neighbouring positions of one request and neighbouring requests are uncorrelated (|r| < 4/sqrt(n))
    assert abs(np.corrcoef(full[:, :-1].ravel(), full[:, 1:].ravel())[0, 1]) < 4 / np.sqrt(full.size)
    a, b = acceptance_rng(3, 9).random(5), acceptance_rng(3, 9).random(5)
    assert np.array_equal(a, b) and not np.array_equal(a, acceptance_rng(3, 10).random(5))
