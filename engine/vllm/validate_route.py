"""`tetris validate --set engine.backend='"vllm"'`: the checks before the vLLM validation runs.

The validation itself is analysis/validate_vllm.py (vLLM runs of calibration and held-out requests,
the simulator calibrated from vLLM's step log with server.scheduler = "vllm"). Without vLLM
installed this exits 2 with the one-line install hint (engine/vllm/setup.py), nothing written.
"""
from __future__ import annotations

from contract.config import ConfigError


def check_validate(cfg, policies=(), loads=("offline",), clock: str = "wall", args=None) -> None:
    from analysis.validate_vllm import check
    from engine.vllm.runner import SUPPORTED_POLICIES

    check(cfg, loads, clock)
    for name in policies:
        if name not in SUPPORTED_POLICIES or name == "dsd":
            raise ConfigError(f"--policies: {name!r} is not validated against vLLM (none, fixed, tetris)")
    if cfg.policy.budget == "goodput" and "tetris" in policies:
        raise ConfigError("policy.budget = 'goodput': not available with engine.backend = vllm (fixed or unbounded)")
    if args is not None and getattr(args, "profile", ""):
        raise ConfigError("--profile: not used with engine.backend = vllm (the profile comes from vLLM's step log)")
