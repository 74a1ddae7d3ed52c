"""An EAGLE-style draft for SmolLM2: it reads the target's hidden states.

At sequence position p the draft's input is the token x_p together with the target's final
hidden state f_{p-1} (post-norm: what the target's head reads, the state that predicted x_p):

    e_p = fc([embed(x_p), f_{p-1}])            # [.., 2H] -> [.., H]
    g_p = norm(layer(e_1..e_p))                 # one Llama decoder layer, causal over the sequence
    logits for x_{p+1} = head(g_p)              # the target's head rows, restricted to keep_ids

g_p is trained to be f_p as well, so when drafting past the verified prefix the draft feeds its
own g_p where the target's f_p is not known yet. The engine (engine/core.py) supplies f from the
target's verification forward; `reads_target_features` tells it to.

Committed (engine/smollm_pair/draft.safetensors, float16): fc, the layer, the norm, keep_ids.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .shared import draft_config, share_target, topk_cross_entropy


def eagle_class():
    from transformers import LlamaForCausalLM

    class EagleLlama(LlamaForCausalLM):
        """LlamaForCausalLM with 1-2 layers whose input embeddings are fused with target features."""

        reads_target_features = True

        def __init__(self, config):
            super().__init__(config)
            h = config.hidden_size
            self.fc = nn.Linear(2 * h, h, bias=True)

        def fuse(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
            """ids [B, T] int64, feats [B, T, H] -> inputs_embeds [B, T, H]."""
            e = self.model.embed_tokens(ids)
            return self.fc(torch.cat([e, feats.to(e.dtype)], dim=-1))

    return EagleLlama


def build_eagle(target, num_layers: int, keep_ids: torch.Tensor, init_layers=None):
    """An EAGLE draft with `target`'s embedding (frozen) and head rows (frozen, restricted)."""
    draft = eagle_class()(draft_config(target.config, num_layers)).float()
    h = draft.config.hidden_size
    with torch.no_grad():                      # start as "embedding + feature" (a residual-like sum)
        draft.fc.weight.zero_()
        draft.fc.weight[:, :h].copy_(torch.eye(h))
        draft.fc.weight[:, h:].copy_(torch.eye(h))
        draft.fc.bias.zero_()
    return share_target(draft, target, keep_ids, init_layers)


def eagle_loss(draft, x, feats_in, mask, top_ids, top_lp, f_next, remap, feat_weight: float = 1.0):
    """One teacher-forced pass over ids x [B, T] with input features feats_in [B, T, H].

    Targets at the positions in mask [B, T] bool: the target's top-k (ids [B, T, k], log-probs) for
    the next token, renormalised over the draft's head (remap: vocab id -> head row, -1 = not kept),
    by cross-entropy; and the target's own feature f_next [B, T, H] by smooth-L1.
    Returns (loss, g [B, T, H], greedy match rate on the masked positions).
    """
    g = draft.model(inputs_embeds=draft.fuse(x, feats_in)).last_hidden_state
    logq = torch.log_softmax(draft.lm_head.restricted(g[mask]), -1)
    ce, match = topk_cross_entropy(logq, top_ids[mask], top_lp[mask], remap)
    reg = F.smooth_l1_loss(g[mask], f_next[mask].float())
    return ce + feat_weight * reg, g, match / max(len(logq), 1)
