"""`tetris validate --set engine.backend='"vllm"'`: where the vLLM side of validation stands.

What is built (this folder): vLLM runs of the same workload (`tetris engine --set
engine.backend='"vllm"'`), each with its per-step log (steps-<label>.jsonl in the run folder) and
the fit of that log to the simulator's profile table (python -m engine.vllm.steps ... --profile).
What is not built here: the simulator's vLLM-like scheduler and the held-out comparison (the other
half of issue 14). Until then validate refuses the key with one line instead of silently
validating the native engine.
"""
from __future__ import annotations

from contract.errors import ConfigError


def check_validate(cfg) -> None:
    from engine.vllm import setup

    setup.check()
    raise ConfigError("engine.backend = vllm: tetris validate against vLLM is not built yet; for now run "
                      "`tetris engine --set engine.backend='\"vllm\"'` and fit its steps-*.jsonl with "
                      "`python -m engine.vllm.steps RUN/steps-*.jsonl --profile P.csv` (docs/vllm.md)")
