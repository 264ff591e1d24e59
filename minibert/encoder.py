"""The encoder: a stack of identical blocks, each attention then feed-forward, each with a residual and LayerNorm.

Shapes: B batch, T tokens, C hidden size; unpadded, (N, C) in place of (B, T, C).

post-LN (BERT, the default)        pre-LN (`norm_first=True`)
  x = LN(x + Attention(x))           x = x + Attention(LN(x))
  x = LN(x + FFN(x))                 x = x + FFN(LN(x))
                                     ... and one final LN after the last block
Pre-LN keeps an identity path from the input to the output of the stack, which tolerates larger learning rates;
BERT was trained post-LN, so that is what loads its checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import BertAttention
from .config import BertConfig
from .feed_forward import BertIntermediate, BertOutput
from .trace import LayerTrace
from .unpad import Unpadding


class BertLayer(nn.Module):
    """One encoder block: the attention sub-layer, then the feed-forward one, FFN(x) = GELU(x W_1 + b_1) W_2 + b_2,
    each with a residual connection and a LayerNorm, placed after the sum (post-LN) or before the sub-layer (pre-LN).
    The attention sub-layer is `attention` (minibert/attention.py); the feed-forward one is `intermediate` (W_1) and
    `output` (W_2, the residual and the LayerNorm `output.LayerNorm`), Hugging Face's names."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)
        self.norm_first = config.norm_first

    def forward(self, x, mask=None, unpadding: Unpadding | None = None, output_attentions: bool = False,
                trace: LayerTrace | None = None):
        """(B, T, C) -> (B, T, C), or unpadded (N, C) -> (N, C); and the attention probabilities when asked for.
        `trace`: where to keep this block's intermediate tensors (minibert/trace.py), or None."""
        x1, probs = self.attention(x, mask, unpadding, output_attentions, trace)  # residual and norm included
        h = self.output.LayerNorm(x1) if self.norm_first else x1  # pre-LN: the feed-forward reads LN_2(x1)
        hidden = self.intermediate(h)  # (B, T, C) -> (B, T, I)
        x2 = self.output(hidden, x1)  # (B, T, I) -> (B, T, C), with the residual x1
        if trace is not None:
            trace.input, trace.after_attention, trace.ffn_input, trace.ffn_hidden, trace.output = x, x1, h, hidden, x2
        return x2, probs


@dataclass
class EncoderStates:
    last: torch.Tensor  # (B, T, C) or (N, C)
    all_hidden_states: list[torch.Tensor] | None  # L+1 entries: the embeddings, then each block's output
    all_attentions: list[torch.Tensor] | None  # L entries of (B, H, T, T)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        # pre-LN blocks leave the residual stream un-normalised, so the stack ends with one more LayerNorm.
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_first else None

    def forward(self, x, mask=None, unpadding=None, output_hidden_states=False, output_attentions=False,
                trace: list[LayerTrace] | None = None):
        """trace: one record per block (minibert/trace.py), or None."""
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for i, block in enumerate(self.layer):
            x, probs = block(x, mask, unpadding, output_attentions, trace[i] if trace is not None else None)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)
        if self.final_layer_norm is not None:
            x = self.final_layer_norm(x)
            if output_hidden_states:
                hidden_states[-1] = x
        return EncoderStates(x, hidden_states, attentions)


class BertPooler(nn.Module):
    """pooled = tanh(h_[CLS] W_p + b_p): the sentence vector BERT's next-sentence head was trained on."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, T, C) -> (B, C): the [CLS] token only
