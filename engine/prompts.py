"""Prompt token ids for a workload: a prompts file, or held-out standard-library snippets.

workload.prompts: JSONL, one {"prompt": text} or {"prompt_ids": [int, ...]} per line;
request i uses line i mod #lines, the whole prompt (workload.prompt_len is not used).
Default: a token stream of held-out stdlib .py files (the pair's held-out list when it
ships one, else a fixed list); request i takes prompt_len tokens (from the workload's
length distribution) at a deterministic offset.
"""
from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from contract.config import ConfigError

# used when the pair folder ships no held-out list (files the pair helper keeps out of training
# are read from <pair>/heldout.txt, one stdlib-relative path per line)
FALLBACK_HELDOUT = ("textwrap.py", "fractions.py", "heapq.py", "bisect.py", "colorsys.py", "shlex.py",
                    "statistics.py", "difflib.py")
HELDOUT_LISTS = ("heldout.txt", "heldout_files.txt")


def read_prompts_file(path: str, tokenizer) -> list[list[int]]:
    from contract.outpaths import read_text

    p = Path(path)
    out = []
    for lineno, line in enumerate(read_text(p, "workload.prompts: file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"workload.prompts: {path}:{lineno}: invalid JSON ({err.msg})") from None
        if isinstance(obj, dict) and isinstance(obj.get("prompt_ids"), list) and obj["prompt_ids"] \
                and all(isinstance(t, int) and not isinstance(t, bool) for t in obj["prompt_ids"]):
            ids = obj["prompt_ids"]
        elif isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and obj["prompt"]:
            if tokenizer is None:
                raise ConfigError(f"workload.prompts: {path}:{lineno}: text prompts need a tokenizer in the pair")
            ids = tokenizer(obj["prompt"], add_special_tokens=False)["input_ids"]
        else:
            raise ConfigError(f"workload.prompts: {path}:{lineno}: expected {{\"prompt\": text}} or {{\"prompt_ids\": [ints]}}")
        if not ids:
            raise ConfigError(f"workload.prompts: {path}:{lineno}: empty prompt")
        out.append(list(ids))
    if not out:
        raise ConfigError(f"workload.prompts: {path!r} holds no prompts")
    return out


def heldout_files(pair_dir: Path | None) -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = list(FALLBACK_HELDOUT)
    for name in HELDOUT_LISTS:
        if pair_dir is not None and (pair_dir / name).is_file():
            names = [s.strip() for s in (pair_dir / name).read_text().splitlines() if s.strip() and not s.startswith("#")]
            break
    files = [stdlib / n if not Path(n).is_absolute() else Path(n) for n in names]
    return [f for f in files if f.is_file()]


def heldout_stream(tokenizer, pair_dir: Path | None, min_tokens: int, budget: int = 200_000) -> list[int]:
    """Token ids of the held-out files, concatenated, up to about `budget` tokens (>= min_tokens + 1)."""
    ids: list[int] = []
    for f in heldout_files(pair_dir):
        ids += tokenizer(f.read_text(errors="replace"), add_special_tokens=False)["input_ids"]
        if len(ids) >= max(budget, 4 * min_tokens):
            break
    if len(ids) < min_tokens + 1:
        raise ConfigError(f"workload.prompt_len: held-out snippets give {len(ids)} tokens, fewer than {min_tokens + 1}")
    return ids


def snippet(stream: list[int], request_id: int, length: int) -> list[int]:
    """`length` tokens of the stream at a deterministic, well-spread offset."""
    span = len(stream) - length
    off = (request_id * 7919 * 104729) % max(span, 1)
    return stream[off: off + length]
