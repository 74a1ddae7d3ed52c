"""The engine's clocks, in one place: wall seconds, or this process's CPU seconds.

    clock = make_clock("cpu")   # or "wall"
    t = clock()                 # seconds
    sleep = getattr(clock, "sleep", time.sleep)   # a CpuClock sleeps virtually

Used by engine/run.py (serving), engine/profile.py (the profile table), analysis/engine_io.py
(validation runs and speed probes) and benchmarks/.
"""
from __future__ import annotations

import time

from contract.errors import ConfigError

CLOCKS = ("wall", "cpu")


class CpuClock:
    """Seconds of CPU time used by this process, plus virtual sleeps (idle waits for arrivals).

    On a shared machine wall time swings with other people's load; the CPU time of a
    one-thread engine is what the run costs on one free core. Idle waits for the next
    arrival advance the clock without sleeping.
    """

    def __init__(self):
        self.offset = 0.0  # seconds slept virtually

    def __call__(self) -> float:
        return time.process_time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, float(seconds))


def make_clock(kind: str):
    """A seconds callable: CpuClock() for "cpu", time.perf_counter for "wall" (ConfigError otherwise)."""
    if kind == "cpu":
        return CpuClock()
    if kind == "wall":
        return time.perf_counter
    raise ConfigError(f"--clock {kind!r}: expected cpu or wall")
