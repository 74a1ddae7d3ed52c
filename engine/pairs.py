"""Loading a draft/target pair: a folder of target/ + draft/ HF models, or a split draft."""
from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PAIR = REPO / "engine" / "pair"


# SmolLM2 target + distilled draft (docs/models-smollm.md): EAGLE-style (default) or token-level
PAIR_ALIASES = {"smollm": REPO / "engine" / "smollm_pair", "smollm-token": REPO / "engine" / "smollm_pair_token"}
SPLIT_DRAFT_META = "draft_config.json"  # a draft folder whose target is a prepared model elsewhere


def resolve_pair(pair: str) -> Path:
    """The pair's folder: target/ + draft/ HF folders, or a split draft (draft_config.json) whose
    target is prepared separately (the SmolLM2 pair: `engine.pair = "smollm"`)."""
    from contract.config import ConfigError

    path = PAIR_ALIASES.get(pair, Path(pair) if pair else DEFAULT_PAIR)
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    if (path / SPLIT_DRAFT_META).is_file():
        return path
    for name in ("target", "draft"):
        if not (path / name / "config.json").is_file():
            raise ConfigError(f"engine.pair: {str(path)!r} has no {name}/config.json (an HF model folder) "
                              f"and no {SPLIT_DRAFT_META} (a split draft)")
    return path


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bfloat16 natively (flags amx_bf16 or avx512_bf16)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    """engine.dtype as a torch dtype. "auto": bfloat16 on CUDA or on a CPU with AMX/AVX512-BF16, else
    float32; None: the device's default before the key existed (float32 on CPU, bfloat16 on CUDA)."""
    if dtype is None:
        return torch.bfloat16 if device == "cuda" else torch.float32
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" or cpu_has_bf16() else torch.float32
    return getattr(torch, dtype)


def device_dtype(device: str, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    from contract.config import ConfigError

    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("engine.device: 'cuda' requested but torch sees no CUDA device")
        return torch.device("cuda"), resolve_dtype(dtype, device)
    return torch.device("cpu"), resolve_dtype(dtype, device)


def load_model(path, device: str = "cpu", dtype: str | None = None):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dev, dtype = device_dtype(device, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(dev).eval()


def load_pair(pair: str = "", device: str = "cpu", draft_dtype: str = "auto", dtype: str | None = None):
    """(target, draft, tokenizer) from a folder holding target/ and draft/ (shared tokenizer),
    or from a split draft folder (its target is the prepared SmolLM2; see engine/smollm).
    dtype: engine.dtype for the target (see resolve_dtype; None = the device's default);
    draft_dtype "auto" follows the target's."""
    from transformers import AutoTokenizer

    path = resolve_pair(pair)
    if (path / SPLIT_DRAFT_META).is_file():
        return load_split_pair(path, device, draft_dtype, dtype)
    target = load_model(path / "target", device, dtype)
    draft = load_model(path / "draft", device, dtype)
    if draft_dtype != "auto":
        draft = draft.to(getattr(torch, draft_dtype))
    tok_dir = path / "target" if (path / "target" / "tokenizer.json").exists() else path
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    return prepack(target), prepack(draft), tokenizer


def load_split_pair(path: Path, device: str = "cpu", draft_dtype: str = "auto", dtype: str | None = None):
    """The SmolLM2 pair: the prepared target (`tetris smollm prepare`) + the committed draft."""
    from contract.config import ConfigError
    from engine.smollm import draft as sd
    from engine.smollm.prepare import DEFAULT_DIR, MissingDependency, target_dir

    try:
        tdir = target_dir(DEFAULT_DIR)
    except MissingDependency as e:
        raise ConfigError(f"engine.pair: {path.name}: {e}") from None
    dev, dtype = device_dtype(device, dtype)
    target = sd.load_target(tdir, dtype=dtype).to(dev)
    ddtype = dtype if draft_dtype == "auto" else getattr(torch, draft_dtype)
    draft = sd.load_draft(pair_dir=path, target=target, dtype=ddtype).to(dev)
    return prepack(target), prepack(draft), sd.load_tokenizer(tdir)


def prepack(model):
    """bf16 on CPU: oneDNN-prepacked linears (engine/kernels.py; measured 1.1-1.5x per SmolLM2
    layer by benchmarks/kernels.py). Last step of loading: a later cast would leave them stale."""
    from engine.kernels import prepack_linears

    return prepack_linears(model)
