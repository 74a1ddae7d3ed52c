"""What one target verification pass scores for ragged windows, per layout (the one rule).

    verified_tokens([0, 3, 1, 2], "packed") == 6     # sum(L_i)
    verified_tokens([0, 3, 1, 2], "padded") == 12    # N * max(L_i): every row padded to the longest

The pass scores verified_tokens + N tokens (one bonus / correction position per request).
sim/cost.py prices steps with it (CostModel.verified_tokens); a layout-aware budget sizing or
the engine can call it with the windows of a candidate selection.
"""
from __future__ import annotations

import numpy as np

LAYOUTS = ("packed", "padded")


def verified_tokens(lengths, layout: str) -> int:
    """Draft tokens the target pass scores for windows `lengths` [N] (int): sum(L) when packed,
    N * max(L) when right-padded (0 without drafts)."""
    lengths = np.asarray(lengths)
    if not lengths.size:
        return 0
    return int(lengths.size * lengths.max()) if layout == "padded" else int(lengths.sum())
