"""Test fixtures shipped with the engine (no download): models small or exact enough to check it.

- tiny.py: a tiny random-init Llama draft/target pair (+ a small BPE tokenizer), for tests and
  smoke runs.
- tabular.py: tabular second-order "language models" with exact output distributions, for the
  exact-distribution tests and `tetris check lossless` (engine/lossless.py).

Nothing here serves a workload; the engine proper never imports it (only the lossless checker).
"""
