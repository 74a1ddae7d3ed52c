"""contract/runs.py: policy variants, labels and the atomic run folder shared by sim and engine."""
import pytest

from contract.config import ConfigError, load_config
from types import SimpleNamespace

from contract.runs import atomic_folder, policy_variants, resolve_variant, run_variants, summary_json


def test_variants_labels_and_best_fixed():
    cfg = load_config(base={"sweep": [
        {"name": "none"}, {"name": "fixed", "k": 1}, {"name": "fixed", "k": 2},
        {"name": "tetris", "k": "best_fixed", "extra": 1}, {"name": "tetris", "k": 2, "extra": 1, "budget": "goodput"},
        {"name": "fixed", "k": 1},
    ]})
    labels = [lab for lab, _ in policy_variants(cfg)]
    assert labels == ["none", "fixed-k1", "fixed-k2", "tetris-kbest-e1", "tetris-k2-e1-goodput", "fixed-k1'"]
    table = dict(policy_variants(cfg))["tetris-kbest-e1"]
    assert resolve_variant(table, {1: 10.0, 2: 12.0}).k == 2
    assert resolve_variant(table, {1: 12.0, 2: 12.0}).k == 1  # first of equals


def test_run_variants_resolves_best_fixed_from_the_baselines_run_before():
    cfg = load_config(base={"sweep": [
        {"name": "fixed", "k": 1}, {"name": "fixed", "k": 3}, {"name": "fixed", "k": 2},
        {"name": "tetris", "k": "best_fixed", "extra": 1}, {"name": "fixed", "k": 4}, {"name": "tetris", "k": "best_fixed"},
    ]})
    speed = {1: 10.0, 2: 12.0, 3: 11.0, 4: 20.0}  # fixed k=4 runs after the first best_fixed variant
    ran = []

    def run_one(label, pcfg):
        ran.append((label, pcfg.name, pcfg.k))
        return SimpleNamespace(summary={"output_throughput": speed[pcfg.k] if pcfg.name == "fixed" else 99.0})

    done = run_variants(policy_variants(cfg), run_one)
    assert list(done) == [lab for lab, _, _ in ran]
    assert [k for _, name, k in ran if name == "tetris"] == [2, 4]  # the best among those run before each
    # tetris's own 99 tok/s never counts as a baseline


def test_summary_json_holds_the_resolved_policy_parameters():
    import json

    from contract.config import PolicyConfig

    pols = {"t": PolicyConfig(name="threshold", k=2, extra=1, tau=0.5), "n": PolicyConfig(name="none")}
    data = json.loads(summary_json({"t": {"x": 1}, "n": {"x": 2}}, pols))["policies"]
    assert data["t"] == {"x": 1, "policy": {"name": "threshold", "k": 2, "extra": 1, "budget": "fixed", "tau": 0.5,
                                            "disable_batch": 0, "early_stop": True}}
    assert data["n"] == {"x": 2, "policy": {"name": "none"}}
    assert json.loads(summary_json({"n": {"x": 2}})) == {"policies": {"n": {"x": 2}}}  # the old shape without them


def test_variants_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"sweep\[0\]\.k: \"best_fixed\" needs"):
        policy_variants(load_config(base={"sweep": [{"name": "tetris", "k": "best_fixed"}]}))
    with pytest.raises(ConfigError, match=r"sweep\[1\]\.extra"):
        policy_variants(load_config(base={"sweep": [{"name": "none"}, {"name": "tetris", "extra": -1}]}))
    with pytest.raises(ConfigError, match="--policy"):
        policy_variants(load_config(), only="bogus")


def test_check_hook_sees_every_variant():
    cfg = load_config(base={"sweep": [{"name": "fixed", "k": 1}, {"name": "dsd"}]})
    seen = []
    policy_variants(cfg, check=lambda p, lab: seen.append((p.name, lab)))
    assert seen == [("fixed", "fixed-k1"), ("dsd", "dsd")]


def test_atomic_folder_replaces_only_on_success(tmp_path):
    out = tmp_path / "run"
    with atomic_folder(out) as tmp:
        (tmp / "a.json").write_text("1")
    assert (out / "a.json").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            (tmp / "a.json").write_text("2")
            raise RuntimeError("boom")
    assert (out / "a.json").read_text() == "1"  # the old run is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp folder left


def test_summary_json_is_json_safe():
    import json

    import numpy as np

    text = summary_json({"x": {"a": np.float64(1.5), "b": float("nan"), "c": [np.int64(2)]}})
    assert json.loads(text) == {"policies": {"x": {"a": 1.5, "b": None, "c": [2]}}}


def test_atomic_folder_never_replaces_user_files(tmp_path):
    """Even a caller that skipped contract.outpaths.check_out_dir cannot replace a folder of other files or a file."""
    from contract.config import ConfigError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "f.txt").write_text("keep")
    for target in (tmp_path / "mine", tmp_path / "f.txt"):
        with pytest.raises(ConfigError):
            with atomic_folder(target):
                pass
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep" and (tmp_path / "f.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "mine"]
