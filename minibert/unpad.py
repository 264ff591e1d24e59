"""Unpadding: run per-token work only on real tokens of a padded batch (the MosaicBERT / ModernBERT idea).

Shapes: B batch, T tokens per row (padded), N real tokens in the whole batch (N <= B*T), C hidden size.

A padded batch of reviews whose median length is a third of its longest row spends most of its arithmetic on
[PAD]. Projections, the feed-forward network and LayerNorm act on each token independently, so they can run on
the (N, C) matrix of real tokens alone; only attention, which mixes tokens within a row, needs the rows back,
and gets them by scattering into a zero (B, T, C) tensor just for that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass
class Unpadding:
    indices: torch.Tensor  # (N,) positions of the real tokens in the flattened (B*T) batch
    B: int
    T: int
    lengths: list[int]  # real tokens per row; the (N, ...) rows hold row 0's tokens, then row 1's, ...

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> "Unpadding":
        B, T = attention_mask.shape
        indices = torch.nonzero(attention_mask.reshape(-1), as_tuple=True)[0]  # (N,)
        lengths = attention_mask.ne(0).sum(dim=1).tolist()  # (B,) as Python ints, for splitting
        return cls(indices=indices, B=B, T=T, lengths=lengths)

    @cached_property
    def positions(self) -> torch.Tensor:
        """(N,) each real token's position t within its row (its column in the padded batch); computed once per
        batch and shared by every layer."""
        return self.indices % self.T

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): keep the real tokens."""
        return x.reshape(self.B * self.T, *x.shape[2:])[self.indices]  # (N, ...)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...): real tokens back in place, zeros at the pads."""
        out = x.new_zeros(self.B * self.T, *x.shape[1:])  # (B*T, ...)
        out = out.index_copy(0, self.indices, x)  # differentiable scatter
        return out.view(self.B, self.T, *x.shape[1:])  # (B, T, ...)
