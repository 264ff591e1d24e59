"""Unpadding: run per-token work only on real tokens of a padded batch (the MosaicBERT / ModernBERT idea).

Shapes: B batch, T tokens per row (padded), N real tokens in the whole batch (N <= B*T), C hidden size.

A padded batch of reviews whose median length is a third of its longest row spends most of its arithmetic on
[PAD]. Projections, the feed-forward network and LayerNorm act on each token independently, so they can run on
the (N, C) matrix of real tokens alone. Only attention mixes tokens within a row, and `unpad_attention` picks how
it finds the rows (minibert/attention.py):
- rows:   one sequence at a time, each (1, H, n, D), no mask (the CPU's default: measured fastest there);
- repad:  scatter into a zero (B, T, C) tensor for one masked fused kernel, and gather back (CUDA's default);
- nested: a jagged nested tensor of the N rows split at `offsets`: one variable-length kernel on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Unpadding:
    """Where the N real tokens of a (B, T) batch are, computed once per batch and shared by every layer."""

    indices: torch.Tensor  # (N,) positions of the real tokens in the flattened (B*T) batch
    B: int
    T: int
    positions: torch.Tensor  # (N,) each real token's position t within its row (its column in the padded batch)
    offsets: torch.Tensor  # (B + 1,) the (N, ...) rows hold row 0's tokens, then row 1's, ...: row b is
    #                        [offsets[b], offsets[b + 1]), a jagged layout
    _lengths: list[int] | None = field(default=None, repr=False)

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> "Unpadding":
        B, T = attention_mask.shape
        indices = torch.nonzero(attention_mask.reshape(-1), as_tuple=True)[0]  # (N,)
        row_lengths = attention_mask.ne(0).sum(dim=1)  # (B,)
        offsets = F.pad(row_lengths.cumsum(0), (1, 0))  # (B,) -> (B + 1,), a 0 in front
        return cls(indices=indices, B=B, T=T, positions=indices % T, offsets=offsets)

    @property
    def lengths(self) -> list[int]:
        """The row lengths as Python ints, for splitting the (N, ...) rows. A device-to-host copy, made once and
        only when asked for (by the per-sequence attention); everything else stays on the device, and in one
        torch.compile graph."""
        if self._lengths is None:
            self._lengths = self.offsets.diff().tolist()  # (B + 1,) -> (B,) real tokens per row
        return self._lengths

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...): keep the real tokens."""
        return x.reshape(self.B * self.T, *x.shape[2:])[self.indices]  # (N, ...)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...): real tokens back in place, zeros at the pads."""
        out = x.new_zeros(self.B * self.T, *x.shape[1:])  # (B*T, ...)
        out = out.index_copy(0, self.indices, x)  # differentiable scatter
        return out.view(self.B, self.T, *x.shape[1:])  # (B, T, ...)
