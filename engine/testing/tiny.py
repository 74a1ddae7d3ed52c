"""A tiny random-init Llama draft/target pair (for tests and smoke runs; no download).

The draft copies the target's embeddings, first layer and head, so the two agree
often enough for speculation to accept some drafts. Optionally saved as HF folders
with a small byte-level BPE tokenizer trained on a few stdlib files.
"""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_pair(vocab: int = 96, hidden: int = 64, layers: int = 3, seed: int = 0, init: float = 0.15):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      initializer_range=init, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                      pad_token_id=None)
    target = LlamaForCausalLM(cfg).eval()
    dcfg = LlamaConfig(**{**cfg.to_dict(), "num_hidden_layers": 1})
    draft = LlamaForCausalLM(dcfg).eval()
    sd = {k: v for k, v in target.state_dict().items() if not k.startswith("model.layers.") or k.startswith("model.layers.0.")}
    draft.load_state_dict(sd)
    return target, draft


def train_tiny_tokenizer(vocab: int = 96):
    """A byte-level BPE tokenizer of `vocab` tokens, trained on a few stdlib files."""
    import sysconfig

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = [(stdlib / name).read_text() for name in ("bisect.py", "heapq.py")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def save_tiny_pair(folder, seed: int = 0) -> Path:
    """Write target/ and draft/ HF folders (with the tokenizer) under `folder`."""
    folder = Path(folder)
    tokenizer = train_tiny_tokenizer(300)
    target, draft = tiny_pair(vocab=len(tokenizer), seed=seed)
    for name, model in (("target", target), ("draft", draft)):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    return folder
