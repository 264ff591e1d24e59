"""BertModel: embeddings -> L encoder blocks -> (optional) pooler.

Shapes: B batch, T tokens, C hidden size, H heads, L layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import additive_mask
from .config import BertConfig
from .embeddings import BertEmbeddings
from .encoder import BertEncoder, BertPooler
from .trace import BertTrace
from .unpad import Unpadding


@dataclass
class BertModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, C): one vector per token from the last block
    pooler_output: torch.Tensor | None  # (B, C): tanh(W_p h_[CLS] + b_p), None without a pooler
    hidden_states: list[torch.Tensor] | None = None  # L+1 x (B, T, C), on request
    attentions: list[torch.Tensor] | None = None  # L x (B, H, T, T), on request
    trace: BertTrace | None = None  # every intermediate tensor of the pass (minibert/trace.py), on request
    unpadding: Unpadding | None = None  # with keep_unpadded, when the blocks ran unpadded: last_hidden_state is then
    #                                     their (N, C) real-token rows, and this says where they sit in (B, T)


def init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: weights ~ N(0, std²) (std = initializer_range), biases 0, LayerNorm gamma 1 / beta 0,
    and the [PAD] row of an embedding table 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_trace: bool = False,
        keep_unpadded: bool = False,
    ) -> BertModelOutput:
        """input_ids, attention_mask (1 = real token, 0 = [PAD]), token_type_ids: (B, T). output_trace: keep every
        intermediate tensor, returned as `trace` (minibert/trace.py). keep_unpadded: when the blocks ran unpadded,
        return their (N, C) rows as they are, with the `unpadding` that places them, for a per-token head to read
        without the (B, T, C) scatter (a model without a pooler: the pooler reads padded rows)."""
        trace = BertTrace.for_layers(len(self.encoder.layer)) if output_trace else None
        x = self.embeddings(input_ids, token_type_ids, trace.embeddings if trace is not None else None)  # (B, T, C)
        mask = None if attention_mask is None else additive_mask(attention_mask, x.dtype)  # (B, 1, 1, T)
        unpadding = None
        if self.config.unpad and attention_mask is not None:
            unpadding = Unpadding.from_mask(attention_mask)
            x = unpadding.unpad(x)  # (B, T, C) -> (N, C)
        states = self.encoder(x, mask, unpadding, output_hidden_states, output_attentions,
                              trace.layers if trace is not None else None)
        last, hidden_states = states.last, states.all_hidden_states
        if unpadding is not None:
            last = last if keep_unpadded else unpadding.pad(last)  # (N, C) kept, or (B, T, C) with zeros at the pads
            if hidden_states is not None:
                hidden_states = [unpadding.pad(h) for h in hidden_states]
        pooled = self.pooler(last) if self.pooler is not None else None  # (B, C)
        kept = unpadding if keep_unpadded else None
        return BertModelOutput(last, pooled, hidden_states, states.all_attentions, trace, kept)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
