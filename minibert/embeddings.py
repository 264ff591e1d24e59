"""Input embeddings: word vector + position vector + segment vector, then LayerNorm and dropout.

Shapes: B batch, T tokens, C hidden size, V vocabulary size.

《预训练与微调的详细方法》 (section 4.1.2, formulas 1 and 2) writes

    word_vector = W · word_index + bias
    position_embedding = P · position + bias

where `word_index` is a one-hot column: multiplying W by a one-hot vector picks one row of W, so
`nn.Embedding(V, C)` (a row lookup) computes exactly `W · one_hot(word_index)`, without the V-wide product.
BERT keeps no separate bias per table: it adds a third, segment vector, sums the three, and LayerNorm's learned
shift beta plays the role of the single `bias` each of the document's formulas adds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import BertConfig
from .trace import EmbeddingsTrace


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The original Transformer's fixed positions (Vaswani et al., 2017), shape (num_positions, dim):

        PE[pos, 2i]   = sin(pos / 10000^(2i/dim))
        PE[pos, 2i+1] = cos(pos / 10000^(2i/dim))

    Each pair of dimensions is a sine wave of its own wavelength, so a fixed offset between two positions is a
    rotation of each pair: the model can attend by relative position without learning a table.
    """
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    angles = position * inv_freq  # (P, dim/2)
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table.float()


class BertEmbeddings(nn.Module):
    """x = LayerNorm(W[input_ids] + P[positions] + S[token_type_ids]), then dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, C, padding_idx=config.pad_token_id)  # W: (V, C)
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, C)  # P: (T_max, C), learned
        elif config.position_embedding_type == "sinusoidal":  # fixed, so a buffer: not trained and not saved
            self.register_buffer("sinusoidal", sinusoidal_table(config.max_position_embeddings, C), persistent=False)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, C)  # S: (2, C)
        self.LayerNorm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.max_positions = config.max_position_embeddings  # the longest sequence, with any position type
        self.rotary = config.position_embedding_type == "rotary"

    def position_vectors(self, T: int) -> torch.Tensor:
        """Rows 0..T-1 of the position table, shape (T, C); zeros with rotary positions, which act in attention."""
        if hasattr(self, "position_embeddings"):
            return self.position_embeddings.weight[:T]
        if hasattr(self, "sinusoidal"):
            return self.sinusoidal[:T]
        return self.word_embeddings.weight.new_zeros(T, self.word_embeddings.embedding_dim)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                trace: EmbeddingsTrace | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, C). `trace`: where to keep the three vectors and their sum (minibert/trace.py)."""
        B, T = input_ids.shape
        if T > self.max_positions:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {self.max_positions}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Summed in Hugging Face's order (word + segment + position), so float rounding matches too.
        word = self.word_embeddings(input_ids)  # (B, T, C): row input_ids[b, t] of W
        segment = self.token_type_embeddings(token_type_ids)  # (B, T, C)
        x = word + segment  # (B, T, C)
        position = None if self.rotary else self.position_vectors(T)  # (T, C); rotary positions act in attention
        if position is not None:
            x = x + position  # (B, T, C) + (T, C) broadcast over the batch
        normalised = self.LayerNorm(x)  # (B, T, C)
        if trace is not None:
            trace.token_type_ids, trace.word, trace.segment, trace.position = token_type_ids, word, segment, position
            trace.sum, trace.normalised = x, normalised
        return self.dropout(normalised)
