"""Loading a draft/target pair and running one batched forward over a BatchKV."""
from __future__ import annotations

import types
from pathlib import Path

import torch

from engine import kv as kvm

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


# Packed layout: while a packed forward runs, every nn.Linear of the model computes only the real
# (non-padding) rows of its [B, T, in] input and leaves zeros in the padding rows. The linear layers
# are nearly all of a small model's multiply-adds, so a ragged batch then costs its real tokens,
# not B * max(T). Attention, norms and rotary still see the padded [B, T] layout (the KV cache's).
_PACK: list = [None]  # (flat indices of the real rows [P] int64, B * T) during a packed forward


def _packed_linear_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward on the real rows only while a packed forward runs (bound per module with
    types.MethodType, so a deepcopy of the model rebinds it to the copy)."""
    pk = _PACK[0]
    if pk is None or x.dim() != 3 or x.shape[0] * x.shape[1] != pk[1]:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    idx, bt = pk
    y = x.new_zeros(bt, self.out_features)
    y[idx] = torch.nn.functional.linear(x.reshape(bt, -1)[idx], self.weight, self.bias)
    return y.view(*x.shape[:2], self.out_features)


def _make_packable(model) -> None:
    if not getattr(model, "_tetris_packable", False):
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.forward = types.MethodType(_packed_linear_forward, m)
        model._tetris_packable = True


@torch.no_grad()
def forward(model, state: kvm.BatchKV, tokens: list[list[int]], last_only: bool = False, logits: bool = True,
            feats: list[torch.Tensor] | None = None, hidden: bool = False, packed: bool = False):
    """Feed each row its ragged tokens after its kept state.

    Returns (logits, new_state): logits float32 [B, T, V] (or [B, V] at each row's
    last real token with last_only; None with logits=False), new_state with all
    real new tokens kept. For HF models with last_only (or no logits) the head runs
    on the needed positions only.
    feats: per row [len(tokens[b]), H] features fused with the tokens (a draft that reads the
    target's hidden states: model.fuse), or one tensor [B, T, H] when every row has T tokens. hidden=True returns (logits, new_state, hidden) with the
    final (post-norm) hidden states, float32 [B, T, H].
    packed=True: ragged rows cost their real tokens only (see _PACK); outputs at padding positions
    are meaningless (zeros), as they are in the padded layout.
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
    kw = dict(attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    if getattr(model, "reads_target_features", False):  # zeros where no features are given (profiling)
        if torch.is_tensor(feats):
            f = feats
        else:
            f = torch.zeros(len(tokens), t, model.config.hidden_size, dtype=dtype, device=dev)
            for b, fb in enumerate(feats or []):
                f[b, : fb.shape[0]] = fb
        kw["inputs_embeds"] = model.fuse(ids, f)
    else:
        kw["input_ids"] = ids
    rows = torch.arange(len(tokens), device=dev)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if packed and not bool((n == t).all()):
        _make_packable(model)
        real = (torch.arange(t, device=dev)[None, :] < n[:, None]).reshape(-1)
        _PACK[0] = (real.nonzero().squeeze(1), len(tokens) * t)
    try:
        out, hid = _run(model, kw, head, rows, n, last_only, logits, hidden)
    finally:
        _PACK[0] = None
    new = kvm.append(state, [(layer.keys, layer.values) for layer in cache.layers], n, t)
    if cache.layers and hasattr(cache.layers[0], "kbuf"):
        new.buffers = [(layer.kbuf, layer.vbuf) for layer in cache.layers]
    if hidden:
        return out, new, hid.float()
    return out, new


def _run(model, kw, head, rows, n, last_only, logits, hidden):
    hid = None
    if (last_only or not logits or hidden) and head is not None and hasattr(model, "get_decoder"):
        hid = model.get_decoder()(**kw).last_hidden_state
        if not logits:
            out = None
        else:
            out = (head(hid[rows, n - 1]) if last_only else head(hid)).float()
    else:
        out = model(**kw).logits
        out = (out[rows, n - 1] if last_only else out).float() if logits else None
    return out, hid
