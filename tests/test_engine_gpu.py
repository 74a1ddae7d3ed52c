"""CUDA checks (run by scripts/gpu_check.sh; skipped without a GPU)."""
import json

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _run(target, draft, cfg, prompts, out_len=24, temperature=0.0, max_batch=4):
    from engine.core import Engine, Seq
    from engine.run import run
    from theory.policy import make_policy
    from contract.workload import acceptance_rng

    eng = Engine(target, draft, make_policy(cfg), temperature=temperature)
    res = run(eng, [Seq(i, p, out_len, acceptance_rng(0, i)) for i, p in enumerate(prompts)], max_batch)
    return [s.out for s in sorted(res.seqs, key=lambda s: s.id)], res


def test_cuda_float32_greedy_lossless():
    from engine.testing.tiny import tiny_pair
    from contract.config import PolicyConfig

    target, draft = (m.cuda() for m in tiny_pair(vocab=64, hidden=32, layers=2, seed=1))
    rng = np.random.default_rng(7)
    prompts = [rng.integers(0, 64, size=int(n)).tolist() for n in (1, 3, 9, 17, 5, 26, 2)]
    plain, _ = _run(target, draft, PolicyConfig(name="none"), prompts)
    for cfg in (PolicyConfig(name="fixed", k=3), PolicyConfig(name="tetris", k=1, extra=3),
                PolicyConfig(name="threshold", k=2, extra=2)):
        assert _run(target, draft, cfg, prompts)[0] == plain


def test_cuda_tabular_sampling_lossless():
    from scipy.stats import chisquare

    from engine.testing.tabular import TabularLM, exact_joint, random_table
    from contract.config import PolicyConfig

    rng = np.random.default_rng(3)
    p_tab, q_tab = random_table(4, rng, 0.7), random_table(4, rng, 0.7)
    n = 3000
    outs, _ = _run(TabularLM(p_tab).cuda(), TabularLM(q_tab).cuda(), PolicyConfig(name="tetris", k=1, extra=2),
                   [[1, 2]] * n, out_len=3, temperature=1.0, max_batch=64)
    counts = np.zeros((4, 4, 4))
    for o in outs:
        counts[tuple(o)] += 1
    exp = exact_joint(p_tab, [1, 2], 3).ravel() * n
    small = exp < 5
    obs = np.append(counts.ravel()[~small], counts.ravel()[small].sum())
    assert chisquare(obs, np.append(exp[~small], exp[small].sum())).pvalue > 1e-3  # as the CPU test


def test_cuda_bf16_committed_pair_every_policy(tmp_path, capsys):
    from engine.pairs import DEFAULT_PAIR
    from tetris_cli import main

    if not (DEFAULT_PAIR / "target" / "config.json").is_file():
        pytest.skip("committed pair missing")
    for pol in ("none", "fixed", "tetris", "threshold", "dsd"):
        dump = tmp_path / f"{pol}.jsonl"
        assert main(["engine", "--set", "engine.device=\"cuda\"", "--set", "engine.clock=\"wall\"",
                     "--set", "workload.num_requests=16",
                     "--set", "workload.output_len.value=32", "--policy", pol, "--quiet", "--json",
                     "--out", str(tmp_path / pol), "--dump-outputs", str(dump)]) == 0
        s = json.loads(capsys.readouterr().out)["policies"][pol]
        assert s["output_tokens"] == 16 * 32
        rows = [json.loads(x) for x in dump.read_text().splitlines()]
        assert all(len(r["output_ids"]) == 32 for r in rows)
