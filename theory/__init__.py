"""theory: selection policies and the math shared by the simulator and the engine.

Pure numpy/scipy: imports neither simpy nor torch.
"""
from theory.acceptance import expected_tokens_iid, expected_window_tokens, accepted_length_variance
from theory.allocate import (
    cumulative_scores,
    expected_tokens,
    fixed_allocate,
    no_speculation,
    optimal_allocate,
    tetris_allocate,
    threshold_allocate,
    valid_lengths,
)

__all__ = [
    "accepted_length_variance",
    "cumulative_scores",
    "expected_tokens",
    "expected_tokens_iid",
    "expected_window_tokens",
    "fixed_allocate",
    "no_speculation",
    "optimal_allocate",
    "tetris_allocate",
    "threshold_allocate",
    "valid_lengths",
]
