"""The vLLM per-step log read without vLLM (engine/vllm/steps.py): StepStats and the step-time fit.
Default-run tests on synthetic logs (seconds each)."""
import numpy as np
import pytest

from contract.metrics import summarize
from engine.vllm.steps import fit_step_time, profile_rows, steps_to_stats


def _step(i, reqs, drafts, accepted, decode, k, ctx, t):
    return {"step": i, "start_s": 0.0, "end_s": t, "requests": reqs, "tokens": [d + 1 for d in drafts],
            "drafts": drafts, "accepted": accepted, "emitted": [a + 1 for a in accepted], "decode": decode,
            "context": ctx, "k": k}


def test_stats_count_decode_rows_only():
    steps = [_step(0, [0, 1], [0, 0], [0, 0], [False, False], 4, [0, 0], 0.1),
             _step(1, [0, 1, 2], [3, 1, 0], [2, 1, 0], [True, True, False], 4, [10, 10, 0], 0.02)]
    st = steps_to_stats(steps, 4)
    assert st.num_steps == 1 and st.request_steps == 2 and st.drafted_tokens == 8
    assert st.verified_tokens == 4 and st.accepted_tokens == 3 and st.num_drafts == 2
    s = summarize([], st, 1.0)
    assert s["acceptance_length"] == pytest.approx(1 + 3 / 2)
    assert s["per_position_acceptance"] == pytest.approx([1.0, 1.0, 0.0])


def test_fit_recovers_a_linear_step_time():
    """Power: noise-free synthetic steps from known coefficients; a wrong feature column or a
    dropped step would miss them by far more than the 1e-6 tolerance."""
    rng = np.random.default_rng(0)
    c = {"1": 2e-3, "batch": 1e-4, "tokens": 5e-5, "batch_x_k": 3e-4, "context_tokens": 1e-7}
    steps = []
    for i in range(40):
        n, k = int(rng.integers(1, 9)), int(rng.integers(0, 5))
        drafts = [int(x) for x in rng.integers(0, k + 1, n)]
        ctx = [int(x) for x in rng.integers(10, 300, n)]
        t = c["1"] + c["batch"] * n + c["tokens"] * sum(d + 1 for d in drafts) + c["batch_x_k"] * n * k \
            + c["context_tokens"] * sum(ctx)
        steps.append(_step(i, list(range(n)), drafts, [0] * n, [True] * n, k, ctx, t))
    fit = fit_step_time(steps)
    for name, v in c.items():
        assert fit["coef"][name] == pytest.approx(v, rel=1e-6, abs=1e-12), name
    rows = profile_rows(fit, [1, 8], [1, 3], [64])
    assert len(rows) == 4
    r = [x for x in rows if x["batch"] == 8 and x["tokens_per_request"] == 3][0]
    assert r["target_s"] == pytest.approx(c["1"] + 8 * c["batch"] + 24 * c["tokens"] + 8 * 64 * c["context_tokens"])
    assert r["draft_s"] == pytest.approx(8 * c["batch_x_k"])


def test_fit_needs_enough_steps():
    with pytest.raises(ValueError, match="decode-only steps"):
        fit_step_time([_step(0, [0], [0], [0], [True], 0, [5], 0.01)])
