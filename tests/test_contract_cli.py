"""`tetris select`: the demo board and the JSON file mode, including bad input."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tetris_cli import main
from theory import expected_tokens, fixed_allocate, tetris_allocate
from contract.cli import demo_batch


def _run(capsys, *argv):
    code = main(["select", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("n, k, extra, seed", [(8, 3, 2, 0), (5, 2, 1, 3), (1, 1, 3, 9)])
def test_demo_board(capsys, n, k, extra, seed):
    code, out, err = _run(capsys, "--demo", "--n", str(n), "--k", str(k), "--extra", str(extra), "--seed", str(seed))
    assert code == 0 and err == ""
    accept = demo_batch(n, k, extra, seed)
    fixed, tetris = fixed_allocate(accept, k), tetris_allocate(accept, k * n)
    rows = [line for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == n
    for i, line in enumerate(rows):
        boards = re.findall(r"[#.]{%d}" % (k + extra), line)
        assert boards[:2] == ["#" * fixed[i] + "." * (k + extra - fixed[i]), "#" * tetris[i] + "." * (k + extra - tetris[i])]
    e_fixed, e_tetris = expected_tokens(accept, fixed), expected_tokens(accept, tetris)
    assert f"fixed k={k} {e_fixed:.3f}, TETRIS {e_tetris:.3f}" in out
    ratio = float(re.search(r"ratio TETRIS/fixed ([0-9.]+)", out).group(1))
    assert ratio == pytest.approx(e_tetris / e_fixed, abs=1e-4) and ratio >= 1.0 - 1e-4  # TETRIS is per-step optimal


def test_demo_is_default_and_deterministic(capsys):
    _, a, _ = _run(capsys)
    _, b, _ = _run(capsys, "--demo", "--seed", "0")
    _, c, _ = _run(capsys, "--demo", "--seed", "1")
    assert a == b and a != c


def test_accept_file_prints_lengths(tmp_path, capsys):
    path = tmp_path / "accept.json"
    rows = [[0.9, 0.8, None], [0.5, 0.4, 0.3], [1, 1, 1]]
    path.write_text(json.dumps(rows))
    code, out, _ = _run(capsys, "--accept", str(path), "--capacity", "4")
    assert code == 0
    accept = np.array([[np.nan if x is None else x for x in r] for r in rows], dtype=float)
    assert json.loads(out) == tetris_allocate(accept, 4).tolist() == [1, 0, 3]


@pytest.mark.parametrize(
    "content, args, needle",
    [
        ("[[0.5, 1.5]]", ["--capacity", "1"], "--accept"),
        ("[[0.5], [0.5, 0.5]]", ["--capacity", "1"], "row 1"),
        ("not json", ["--capacity", "1"], "not valid JSON"),
        ("[]", ["--capacity", "1"], "--accept"),
        ('[["x"]]', ["--capacity", "1"], "--accept"),
        ("[[0.5]]", ["--capacity", "-2"], "--capacity"),
        ("[[0.5]]", [], "--capacity"),
        ("[[0.5]]", ["--capacity", "1", "--demo"], "--demo"),
    ],
)
def test_accept_file_bad_input(tmp_path, capsys, content, args, needle):
    path = tmp_path / "accept.json"
    path.write_text(content)
    code, out, err = _run(capsys, "--accept", str(path), *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


@pytest.mark.parametrize("args, needle", [(["--n", "0"], "--n"), (["--k", "-1"], "--k"), (["--k", "0", "--extra", "0"], "--extra")])
def test_demo_bad_input(capsys, args, needle):
    code, out, err = _run(capsys, "--demo", *args)
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_missing_file(tmp_path, capsys):
    code, _, err = _run(capsys, "--accept", str(tmp_path / "nope.json"), "--capacity", "1")
    assert code == 2 and "cannot read" in err
