"""The position-wise feed-forward network: the same two-layer MLP applied to every token on its own.

Shapes: B batch, T tokens, C hidden size, I intermediate size (4C in BERT). Every line here also works on
unpadded (N, C) input, since nothing mixes tokens.

    FFN(x) = activation(x W_1 + b_1) W_2 + b_2

This is the document's `activation(...)` step. BERT's activation is GELU in its exact form,

    GELU(x) = x · Φ(x) = x · ½ · (1 + erf(x / sqrt(2)))

(Φ the standard normal CDF): a smooth ReLU that weights each input by how likely it is to be positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BertConfig
from .errors import InputError


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, x · ½ · (1 + erf(x / sqrt(2))), as `nn.functional.gelu` computes it."""
    return F.gelu(x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (GPT-2, Hugging Face's "gelu_new"): ½x(1 + tanh(sqrt(2/π)(x + 0.044715x³)))."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": F.relu}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise InputError(f"hidden_act {name!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class BertIntermediate(nn.Module):
    """h = activation(x W_1 + b_1): widen C -> I."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))  # (B, T, C) -> (B, T, I)


class BertOutput(nn.Module):
    """Narrow I -> C, then dropout: Dropout(h W_2 + b_2). Its LayerNorm is the feed-forward sub-layer's (`norm`),
    which the block applies (minibert/encoder.py): Hugging Face's module holds it."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(h))  # (B, T, I) -> (B, T, C)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm over each token's C numbers, with the feed-forward sub-layer's gamma and beta
        (Hugging Face's `output.LayerNorm`)."""
        return self.LayerNorm(x)
