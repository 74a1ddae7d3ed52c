"""The project's pairs as vLLM model folders (target dir, draft dir, tokenizer dir).

  * a folder with target/ and draft/ HF models (the committed engine/pair): used as is
    (plain LlamaForCausalLM folders with tokenizer.json; vLLM loads them directly);
  * the SmolLM2 token-level draft (engine.pair = "smollm-token"): the prepared target folder
    (~/.cache/tetris/smollm2-135m) as is, and the draft exported ONCE as a standalone HF folder
    under ~/.cache/tetris/vllm/ (built from the committed layers + the target's embeddings; never
    downloaded). Its RestrictedHead becomes a full lm_head whose rows outside keep_ids are zero:
    those tokens get logit 0 instead of -1e4 (the native draft's), a slightly different draft that
    changes acceptance only, never the output distribution (the target verifies every token);
  * the EAGLE-style SmolLM2 draft (engine.pair = "smollm"): no vLLM export (vLLM's EAGLE format is
    not built here): ConfigError.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from contract.errors import ConfigError

CACHE = Path(os.environ.get("TETRIS_VLLM_CACHE", Path.home() / ".cache" / "tetris" / "vllm"))


def vllm_pair(pair: str) -> tuple[Path, Path, Path]:
    """(target_dir, draft_dir, tokenizer_dir) for engine.pair (ConfigError naming the key)."""
    from engine.pairs import SPLIT_DRAFT_META, resolve_pair

    path = resolve_pair(pair)
    if not (path / SPLIT_DRAFT_META).is_file():
        tok = path / "target" if (path / "target" / "tokenizer.json").is_file() else path
        return path / "target", path / "draft", tok
    meta = json.loads((path / SPLIT_DRAFT_META).read_text())
    if meta.get("kind") == "eagle":
        raise ConfigError(f"engine.pair: {pair!r} is the EAGLE-style SmolLM2 draft, which has no vLLM export "
                          "(not built); use engine.pair = \"smollm-token\" with engine.backend = vllm")
    from engine.smollm.prepare import DEFAULT_DIR, MissingDependency, target_dir

    try:
        tdir = Path(target_dir(DEFAULT_DIR))
    except MissingDependency as e:
        raise ConfigError(f"engine.pair: {path.name}: {e}") from None
    return tdir, export_token_draft(path, tdir), tdir


def export_token_draft(pair_dir: Path, tdir: Path) -> Path:
    """The token-level SmolLM2 draft as a standalone LlamaForCausalLM folder (cached by content)."""
    import hashlib

    digest = hashlib.sha256((pair_dir / "draft.safetensors").read_bytes()).hexdigest()[:12]
    out = CACHE / f"{pair_dir.name}-draft-{digest}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import shutil

    import torch

    from engine.smollm import draft as sd

    target = sd.load_target(tdir, dtype=torch.float32)
    draft = sd.load_draft(pair_dir=pair_dir, target=target, dtype=torch.float32)
    head = draft.lm_head
    full = torch.zeros(head.vocab_size, head.weight.shape[1])
    full[head.keep_ids] = head.weight.detach().float()
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_config(draft.config, dtype=torch.float32)
    state = {k: v for k, v in draft.state_dict().items() if not k.startswith("lm_head.")}
    state["lm_head.weight"] = full
    plain.load_state_dict(state, strict=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(str(tmp))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (tdir / name).is_file():
            shutil.copyfile(tdir / name, tmp / name)
    (tmp / "tetris_export.json").write_text(json.dumps({"from": str(pair_dir), "sha256_12": digest,
                                                        "head": "full lm_head, rows outside keep_ids = 0"}) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out
