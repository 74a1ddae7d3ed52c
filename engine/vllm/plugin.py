"""The `vllm.general_plugins` entry point (pyproject.toml: tetris = engine.vllm.plugin:register).

vLLM calls register() in every process it starts (the engine core and, on CPU, the spawned
workers), so patches made here reach the model runner. It patches ONLY what the environment
asks for, so plain vLLM use in the same environment is unaffected:
  TETRIS_VLLM_PROPOSER = '{"name": "tetris", "k": 2, "extra": 2, ...}'  (a policy table)
      -> gpu_model_runner.DraftModelProposer becomes engine.vllm.proposer.TetrisDraftProposer
  TETRIS_VLLM_CPUFIX = "1"  -> the CPU temperature fix (engine/vllm/cpufix.py), CPU only
      ("break": a deliberately wrong expansion, the tests' negative control)
  TETRIS_VLLM_STEPLOG = FILE -> (read by engine.vllm.steplog, given as scheduler_cls)
engine/vllm/runner.py sets them for the runs it makes.
"""
from __future__ import annotations

import os

from engine.vllm.setup import CPUFIX_ENV, TETRIS_ENV


def register() -> None:
    if os.environ.get(CPUFIX_ENV) in ("1", "break"):
        from engine.vllm import cpufix

        cpufix.install(os.environ[CPUFIX_ENV])
    if os.environ.get(TETRIS_ENV):
        from vllm.v1.worker import gpu_model_runner

        from engine.vllm.proposer import TetrisDraftProposer

        gpu_model_runner.DraftModelProposer = TetrisDraftProposer
