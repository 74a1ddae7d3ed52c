"""The policy registry's contract (theory/policies/): every registered policy declares a label,
its parameters and its needs (step time, truth), and runs through the simulator on exactly
what it declares.

A new policy is covered by these tests as soon as it has its registry line; its own test
file checks what it selects. Power: the declarations are checked exactly (no sampling),
except "allocate ignores truth unless needs_truth", checked on 20 random (N, K) batches:
a policy that reads truth on a set of instances of probability p is caught unless all
20 miss it, i.e. with probability 1 - (1 - p)^20 (0.99 at p = 0.2). The negative controls
below register policies that lie about their needs and must be caught.
"""
import dataclasses
from contextlib import nullcontext

import numpy as np
import pytest

from contract.config import POLICIES, PolicyConfig, load_config
from contract.runs import policy_label, resolved_params
from sim.simulate import simulate_policy
from theory.allocate import tetris_allocate
from theory.policies import REGISTRY, PolicyKind, kind
from theory.policies.tetris import Tetris
from theory.policy import make_policy

FIELDS = {f.name for f in dataclasses.fields(PolicyConfig)}


def step_time(batch, drafts, verified):  # a cost model for dsd and goodput budgets
    return 0.01 + 0.001 * batch + 0.0005 * np.asarray(verified, dtype=float)


def sim_config():
    return load_config(None, ["workload.num_requests=12", "workload.arrival='offline'",
                              "workload.output_len={dist='fixed', value=24}", "server.max_batch=4",
                              "cost.model='linear'", "cost.per_token_s=0.0002", "acceptance.model='mixture'"])


def declaration_errors(k: PolicyKind) -> list[str]:
    """What a registered policy fails to declare (empty: the contract holds)."""
    errs = []
    if not (isinstance(k, PolicyKind) and k.name and REGISTRY.get(k.name, k) is k):
        errs.append("a PolicyKind registered under its own name")
    if not set(k.params) <= FIELDS - {"name"}:
        errs.append(f"params {set(k.params) - FIELDS} are not PolicyConfig fields")
    for flag in ("speculates", "needs_truth", "baseline_k"):
        if not isinstance(getattr(k, flag), bool):
            errs.append(f"{flag} is not a bool")
    for budget in ("fixed", "goodput", "unbounded"):
        cfg = PolicyConfig(name=k.name, budget=budget)
        if not isinstance(k.needs_step_time(cfg), bool):
            errs.append("needs_step_time is not a bool")
        for best in (False, True):
            lab = k.label(cfg, best)
            if not (isinstance(lab, str) and lab.startswith(k.name) and "," not in lab):
                errs.append(f"label {lab!r}: a CSV-safe string starting with the name")
    if set(k.resolved(PolicyConfig(name=k.name))) != {"name", *k.params}:
        errs.append("resolved() must hold the name and exactly the declared params")
    return errs


def truth_errors(k: PolicyKind, seed: int = 0) -> list[str]:
    """allocate reads truth only when the policy declares needs_truth (and then refuses to run without it)."""
    rng = np.random.default_rng(seed)
    for _ in range(20):
        n, K = int(rng.integers(1, 7)), int(rng.integers(1, 6))
        est, truth = rng.random((n, K)), rng.random((n, K))
        pol = make_policy(PolicyConfig(name=k.name, k=2, extra=2, budget="goodput"), step_time)
        if k.needs_truth:
            with pytest.raises(ValueError):
                pol.allocate(est)
        elif not np.array_equal(pol.allocate(est), pol.allocate(est, truth=truth)):
            return [f"allocate reads truth but {k.name} does not declare needs_truth"]
    return []


@pytest.mark.parametrize("name", POLICIES)
def test_every_registered_policy_declares_its_contract(name):
    assert declaration_errors(kind(name)) == []
    assert truth_errors(kind(name)) == []


@pytest.mark.parametrize("name", POLICIES)
def test_every_registered_policy_runs_through_the_simulator_on_what_it_declares(name):
    cfg = sim_config()
    pcfg = dataclasses.replace(cfg.policy, name=name, budget="goodput")
    with pytest.raises(ValueError, match="step-cost model") if kind(name).needs_step_time(pcfg) else nullcontext():
        make_policy(pcfg, None)  # a declared step-time need is enforced; an undeclared one is not asked for
    r = simulate_policy(cfg, pcfg, policy_label(pcfg))  # gives step time only where declared
    assert r.summary["num_requests"] == 12 and r.summary["output_tokens"] == 12 * 24
    assert (r.summary["drafted_tokens"] > 0) == kind(name).speculates
    assert resolved_params(pcfg)["name"] == name


def test_labels_are_unchanged():
    P = PolicyConfig
    cases = [
        (P(name="none"), "none"), (P(name="dsd"), "dsd"), (P(name="fixed", k=3), "fixed-k3"),
        (P(name="tetris", k=3, extra=2), "tetris-k3-e2"), (P(name="oracle", k=1, extra=0), "oracle-k1-e0"),
        (P(name="tetris", k=2, extra=1, budget="goodput"), "tetris-k2-e1-goodput"),
        (P(name="threshold", k=3, extra=2, tau=0.3), "threshold-k3-e2-tau0.3"),
        (P(name="threshold", k=3, extra=2, tau=0.25, budget="unbounded"), "threshold-k3-e2-tau0.25-unbounded"),
    ]
    assert [policy_label(p) for p, _ in cases] == [lab for _, lab in cases]
    assert policy_label(P(name="fixed", k=1), best=True) == "fixed-best"
    assert policy_label(P(name="tetris", k=1, extra=2), best=True) == "tetris-kbest-e2"
    assert policy_label(P(name="dsd"), best=True) == "dsd"


class _SneakyTruth(Tetris):  # NEGATIVE CONTROL: ranks by truth, declares needs_truth = False
    name = "sneaky"

    def allocate(self, policy, estimates, truth):
        return tetris_allocate(estimates if truth is None else truth, policy.capacity(estimates))


class _SilentStepTime(Tetris):  # NEGATIVE CONTROL: sizes by goodput, declares no step-time need
    name = "silent"

    def needs_step_time(self, cfg):
        return False


def test_negative_controls_a_lying_policy_is_caught(monkeypatch):
    monkeypatch.setitem(REGISTRY, "sneaky", _SneakyTruth())
    assert truth_errors(kind("sneaky")) != []
    monkeypatch.setitem(REGISTRY, "silent", _SilentStepTime())
    assert declaration_errors(kind("silent")) == []  # its declarations are well formed ...
    cfg = sim_config()
    with pytest.raises(TypeError, match="NoneType"):  # ... but the simulator gives it no step time (None)
        simulate_policy(cfg, dataclasses.replace(cfg.policy, name="silent", budget="goodput"))
