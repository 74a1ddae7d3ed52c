"""contract/profile_table.py: one table format, one interpolation, no numeric change.

The interpolation was copied in sim/cost.py (Table) and engine/profile.py (step_time_from_rows)
before it moved here; both callers must give bit-identical results to those copies (frozen
below). Power: np.array_equal detects a difference of one ulp in any of the 200 x 30 lookups;
the negative control swaps in a blend that sums the corners in another order and must fail.
"""
import numpy as np
import pytest

from contract.config import ConfigError
from contract.profile_table import ProfileTable, axis_weights, read_rows, write
from engine.profile import step_time_from_rows


def _old_target(t, batch, tpr, context):  # sim/cost.py Table.target before issue 12
    ib, wb = axis_weights(t.b, batch)
    it, wt = axis_weights(t.t, tpr)
    ic, wc = axis_weights(t.c, context)
    g = t.grid
    nb, nt, nc = (min(1, s - 1) for s in g.shape)
    out = 0.0
    for db, fb in ((0, 1 - wb), (nb, wb)):
        for dt, ft in ((0, 1 - wt), (nt, wt)):
            for dc, fc in ((0, 1 - wc), (nc, wc)):
                out = out + fb * ft * fc * g[ib + db, it + dt, ic + dc]
    return np.maximum(out, 1e-6)


def _old_draft(t, batch, context):  # sim/cost.py Table.draft_s before issue 12
    ib, wb = axis_weights(t.b, batch)
    ic, wc = axis_weights(t.c, context)
    d = t.draft
    nb, nc = (min(1, s - 1) for s in d.shape)
    out = (1 - wb) * (1 - wc) * d[ib, ic] + wb * (1 - wc) * d[ib + nb, ic] + (1 - wb) * wc * d[ib, ic + nc] + wb * wc * d[ib + nb, ic + nc]
    return float(max(out, 0.0))


def _old_step_time(rows, batch, drafts, verified):  # engine/profile.py step_time_from_rows before issue 12
    from engine.profile import _mean_grid

    b_axis, t_axis, grid, dr = _mean_grid(rows)
    v = np.asarray(verified, dtype=float)
    ib, wb = axis_weights(b_axis, np.float64(batch))
    it, wt = axis_weights(t_axis, 1.0 + v / max(batch, 1))
    nb, nt = min(1, b_axis.size - 1), min(1, t_axis.size - 1)
    tgt = ((1 - wb) * ((1 - wt) * grid[ib, it] + wt * grid[ib, it + nt])
           + wb * ((1 - wt) * grid[ib + nb, it] + wt * grid[ib + nb, it + nt]))
    d = (1 - wb) * dr[ib] + wb * dr[ib + nb]
    out = np.maximum(tgt + drafts * d, 1e-6)
    return out if out.ndim else float(out)


def _tables(tmp_path, n=30):
    g = np.random.default_rng(0)
    for trial in range(n):
        axes = [sorted(set(g.integers(lo, hi, size=g.integers(1, m)).tolist())) for lo, hi, m in ((1, 64, 5), (1, 9, 4), (8, 500, 4))]
        rows = [dict(batch=b, tokens_per_request=t, context=c, target_s=float(g.uniform(1e-3, 0.1)),
                     draft_s=float(g.uniform(1e-4, 1e-2)) if g.random() > 0.2 else float("nan"))
                for b in axes[0] for t in axes[1] for c in axes[2]]
        yield read_rows(str(write(rows, tmp_path / f"t{trial}.csv", fmt=".9g"))), g


def _check_identical(tmp_path):
    for rows, g in _tables(tmp_path):
        t = ProfileTable(rows)
        for _ in range(200):
            b, c, tpr = float(g.uniform(0, 80)), float(g.uniform(0, 600)), g.uniform(0.5, 10, size=5)
            assert np.array_equal(t.target(b, tpr, c), _old_target(t, b, tpr, c))
            assert t.draft_s(b, c) == _old_draft(t, b, c)
            bi, ver = int(g.integers(1, 80)), g.integers(0, 8 * 80, size=6)
            assert np.array_equal(step_time_from_rows(rows)(bi, 3, ver), _old_step_time(rows, bi, 3, ver))
            assert step_time_from_rows(rows)(bi, 2, int(ver[0])) == _old_step_time(rows, bi, 2, int(ver[0]))


def test_interpolation_bit_identical_to_the_old_copies(tmp_path):
    _check_identical(tmp_path)


def test_negative_control_other_corner_order_is_caught(tmp_path, monkeypatch):
    import contract.profile_table as pt

    real = pt.blend

    def reversed_blend(grid, *iw):  # the same blend summed from the last corner: differs by an ulp somewhere
        return real(np.flip(grid, axis=tuple(range(len(iw)))), *[(grid.shape[k] - 1 - i - min(1, grid.shape[k] - 1), 1 - w) for k, (i, w) in enumerate(iw)])

    monkeypatch.setattr(pt, "blend", reversed_blend)
    with pytest.raises(AssertionError):
        _check_identical(tmp_path)


def test_read_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("batch,tokens_per_request,context\n1,1,1\n")
    with pytest.raises(ConfigError, match="cost.table: .* lacks column"):
        read_rows(str(bad))
    bad.write_text("batch,tokens_per_request,context,target_s,draft_s\n1,1,x,0.1,\n")
    with pytest.raises(ConfigError, match="--profile: .* non-numeric"):
        read_rows(str(bad), "--profile")
    bad.write_text("batch,tokens_per_request,context,target_s,draft_s\n1,1,1,0.1,\n2,1,2,0.1,\n")
    with pytest.raises(ConfigError, match="full batch x tokens_per_request x context grid"):
        ProfileTable.read(str(bad))


def test_write_is_atomic_and_round_trips(tmp_path, monkeypatch):
    rows = [dict(batch=1, tokens_per_request=t, context=8, target_s=0.01 * t, draft_s=float("nan")) for t in (1, 2)]
    p = write(rows, tmp_path / "p.csv")
    assert p.read_text().splitlines() == ["batch,tokens_per_request,context,target_s,draft_s",
                                          "1,1,8,0.01,nan", "1,2,8,0.02,nan"]
    t = ProfileTable.read(str(p))
    assert not t.has_draft and t.target(1, 1.5, 8) == pytest.approx(0.015)
    bad = [dict(rows[0], target_s="x")]  # fails mid-write: nothing left behind, the old file kept
    with pytest.raises(ValueError):
        write(bad, p)
    assert [f.name for f in tmp_path.iterdir()] == ["p.csv"] and "0.02" in p.read_text()


def _check_memo():
    """One step_time answers many interleaved questions, each asked twice: every answer (memoised
    or not) is bit-identical to the frozen copy, and array answers cannot be written."""
    g = np.random.default_rng(1)
    rows = [dict(batch=b, tokens_per_request=t, context=100, target_s=float(g.uniform(1e-3, 0.1)),
                 draft_s=float(g.uniform(1e-4, 1e-2))) for b in (1, 8, 32) for t in (1, 2, 4, 8)]
    st = step_time_from_rows(rows)
    asked = [(int(g.integers(1, 9)), int(g.integers(0, 3)), g.integers(0, 8 * 9, size=6)) for _ in range(100)]
    for bi, k, ver in asked + asked[::-1]:
        out = st(bi, k, ver)
        assert np.array_equal(out, _old_step_time(rows, bi, k, ver))
        assert not out.flags.writeable
        assert st(bi, k, int(ver[0])) == _old_step_time(rows, bi, k, int(ver[0]))


def test_memoised_step_time_answers_as_fresh():
    # power: a memo that confused two questions returns another (batch, K, verified)'s seconds; the
    # 100 random questions share (batch, K) often (24 pairs) but not their verified counts, so one
    # confusion fails array_equal (negative control below: a key without the verified counts)
    _check_memo()


def test_negative_control_memo_keyed_without_verified_is_caught(monkeypatch):
    import engine.profile as prof

    monkeypatch.setattr(prof, "_memo_key", lambda batch, drafts, v: (batch, drafts, v.shape))
    with pytest.raises(AssertionError):
        _check_memo()
