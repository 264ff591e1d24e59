"""ELECTRA's replaced-token detection as a pretraining objective (`train.objectives` describes an objective): a
small generator fills the masked positions, the discriminator tells replaced tokens from originals at every
position. The model and its loss are `minibert/electra.py`'s."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from minibert import BertConfig
from minibert.electra import DISCRIMINATOR_WEIGHT, GENERATOR_SIZE, ElectraForPreTraining
from minibert.heads import IGNORE_INDEX
from train.mlm import MaskedLM


@dataclass
class ReplacedTokenDetection(MaskedLM):
    """ELECTRA: a small generator fills the masks, the discriminator tells replaced tokens from originals
    (`minibert/electra.py` has the math). Chosen positions all become [MASK]: the generator's samples replace them
    before the discriminator reads anything, so the 80/10/10 rule has nothing to protect here."""

    generator_size: float = GENERATOR_SIZE
    discriminator_weight: float = DISCRIMINATOR_WEIGHT
    share_embeddings: bool = False
    weights: dict = field(default_factory=dict)
    order_probe = False
    eval_loss_name = "generator MLM loss"

    def __post_init__(self):
        self.weights = {"generator": 1.0, "discriminator": self.discriminator_weight}

    def build(self, config: BertConfig) -> nn.Module:
        return ElectraForPreTraining(config, self.generator_size, self.discriminator_weight, self.share_embeddings)

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        input_ids, labels = self._mask(blocks, gen, random_replace_prob=0.0, keep_prob=0.0)  # (B, T) each
        sample_u = torch.rand(blocks.shape, generator=gen, device=gen.device)  # (B, T): one draw per position
        return {"input_ids": input_ids, "labels": labels, "sample_u": sample_u}

    def counts(self, batch: dict) -> dict[str, int]:
        return {"generator": int((batch["labels"] != IGNORE_INDEX).sum()),
                "discriminator": batch["input_ids"].numel()}  # packed blocks: every token is real

    def _forward(self, model: nn.Module, batch: dict):
        return model(batch["input_ids"], batch["labels"], sample_u=batch["sample_u"], special_ids=self.special_ids)

    def losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        out = self._forward(model, batch)
        return {"generator": out.generator_loss, "discriminator": out.discriminator_loss}

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Held-out sums: the generator's MLM cross-entropy and accuracy at the masked positions (so `eval_loss` reads
        as MLM's does), and the discriminator's loss and accuracy over every token."""
        out = self._forward(model, batch)
        labels = batch["labels"]
        target = labels[labels != IGNORE_INDEX]  # (M,)
        logits = out.generator_logits.float()  # (M, V)
        d_logits, replaced = out.discriminator_logits.float(), out.replaced.float()  # (B, T) each
        return {"loss": F.cross_entropy(logits, target, reduction="sum"),
                "correct": (logits.argmax(-1) == target).sum(), "count": torch.tensor(target.numel()),
                "disc_loss": F.binary_cross_entropy_with_logits(d_logits, replaced, reduction="sum"),
                "disc_correct": ((d_logits > 0).float() == replaced).sum(), "disc_count": torch.tensor(d_logits.numel()),
                "replaced": replaced.sum()}
