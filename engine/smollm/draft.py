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
from torch import nn

PAIR_DIR = Path(__file__).resolve().parent.parent / "smollm_pair"
TOKEN_PAIR_DIR = Path(__file__).resolve().parent.parent / "smollm_pair_token"  # the token-level draft
DRAFT_FILE = "draft.safetensors"
DRAFT_META = "draft_config.json"
NEG = -1e4  # logit of tokens outside the head: exp() underflows to exactly 0, but p*log p stays finite


class RestrictedHead(nn.Module):
    """hidden [..., H] -> full-vocabulary logits [..., V]; only keep_ids are scored."""

    def __init__(self, weight_rows: torch.Tensor, keep_ids: torch.Tensor, vocab_size: int):
        super().__init__()
        self.weight = nn.Parameter(weight_rows)          # [n_keep, hidden] float32
        self.register_buffer("keep_ids", keep_ids.long(), persistent=False)  # [n_keep] int64
        self.vocab_size = vocab_size

    def restricted(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.t()                       # [..., n_keep]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        small = self.restricted(h)
        out = small.new_full((*small.shape[:-1], self.vocab_size), NEG)
        out[..., self.keep_ids] = small
        return out


def head_rows(target) -> torch.Tensor:
    """The target's output head [V, H] (tied to the embedding for SmolLM2)."""
    return target.get_output_embeddings().weight.detach()


def topk_cross_entropy(logq: torch.Tensor, top_ids: torch.Tensor, top_lp: torch.Tensor, remap: torch.Tensor):
    """Cross-entropy of the draft's head log-probs logq [P, n_keep] against the target's top-k
    (vocab ids [P, k], log-probs [P, k]) renormalised over the kept tokens (remap: vocab id ->
    head row, -1 = not kept). Positions whose top-k has no kept token are skipped.
    Returns (loss, greedy matches: the draft argmax is the target's top-1, counted over all P)."""
    r = remap[top_ids.long()]
    some = (r >= 0).any(-1)
    p = torch.softmax(top_lp[some].float().masked_fill(r[some] < 0, float("-inf")), -1)
    loss = -(p * logq[some].gather(1, r[some].clamp(min=0))).sum(-1).mean()
    return loss, int((logq.argmax(-1) == r[:, 0]).sum())


def draft_config(target_config, num_layers: int):
    """Target config with fewer layers and untied head (the head is a RestrictedHead)."""
    cfg = target_config.__class__.from_dict(target_config.to_dict())
    cfg.num_hidden_layers = num_layers
    cfg.tie_word_embeddings = False
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = cfg.layer_types[:num_layers]
    return cfg


def build_draft(target, num_layers: int, keep_ids: torch.Tensor, init_layers=None):
    """A draft sharing `target`'s embedding (copied, frozen) and norm; new layers initialised
    from the target's layers `init_layers` (list of indices) or randomly when None."""
    from transformers import AutoModelForCausalLM
    draft = AutoModelForCausalLM.from_config(draft_config(target.config, num_layers), dtype=torch.float32)
    return share_target(draft, target, keep_ids, init_layers)


def share_target(draft, target, keep_ids: torch.Tensor, init_layers=None):
    """Give a fresh draft the target's embedding (frozen), final norm, optionally layers
    (draft layer i <- target layer init_layers[i]) and its head rows for keep_ids (frozen)."""
    emb = target.get_input_embeddings().weight.detach()
    draft.model.embed_tokens.weight.data.copy_(emb)
    draft.model.embed_tokens.weight.requires_grad_(False)
    draft.model.norm.load_state_dict(target.model.norm.state_dict())
    if init_layers is not None:
        for i, j in enumerate(init_layers):
            draft.model.layers[i].load_state_dict(target.model.layers[j].state_dict())
    keep_ids = keep_ids.long().sort().values
    draft.lm_head = RestrictedHead(head_rows(target)[keep_ids].clone(), keep_ids, draft.config.vocab_size)
    draft.lm_head.weight.requires_grad_(False)
    return draft


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
        from .eagle import shift
        g = draft.model(inputs_embeds=draft.fuse(ids, shift(h)), attention_mask=attention_mask).last_hidden_state
        return t, draft.lm_head(g).float()
    return t, draft(input_ids=ids, attention_mask=attention_mask).logits.float()
