"""benchmarks/hf_generate.py: the pairs alternate their order, and the ratio's interval is honest.

No model runs here: the two timed calls are replaced by fakes that log their order and return set
throughputs. Power: a loop that always runs the engine first fails the order check (it sees A B A B);
an interval that ignored the spread (e.g. the median twice) fails the check that a centred sample's
interval holds 1.0 while a sample shifted by 5% with 1% noise excludes it.
"""
import numpy as np

import bench_module


def _bench():
    return bench_module.load("hf_generate")


class _Target:
    def generate(self, *args, **kwargs):  # the warm-up call
        return None

    def parameters(self):
        import torch

        return iter([torch.zeros(1, dtype=torch.bfloat16)])


def test_pairs_alternate_order(monkeypatch):
    mod = _bench()
    calls = []
    monkeypatch.setattr(mod, "engine_tps", lambda cfg, models: (calls.append("A"), 100.0, [[1, 2, 3]] * 2)[1:])
    monkeypatch.setattr(mod, "generate_tps", lambda target, prompts, n, clock: (calls.append("B"), 110.0)[1])
    row = mod.bench_batch(mod.parse_args(["--repeats", "4"]), 2, [_Target()])
    assert "".join(calls) == "ABBAABBA"
    assert row["engine_runs"] == [100.0] * 4 and row["generate_runs"] == [110.0] * 4
    assert abs(row["ratio"] - 100 / 110) < 1e-12


def test_median_ci_holds_the_spread():
    mod = _bench()
    g = np.random.default_rng(0)
    assert mod.median_ci([0.9, 1.1]) is None  # under 3 pairs: no interval
    lo, hi = mod.median_ci(list(1.0 + 0.05 * g.standard_normal(16)))
    assert lo < 1.0 < hi and hi - lo > 0.01
    lo, hi = mod.median_ci(list(0.95 + 0.01 * g.standard_normal(16)))
    assert hi < 1.0 and lo > 0.9
