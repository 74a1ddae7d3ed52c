"""`tetris select`: one step's draft-token selection, on a demo batch or a given matrix.

    tetris select --demo [--n 8] [--k 3] [--extra 2] [--seed 0]
    tetris select --accept accept.json --capacity 12     # prints the window lengths as JSON
"""
from __future__ import annotations



def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "select",
        help="one step of TETRIS selection: a demo board, or lengths for a given acceptance matrix",
        description="Fixed-k vs TETRIS windows for one batch step. Without --accept it runs the demo.",
    )
    p.add_argument("--demo", action="store_true", help="random heterogeneous batch, printed as a board (default)")
    p.add_argument("--n", type=int, default=8, help="demo: requests in the batch (default 8)")
    p.add_argument("--k", type=int, default=3, help="demo: fixed window k; capacity C = k*N (default 3)")
    p.add_argument("--extra", type=int, default=2, help="demo: extra drafts per request, K = k + extra (default 2)")
    p.add_argument("--seed", type=int, default=0, help="demo: random seed (default 0)")
    p.add_argument("--accept", metavar="FILE.json", help="JSON list of rows of conditional acceptance (null = no draft)")
    p.add_argument("--capacity", type=int, help="with --accept: verified-draft budget C (tokens)")
    p.set_defaults(func=run_select)


def run_select(args) -> int:
    from contract.config import ConfigError

    if args.accept is not None:
        if args.demo:
            raise ConfigError("--demo and --accept are exclusive: pick one")
        return _select_file(args.accept, args.capacity)
    if args.capacity is not None:
        raise ConfigError("--capacity needs --accept (the demo uses C = k*N)")
    for key, value, low, high in (("--n", args.n, 1, 10_000), ("--k", args.k, 0, 64), ("--extra", args.extra, 0, 64)):
        if not low <= value <= high:
            raise ConfigError(f"{key} must be in [{low}, {high}], got {value}")
    if args.k + args.extra < 1:
        raise ConfigError("--k plus --extra must be >= 1 (no drafts to select)")
    print(demo_board(args.n, args.k, args.extra, args.seed))
    return 0


def load_accept(path: str):
    """Read a JSON list of equal-length rows of probabilities (null = NaN) as float64 [N, K]."""
    import json
    import math

    import numpy as np

    from contract.config import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise ConfigError(f"--accept: cannot read {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--accept: {path} is not valid JSON: {err}") from None
    if not isinstance(data, list) or not data or not all(isinstance(row, list) for row in data):
        raise ConfigError("--accept: expected a non-empty JSON list of rows (lists of probabilities)")
    width = len(data[0])
    for i, row in enumerate(data):
        if len(row) != width:
            raise ConfigError(f"--accept: row {i} has {len(row)} entries, row 0 has {width}")
        for j, x in enumerate(row):
            if x is None or (isinstance(x, float) and math.isnan(x)):  # no draft here
                continue
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                raise ConfigError(f"--accept: entry [{i}][{j}] = {x!r} is not a probability in [0, 1] or null")
    return np.array([[math.nan if x is None else float(x) for x in row] for row in data], dtype=np.float64)


def _select_file(path: str, capacity) -> int:
    import json

    from theory.allocate import tetris_allocate
    from contract.config import ConfigError

    if capacity is None:
        raise ConfigError("--capacity is required with --accept")
    if capacity < 0:
        raise ConfigError(f"--capacity must be >= 0, got {capacity}")
    accept = load_accept(path)
    print(json.dumps([int(x) for x in tetris_allocate(accept, capacity)]))
    return 0


def demo_batch(n: int, k: int, extra: int, seed: int):
    """A heterogeneous batch: float64 [n, k + extra] conditional acceptance.

    Each request draws a base rate from a mix of easy (Beta(8, 2)) and hard
    (Beta(2, 5)) text; positions vary around it by +-0.05.
    """
    import numpy as np

    rng = np.random.default_rng(np.random.SeedSequence(seed))
    easy = rng.random(n) < 0.5
    base = np.where(easy, rng.beta(8, 2, n), rng.beta(2, 5, n))
    noise = rng.uniform(-0.05, 0.05, (n, k + extra))
    return np.clip(base[:, None] + noise, 0.0, 1.0)


def demo_board(n: int, k: int, extra: int, seed: int) -> str:
    """The demo as text: one row per request, fixed-k and TETRIS windows side by side."""
    from theory.allocate import cumulative_scores, expected_tokens, fixed_allocate, tetris_allocate

    accept = demo_batch(n, k, extra, seed)
    big_k, capacity = k + extra, k * n
    scores = cumulative_scores(accept)
    fixed = fixed_allocate(accept, k)
    tetris = tetris_allocate(accept, capacity)

    def cells(length: int) -> str:
        return "#" * length + "." * (big_k - length)

    def row_tokens(i: int, length: int) -> float:
        return 1.0 + float(scores[i, :length].sum())

    w = max(big_k, 10)
    lines = [
        f"TETRIS demo: N={n} requests, K={big_k} drafts each (k={k} + {extra} extra), capacity C=k*N={capacity} "
        f"verified drafts, seed {seed}",
        "'#' verified draft, '.' drafted but not verified; E = expected emitted tokens (1 + sum of verified P_ij)",
        "",
        f"{'req':>4} {'a_i':>5}  {'fixed':<{w}} {'E':>6}  {'TETRIS':<{w}} {'E':>6}  cumulative scores P_i1..P_iK",
    ]
    for i in range(n):
        lines.append(
            f"{i:>4} {accept[i].mean():5.2f}  {cells(fixed[i]):<{w}} {row_tokens(i, fixed[i]):6.2f}  "
            f"{cells(tetris[i]):<{w}} {row_tokens(i, tetris[i]):6.2f}  " + " ".join(f"{p:.2f}" for p in scores[i])
        )
    e_fixed, e_tetris = expected_tokens(accept, fixed), expected_tokens(accept, tetris)
    lines += [
        f"{'sum':>4} {'':5}  {str(int(fixed.sum())) + ' drafts':<{w}} {e_fixed:6.2f}  "
        f"{str(int(tetris.sum())) + ' drafts':<{w}} {e_tetris:6.2f}",
        "",
        f"expected tokens this step: fixed k={k} {e_fixed:.3f}, TETRIS {e_tetris:.3f}, "
        f"ratio TETRIS/fixed {e_tetris / e_fixed:.4f}" + (" (no speculation possible)" if capacity == 0 else ""),
    ]
    return "\n".join(lines)
