"""One verify layout (server.verify_layout) and its two deprecated aliases.

The old keys had opposite defaults (cost.verify_layout = "packed" for the simulator,
engine.verify_layout = "padded" for the engine); "auto" keeps each side's old default, an old key
keeps its old meaning on its own side (so a config.toml written before the change runs the same),
and the cost model prices the pass from the window lengths in the resolved layout.
"""
import subprocess
import sys

import numpy as np
import pytest

from contract.config import ConfigError, load_config, to_toml, verify_layout, with_layout
from sim.cost import make_cost


def test_auto_keeps_each_sides_old_default():
    cfg = load_config()
    assert cfg.server.verify_layout == "auto"
    assert (verify_layout(cfg, "sim"), verify_layout(cfg, "engine")) == ("packed", "padded")
    for one in ("packed", "padded"):
        c = load_config(None, [f'server.verify_layout="{one}"'])
        assert verify_layout(c, "sim") == verify_layout(c, "engine") == one
    assert with_layout(cfg, "engine").server.verify_layout == "padded"


def test_old_keys_are_aliases_with_a_note(capsys, monkeypatch):
    import contract.config as cc

    monkeypatch.setattr(cc, "_NOTED", set())
    c = load_config(None, ['cost.verify_layout="padded"', 'engine.verify_layout="packed"'])
    err = capsys.readouterr().err.splitlines()
    assert err == ["tetris: note: cost.verify_layout is deprecated; use server.verify_layout (same values)",
                   "tetris: note: engine.verify_layout is deprecated; use server.verify_layout (same values)"]
    assert (verify_layout(c, "sim"), verify_layout(c, "engine")) == ("padded", "packed")
    load_config(None, ['cost.verify_layout="padded"'])
    assert capsys.readouterr().err == ""  # once per process
    with pytest.raises(ConfigError, match=r"^cost.verify_layout: 'padded' contradicts server.verify_layout = 'packed'"):
        load_config(None, ['cost.verify_layout="padded"', 'server.verify_layout="packed"'])
    with pytest.raises(ConfigError, match="engine.verify_layout: 'diagonal' is not one of"):
        load_config(None, ['engine.verify_layout="diagonal"'])


def test_config_toml_round_trip_old_and_new(tmp_path):
    new = to_toml(load_config())
    assert 'verify_layout = "auto"' in new and new.count("verify_layout") == 1  # unset aliases not written
    old = new.replace('[cost]\n', '[cost]\nverify_layout = "packed"\n').replace('[engine]\n', '[engine]\nverify_layout = "padded"\n')
    (tmp_path / "old.toml").write_text(old)  # what every run folder held before: both keys, their defaults
    c = load_config(tmp_path / "old.toml")
    assert (verify_layout(c, "sim"), verify_layout(c, "engine")) == ("packed", "padded")
    assert load_config(None, base=None) == load_config(_write(tmp_path, new))


def _write(tmp_path, text):
    p = tmp_path / "new.toml"
    p.write_text(text)
    return p


def test_cost_model_prices_the_pass_from_the_lengths():
    cfg = load_config(None, ['cost.model="linear"', "cost.step_s=0.0", "cost.per_token_s=1.0", "cost.draft_step_s=0.0"])
    lengths = np.array([0, 3, 1, 2])
    packed, padded = make_cost(cfg.cost, "packed"), make_cost(cfg.cost, "padded")
    assert packed.verified_tokens(lengths) == 6 and padded.verified_tokens(lengths) == 12
    assert packed.window_step_s(4, 3, lengths, 10.0) == 4 + 6 and padded.window_step_s(4, 3, lengths, 10.0) == 4 * (1 + 3)
    assert padded.verified_tokens(np.zeros(0, np.int64)) == 0 and padded.verified_tokens(np.zeros(4, np.int64)) == 0
    assert make_cost(cfg.cost).layout == "packed"  # the simulator's old default


def test_cli_alias_runs_like_the_key(tmp_path):
    def sim(*sets):
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        p = subprocess.run([sys.executable, "-m", "tetris_cli", "simulate", "--quiet", "--out", str(out),
                            "--set", "workload.num_requests=40", "--set", 'cost.model="linear"', *sum((["--set", s] for s in sets), [])],
                           capture_output=True, text=True)
        return p, (out / "summary.json").read_text() if p.returncode == 0 else None

    p_new, s_new = sim('server.verify_layout="padded"')
    p_old, s_old = sim('cost.verify_layout="padded"')
    p_def, s_def = sim()
    assert p_new.returncode == p_old.returncode == p_def.returncode == 0
    assert s_new == s_old != s_def  # the alias is the key; padded differs from the default (packed)
    assert "cost.verify_layout is deprecated" in p_old.stderr and "deprecated" not in p_new.stderr
    bad, _ = sim('server.verify_layout="diagonal"')
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].count("server.verify_layout") == 1
    assert "Traceback" not in bad.stderr
