"""What every SmolLM2 draft (token-level: draft.py, EAGLE-style: eagle.py) shares: the target's
frozen embedding and head rows (RestrictedHead), the reduced config, the top-k distillation loss,
and the feature shift (f_{p-1} beside x_p)."""
import torch
import torch.nn.functional as F
from torch import nn

NEG = -1e4  # logit of tokens outside the head: exp() underflows to exactly 0, but p*log p stays finite


class RestrictedHead(nn.Module):
    """hidden [..., H] -> full-vocabulary logits [..., V]; only keep_ids are scored."""

    bias = None  # a linear without bias: engine.kernels.prepack_linears packs its weight too
    prepackable = True

    def __init__(self, weight_rows: torch.Tensor, keep_ids: torch.Tensor, vocab_size: int):
        super().__init__()
        self.weight = nn.Parameter(weight_rows)          # [n_keep, hidden] float32
        self.register_buffer("keep_ids", keep_ids.long(), persistent=False)  # [n_keep] int64
        self.vocab_size = vocab_size

    def restricted(self, h: torch.Tensor) -> torch.Tensor:
        from engine.kernels import linear

        return linear(self, h)                           # [..., n_keep] (h @ weight.t())

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


def shift(f: torch.Tensor) -> torch.Tensor:
    """[B, T, H] features at p -> at p+1 (f_{p-1} beside x_p), zeros before the first token."""
    return F.pad(f[:, :-1], (0, 0, 1, 0))
