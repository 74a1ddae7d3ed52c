"""theory: selection policies and the math shared by the simulator and the engine.

Pure numpy/scipy: imports neither simpy nor torch, nor the shared contract (contract/).
"""
from theory.acceptance import expected_tokens_iid, expected_window_tokens, accepted_length_variance
from theory.budget import best_gain_by_capacity, fixed_capacity, goodput_capacity, goodput_uniform_k
from theory.policy import Policy, make_policy
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
    "Policy",
    "best_gain_by_capacity",
    "fixed_capacity",
    "goodput_capacity",
    "goodput_uniform_k",
    "make_policy",
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
