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


def device_dtype(device: str) -> tuple[torch.device, torch.dtype]:
    from contract.config import ConfigError

    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("engine.device: 'cuda' requested but torch sees no CUDA device")
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def load_model(path, device: str = "cpu"):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dev, dtype = device_dtype(device)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(dev).eval()


def load_pair(pair: str = "", device: str = "cpu", draft_dtype: str = "auto"):
    """(target, draft, tokenizer) from a folder holding target/ and draft/ (shared tokenizer),
    or from a split draft folder (its target is the prepared SmolLM2; see engine/smollm)."""
    from transformers import AutoTokenizer

    path = resolve_pair(pair)
    if (path / SPLIT_DRAFT_META).is_file():
        return load_split_pair(path, device, draft_dtype)
    target = load_model(path / "target", device)
    draft = load_model(path / "draft", device)
    if draft_dtype != "auto":
        draft = draft.to(getattr(torch, draft_dtype))
    tok_dir = path / "target" if (path / "target" / "tokenizer.json").exists() else path
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    return target, draft, tokenizer


def load_split_pair(path: Path, device: str = "cpu", draft_dtype: str = "auto"):
    """The SmolLM2 pair: the prepared target (`tetris smollm prepare`) + the committed draft."""
    from contract.config import ConfigError
    from engine.smollm import draft as sd
    from engine.smollm.prepare import DEFAULT_DIR, MissingDependency, target_dir

    try:
        tdir = target_dir(DEFAULT_DIR)
    except MissingDependency as e:
        raise ConfigError(f"engine.pair: {path.name}: {e}") from None
    dev, dtype = device_dtype(device)
    target = sd.load_target(tdir, dtype=dtype).to(dev)
    ddtype = dtype if draft_dtype == "auto" else getattr(torch, draft_dtype)
    draft = sd.load_draft(pair_dir=path, target=target, dtype=ddtype).to(dev)
    return target, draft, sd.load_tokenizer(tdir)
