"""Loading a draft/target pair and running one batched forward over a BatchKV."""
from __future__ import annotations

from pathlib import Path

import torch

from engine import kv as kvm

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PAIR = REPO / "engine" / "pair"


def resolve_pair(pair: str) -> Path:
    from theory.config import ConfigError

    path = Path(pair) if pair else DEFAULT_PAIR
    if not path.is_absolute() and not path.exists():
        path = REPO / path
    for name in ("target", "draft"):
        if not (path / name / "config.json").is_file():
            raise ConfigError(f"engine.pair: {str(path)!r} has no {name}/config.json (an HF model folder)")
    return path


def device_dtype(device: str) -> tuple[torch.device, torch.dtype]:
    from theory.config import ConfigError

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


def load_pair(pair: str = "", device: str = "cpu"):
    """(target, draft, tokenizer) from a folder holding target/ and draft/ (shared tokenizer)."""
    from transformers import AutoTokenizer

    path = resolve_pair(pair)
    target = load_model(path / "target", device)
    draft = load_model(path / "draft", device)
    tok_dir = path / "target" if (path / "target" / "tokenizer.json").exists() else path
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    return target, draft, tokenizer


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def _grow_layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowLayer(DynamicLayer):
        """A cache layer writing new keys/values in place into a buffer with spare capacity
        (doubling when full), instead of concatenating a new copy every forward."""

        def __init__(self, kbuf, vbuf, used: int):
            super().__init__()
            self.dtype, self.device, self.is_initialized = kbuf.dtype, kbuf.device, True
            self.kbuf, self.vbuf, self.used = kbuf, vbuf, used
            self.keys, self.values = kbuf[:, :, :used], vbuf[:, :, :used]

        def update(self, key_states, value_states, *args, **kwargs):
            need = self.used + key_states.shape[-2]
            if need > self.kbuf.shape[2]:
                cap = max(need, 2 * self.kbuf.shape[2], 64)
                b, h, _, d = key_states.shape
                kb, vb = key_states.new_empty(b, h, cap, d), value_states.new_empty(b, h, cap, value_states.shape[-1])
                kb[:, :, : self.used] = self.kbuf[:, :, : self.used]
                vb[:, :, : self.used] = self.vbuf[:, :, : self.used]
                self.kbuf, self.vbuf = kb, vb
            self.kbuf[:, :, self.used: need] = key_states
            self.vbuf[:, :, self.used: need] = value_states
            self.used = need
            self.keys, self.values = self.kbuf[:, :, :need], self.vbuf[:, :, :need]
            return self.keys, self.values

    return GrowLayer


_GROW = None


def _wrap(state: kvm.BatchKV):
    """A DynamicCache over the state's tensors (no copy); new tokens go into spare capacity."""
    global _GROW
    from transformers import DynamicCache

    if _GROW is None:
        _GROW = _grow_layer_class()
    cache = DynamicCache()
    bufs = state.buffers if state.buffers is not None else state.layers
    for k, v in bufs:
        cache.layers.append(_GROW(k, v, state.width))
    return cache


@torch.no_grad()
def forward(model, state: kvm.BatchKV, tokens: list[list[int]], last_only: bool = False, logits: bool = True):
    """Feed each row its ragged tokens after its kept state.

    Returns (logits, new_state): logits float32 [B, T, V] (or [B, V] at each row's
    last real token with last_only; None with logits=False), new_state with all
    real new tokens kept. For HF models with last_only (or no logits) the head runs
    on the needed positions only.
    """
    dev, dtype = model_device(model), model_dtype(model)
    ids, n = kvm.pad_tokens(tokens, dev)
    t = ids.shape[1]
    dense = bool(state.valid.all()) and bool((n == t).all())
    # dense rows (no holes, no padding): let transformers build the plain causal mask, which keeps
    # sdpa on its fast path (no 4D mask, no repeated KV heads)
    mask = None if dense else kvm.attention_mask(state, n, t, dtype)
    pos = kvm.positions(state, t)
    cache = _wrap(state)
    kw = dict(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    rows = torch.arange(len(tokens), device=dev)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if (last_only or not logits) and head is not None and hasattr(model, "get_decoder"):
        hidden = model.get_decoder()(**kw).last_hidden_state
        out = head(hidden[rows, n - 1]).float() if logits else None
    else:
        out = model(**kw).logits
        out = (out[rows, n - 1] if last_only else out).float() if logits else None
    new = kvm.append(state, [(layer.keys, layer.values) for layer in cache.layers], n, t)
    if cache.layers and hasattr(cache.layers[0], "kbuf"):
        new.buffers = [(layer.kbuf, layer.vbuf) for layer in cache.layers]
    return out, new
