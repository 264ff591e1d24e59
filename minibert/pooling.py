"""From token vectors to one vector per text, the input of the classification head (`minibert/heads.py`).

Shapes: B batch, T tokens, C hidden size, L encoder blocks.

    h        = the body's last output (B, T, C)                               or, with layer fusion,
    h        = gamma · Σ_{j=0..L} softmax(w)_j · h_j                          (ScalarMix; h_0 = embeddings)
    pooled   = tanh(h[:, 0] W_p + b_p)                       "pooler": BERT's own (`BertModel.pooler`)
             = h[:, 0]                                       "cls"
             = Σ_t mask_t h_t / Σ_t mask_t                   "mean" (real tokens only)
             = h[:, t*],  t* = max{t : mask_t = 1}           "last" (the last real token: GPT's)

BERT's pooler is the one pooling with weights, W_p and b_p, pretrained (with next-sentence prediction in the
original BERT) and saved as `bert.pooler.dense`; it lives with BertModel, and `pool` takes it as an argument. The
others are functions of h and the attention mask alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import InputError

POOLINGS = ("pooler", "cls", "mean", "last")


class ScalarMix(nn.Module):
    """h = gamma · Σ_j softmax(w)_j h_j over the L+1 hidden states (Peters et al., 2018, ELMo).

    w starts at zero (an equal mix) and gamma at one. The softmax keeps the mixing weights positive and summing to
    one, so gamma alone sets the scale of the result.
    """

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))  # w: (L+1,)
        self.gamma = nn.Parameter(torch.ones(1))

    def mixing_weights(self) -> torch.Tensor:
        return self.weights.softmax(dim=0)  # (L+1,), sums to 1

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(states, dim=0)  # L+1 x (B, T, C) -> (L+1, B, T, C)
        s = self.mixing_weights().to(stacked.dtype)  # (L+1,)
        return self.gamma * torch.einsum("j,jbtc->btc", s, stacked)  # (B, T, C)


def cls_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """h[:, 0], the [CLS] position's vector: (B, T, C) -> (B, C). The mask is not needed (position 0 is real)."""
    return h[:, 0]  # (B, C)


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Σ_t mask_t h_t / Σ_t mask_t: (B, T, C), (B, T) -> (B, C)."""
    m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, C)


def last_token_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """h at each row's last real token, t* = max{t : mask_t = 1}: (B, T, C), (B, T) -> (B, C). Right padding or
    left, the padding never chooses the vector."""
    B, T = attention_mask.shape
    positions = torch.arange(T, device=h.device)  # (T,)
    last = (attention_mask.long() * positions).argmax(dim=1)  # (B,): the largest real position of each row
    return h[torch.arange(B, device=h.device), last]  # (B, C)


WEIGHTLESS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cls": cls_pool, "mean": mean_pool, "last": last_token_pool}


def pool(h: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
         pooler: nn.Module | None = None) -> torch.Tensor:
    """One vector per text by `pooling` (the module doc): (B, T, C), (B, T) -> (B, C). "pooler" needs BERT's
    `pooler` (a `BertPooler`, tanh(h[:, 0] W_p + b_p))."""
    if pooling == "pooler":
        if pooler is None:
            raise InputError("pooling 'pooler' is BERT's pooler layer, and this body has none; "
                             f"choose one of {', '.join(WEIGHTLESS)}")
        return pooler(h)  # (B, T, C) -> (B, C)
    if pooling not in WEIGHTLESS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    return WEIGHTLESS[pooling](h, attention_mask)  # (B, T, C) -> (B, C)
