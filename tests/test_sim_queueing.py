"""Queueing checks: M/D/1 (batch 1, no speculation, Poisson, fixed length, constant step) and Little's law."""
import numpy as np
import pytest

from contract.config import load_config
from contract.workload import iter_request_chunks
from sim.simulate import simulate_policy

STEP = 0.01


def md1_config(rho: float, n: int, length: int, seed: int = 1):
    service = length * STEP
    return load_config(base={
        "seed": seed,
        "workload": {"arrival": "poisson", "rate": rho / service, "num_requests": n,
                     "output_len": {"dist": "fixed", "value": length}},
        "cost": {"model": "constant", "step_s": STEP, "draft_step_s": 0.0},
        "server": {"max_batch": 1}, "policy": {"name": "none"}})


def lindley(arrivals: np.ndarray, service: float) -> np.ndarray:
    """Waiting times of a FIFO single server: W_{i+1} = max(0, W_i + D - (A_{i+1} - A_i))."""
    w, prev, out = 0.0, arrivals[0], np.empty(arrivals.size)
    for i, a in enumerate(arrivals.tolist()):
        if i:
            w = max(0.0, w + service - (a - prev))
        prev, out[i] = a, w
    return out


def md1_wait(rho: float, service: float) -> float:
    """Mean queueing delay of M/D/1: rho / (2 mu (1 - rho)), mu = 1 / service."""
    return rho * service / (2 * (1 - rho))


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_simulator_equals_lindley_recursion(rho):
    # the simulated queueing delay (ttft minus the one step that makes the first token) of
    # every request equals the exact FIFO single-server recursion on the same arrivals
    cfg = md1_config(rho, 4000, length=3)
    r = simulate_policy(cfg, cfg.policy)
    wait = r.columns["first_token_s"] - r.columns["arrival_s"] - STEP
    expect = lindley(r.columns["arrival_s"], 3 * STEP)
    assert np.max(np.abs(wait - expect)) < 1e-9
    assert np.allclose(r.columns["finish_s"] - r.columns["first_token_s"], 2 * STEP)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait_matches_formula(rho):
    # same recursion (proved equal to the simulator above) over 200k arrivals of the
    # simulator's own Poisson stream; spread over seeds at this n is < 1.5% at rho 0.8: 3% bound
    cfg = md1_config(rho, 200_000, length=3)
    arrivals = np.concatenate([c.arrival_s for c in iter_request_chunks(cfg)])
    w = lindley(arrivals, 3 * STEP).mean()
    assert w == pytest.approx(md1_wait(rho, 3 * STEP), rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_simulated_mean_wait_matches_formula(rho):
    cfg = md1_config(rho, 200_000, length=1)
    r = simulate_policy(cfg, cfg.policy)
    assert r.summary["mean_ttft_s"] - STEP == pytest.approx(md1_wait(rho, STEP), rel=0.03)


def test_littles_law_in_service():
    # time-average number in service (from the steps) = throughput x mean time in service
    # (from the requests: admission = start of the first step that ran them)
    cfg = load_config(base={
        "seed": 5,
        "workload": {"arrival": "poisson", "rate": 30.0, "num_requests": 600,
                     "output_len": {"dist": "uniform", "low": 5, "high": 60}},
        "acceptance": {"model": "beta", "beta_a": 3.0, "beta_b": 2.0},
        "cost": {"model": "linear", "step_s": 0.01, "per_token_s": 0.0005, "draft_step_s": 0.001},
        "server": {"max_batch": 8}, "policy": {"name": "tetris", "k": 2, "extra": 1}})
    admitted: dict[int, float] = {}
    area = [0.0]

    def hook(rep, info):
        area[0] += info["batch"] * info["dt"]
        for i in info["ids"].tolist():
            admitted.setdefault(i, info["start_s"])

    r = simulate_policy(cfg, cfg.policy, on_step=hook)
    c = r.columns
    T = r.summary["duration_s"]
    in_service = c["finish_s"] - np.array([admitted[i] for i in c["id"].tolist()])
    assert area[0] / T == pytest.approx(r.summary["request_throughput"] * in_service.mean(), rel=1e-9)
    # and in the whole system: L = lambda W with W the mean end-to-end latency, N(t) swept from events
    times = np.concatenate([c["arrival_s"], c["finish_s"]])
    delta = np.concatenate([np.ones(c["id"].size), -np.ones(c["id"].size)])
    order = np.lexsort((delta, times))
    n_t = np.cumsum(delta[order])
    t = times[order]
    L = float(np.sum(n_t[:-1] * np.diff(t))) / T
    assert L == pytest.approx(r.summary["request_throughput"] * r.summary["mean_e2e_s"], rel=1e-9)
    assert r.summary["mean_batch"] <= 8
