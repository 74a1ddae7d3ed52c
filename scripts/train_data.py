"""Corpus, held-out split and tokenizer for the committed model pair.

The corpus is the .py sources of the Python standard library on this machine
(sysconfig stdlib path), without site-packages and without test directories.
A file is held out when sha256(relative path) mod 20 == 0 (about 5%), so the
split does not depend on file order or content. PSF licence.
"""
import hashlib
import os
import sys
import sysconfig

import numpy as np

SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
HELDOUT_MOD = 20  # one file in 20 is held out
SPECIAL = ["<|bos|>", "<|eos|>", "<|pad|>"]


def stdlib_root():
    return sysconfig.get_paths()["stdlib"]


def python_version():
    return "%d.%d.%d" % sys.version_info[:3]


def is_heldout(relpath):
    h = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") % HELDOUT_MOD == 0


def list_files(root=None):
    """Sorted relative paths of the stdlib .py files (tests and site-packages skipped)."""
    root = root or stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def read_text(relpath, root=None):
    path = os.path.join(root or stdlib_root(), relpath)
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def split_files(root=None):
    """(train, heldout) lists of relative paths."""
    files = list_files(root)
    train = [p for p in files if not is_heldout(p)]
    held = [p for p in files if is_heldout(p)]
    return train, held


def train_tokenizer(files, vocab_size, out_dir, root=None):
    """Byte-level BPE on the given files, saved as a PreTrainedTokenizerFast folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((read_text(p, root) for p in files), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL[0],
        eos_token=SPECIAL[1],
        pad_token=SPECIAL[2],
        clean_up_tokenization_spaces=False,
    )
    fast.model_max_length = 1 << 20
    fast.save_pretrained(out_dir)
    return fast


def encode_files(tokenizer, files, root=None):
    """One int32 stream: <bos> file tokens <eos> per file, in the given order."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    parts = []
    for p in files:
        ids = tokenizer(read_text(p, root), add_special_tokens=False)["input_ids"]
        parts.append(np.asarray([bos] + ids + [eos], dtype=np.int32))
    return np.concatenate(parts)
