"""The position-wise feed-forward network: the same two-layer MLP applied to every token on its own.

Shapes: B batch, T tokens, C hidden size, I intermediate size (4C in BERT). Every line here also works on
unpadded (N, C) input, since nothing mixes tokens.

    FFN(x) = activation(x W_1 + b_1) W_2 + b_2

This is the `activation` of 《预训练与微调的详细方法》's output formula (section 4.1.2, formula 4),
`output = softmax(W_output · activation(attention · V))`. BERT's activation is GELU in its exact form,

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
    """Narrow I -> C; then dropout, the residual connection and the feed-forward sub-layer's LayerNorm:

        post-LN (BERT):  LayerNorm(x1 + Dropout(h W_2 + b_2))
        pre-LN:          x1 + Dropout(h W_2 + b_2)

    Pre-LN normalises the sub-layer's input instead of its sum, before `BertIntermediate` reads it (the block,
    minibert/encoder.py), with this same LayerNorm: its place in a checkpoint, `output.LayerNorm`, is the same in
    both blocks.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.norm_first = config.norm_first

    def forward(self, h: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """h: (B, T, I) the widened activations; x1: (B, T, C) the residual stream the sub-layer read. -> (B, T, C)."""
        f = self.dropout(self.dense(h))  # (B, T, I) -> (B, T, C)
        return x1 + f if self.norm_first else self.LayerNorm(x1 + f)
