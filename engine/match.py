"""Greedy match rate of a policy's outputs against plain decoding's (the bfloat16 exactness report).

In float32 the engine's greedy outputs equal plain decoding's token for token (tests/test_engine_greedy.py).
In bfloat16 they cannot: a verification pass scores 1 + L tokens per row in one batch shape, plain
decoding one token, and bf16 matmuls round differently per shape, so near-ties in the argmax flip
now and then and the continuation diverges from there (vLLM documents the same for its batch-
invariance caveat). This module measures how close they stay, per request:

  prefix match  = (tokens equal up to the first divergence) / (reference length)
  token match   = (positions with equal tokens) / (reference length)

and their means over requests. Both are 1.0 exactly when every output equals its reference.
"""
from __future__ import annotations


def prefix_len(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def greedy_match(outputs: dict, reference: dict) -> dict:
    """{prefix_match, token_match, identical} over the requests of `reference` ({id: token list});
    outputs: {id: token list} (a missing request counts as no match)."""
    if not reference:
        return {"prefix_match": 1.0, "token_match": 1.0, "identical": 1.0}
    pre = tok = same = 0.0
    for rid, ref in reference.items():
        out = outputs.get(rid, [])
        n = max(len(ref), 1)
        pre += prefix_len(out, ref) / n
        tok += sum(x == y for x, y in zip(out, ref)) / n
        same += float(list(out) == list(ref))
    m = len(reference)
    return {"prefix_match": pre / m, "token_match": tok / m, "identical": same / m}
