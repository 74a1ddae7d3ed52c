"""analysis/ entry to the simulator for a whole Config (used by plan_run; calibrate.py and report.py
call sim.simulate.simulate_policy directly, for its on_step hook and per-step rows).

    summary = simulate(config)                 # metrics dict for config.policy, vLLM names
    result = simulate_result(config, on_step=hook)   # sim.simulate.PolicyResult
"""
from __future__ import annotations

from contract.config import Config, ConfigError


def _entry():
    try:
        from sim.simulate import check, simulate_policy
    except ImportError as err:  # pragma: no cover - depends on the sim part
        raise ConfigError(f"the simulator is not available: no sim.simulate.simulate_policy ({err})") from None
    return check, simulate_policy


def simulate(config: Config) -> dict:
    """Metrics of one simulated run of config.policy, as a flat dict."""
    return simulate_result(config).summary


def simulate_result(config: Config, **kw):
    """sim.simulate.PolicyResult (summary, per-request columns, stats) for config.policy."""
    check, simulate_policy = _entry()
    check(config)
    return simulate_policy(config, config.policy, **kw)
