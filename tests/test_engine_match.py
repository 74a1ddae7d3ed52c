"""engine.match: the greedy match rate reported for bfloat16 runs (1.0 exactly when identical)."""
from engine.match import greedy_match, prefix_len


def test_identical_outputs_match_fully():
    ref = {0: [1, 2, 3, 4], 1: [5, 6]}
    assert greedy_match({0: [1, 2, 3, 4], 1: [5, 6]}, ref) == {"prefix_match": 1.0, "token_match": 1.0, "identical": 1.0}


def test_divergence_counts_the_prefix_only():
    """Negative control: one flipped token at index 2 of 4 -> prefix 2/4; positions after the flip
    that happen to agree count for token_match only (so the two measures differ, as defined)."""
    ref = {0: [1, 2, 3, 4], 1: [5, 6]}
    m = greedy_match({0: [1, 2, 9, 4], 1: [5, 6]}, ref)
    assert m["prefix_match"] == (0.5 + 1.0) / 2
    assert m["token_match"] == (0.75 + 1.0) / 2
    assert m["identical"] == 0.5
    assert prefix_len([1, 2], [1, 2, 3]) == 2 and prefix_len([], [1]) == 0
    assert greedy_match({}, {0: [1]})["prefix_match"] == 0.0  # a missing request matches nothing
