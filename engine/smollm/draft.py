"""The distilled SmolLM2 draft: the target's frozen embeddings (and, optionally, final norm) plus
1-2 new Llama decoder layers, with a head restricted to the target's most frequent tokens.

The draft is a plain transformers LlamaForCausalLM (same KV cache, masks, generate()) whose
lm_head is a RestrictedHead: it scores only `keep_ids` (rows of the tied target embedding) and
scatters them into full-vocabulary logits, all other tokens at NEG (-1e4: probability 0). So its output has the same
shape and vocabulary as the target's and any engine can use it as an ordinary causal LM.

Only the new layers, the norm and keep_ids are committed (engine/smollm_pair/draft.safetensors,
float16); `load_draft(target_dir)` rebuilds the rest from the prepared target.
"""
import json
from pathlib import Path

import torch

from .shared import draft_config, share_target, shift

PAIR_DIR = Path(__file__).resolve().parent.parent / "smollm_pair"
TOKEN_PAIR_DIR = Path(__file__).resolve().parent.parent / "smollm_pair_token"  # the token-level draft
DRAFT_FILE = "draft.safetensors"
DRAFT_META = "draft_config.json"


def build_draft(target, num_layers: int, keep_ids: torch.Tensor, init_layers=None):
    """A draft sharing `target`'s embedding (copied, frozen) and norm; new layers initialised
    from the target's layers `init_layers` (list of indices) or randomly when None."""
    from transformers import AutoModelForCausalLM
    draft = AutoModelForCausalLM.from_config(draft_config(target.config, num_layers), dtype=torch.float32)
    return share_target(draft, target, keep_ids, init_layers)


def trained_state(draft) -> dict:
    """The tensors that are committed: new layers + final norm (+ fc for EAGLE) in fp16, keep_ids (int32)."""
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in draft.state_dict().items()
          if k.startswith(("model.layers.", "model.norm.", "fc."))}
    sd["keep_ids"] = draft.lm_head.keep_ids.to(torch.int32).contiguous()
    return sd


def save_draft(draft, out_dir: Path, meta: dict) -> None:
    from safetensors.torch import save_file
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(draft), str(out_dir / (DRAFT_FILE + ".tmp")))
    (out_dir / (DRAFT_FILE + ".tmp")).rename(out_dir / DRAFT_FILE)
    (out_dir / DRAFT_META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def load_target(target_dir, dtype=torch.float32):
    from transformers import AutoModelForCausalLM
    from .prepare import target_dir as _check
    model = AutoModelForCausalLM.from_pretrained(str(_check(Path(target_dir))), dtype=dtype)
    return model.eval()


def load_tokenizer(target_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(target_dir))


def load_draft(target_dir=None, pair_dir: Path = PAIR_DIR, target=None, dtype=torch.float32):
    """Rebuild the full draft: committed layers from `pair_dir` + embeddings/head rows from the
    prepared target (pass an already loaded `target` to avoid reading it twice)."""
    from safetensors.torch import load_file
    from .prepare import DEFAULT_DIR
    if target is None:
        target = load_target(target_dir or DEFAULT_DIR)
    meta = json.loads((Path(pair_dir) / DRAFT_META).read_text())
    sd = load_file(str(Path(pair_dir) / DRAFT_FILE))
    keep_ids = sd.pop("keep_ids").long()
    if meta.get("kind") == "eagle":
        from .eagle import build_eagle
        draft = build_eagle(target, meta["num_layers"], keep_ids)
    else:
        draft = build_draft(target, meta["num_layers"], keep_ids)
    missing, unexpected = draft.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    bad = [k for k in missing if k.startswith(("model.layers.", "model.norm.", "fc."))]
    if bad or unexpected:
        raise RuntimeError(f"draft weights do not match: missing={bad} unexpected={unexpected}")
    return draft.to(dtype).eval()


@torch.no_grad()
def pair_logits(target, draft, ids: torch.Tensor, attention_mask=None):
    """Teacher-forced logits of both models over ids [B, T]: (target [B, T, V], draft [B, T, V]).
    A draft that reads the target's hidden states (EAGLE) gets f_{p-1} beside x_p."""
    h = target.model(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    t = target.lm_head(h).float()
    if getattr(draft, "reads_target_features", False):
        g = draft.model(inputs_embeds=draft.fuse(ids, shift(h)), attention_mask=attention_mask).last_hidden_state
        return t, draft.lm_head(g).float()
    return t, draft(input_ids=ids, attention_mask=attention_mask).logits.float()
