"""Import a script of benchmarks/ as a module (they are scripts, not a package), for tests/test_bench_*.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    """benchmarks/<name>.py, freshly executed (a test may monkeypatch its functions)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
