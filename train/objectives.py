"""Pretraining objectives: what a batch of packed blocks becomes, which model learns from it, and its losses.

Shapes: B blocks in the (global) batch, T tokens per block.

The pretraining loop is the same for every objective. An objective (`Objective` below) says
- `family`: the model it trains, "bert" (mlm, electra), "gpt2" (causal, `train/causal.py`) or "t5" (span,
  `train/span.py`); `config_from(fields, vocab_size, max_len)`: that model's config, of the size of a minibert
  preset's BERT fields, so that the objectives compare at the same size; `model_vocab_size`: the rows of its
  embedding (T5's include the sentinels);
- `build(config)`: the model it trains;
- `make_batch(blocks, gen)`: the global batch (inputs, targets, any random draws), every tensor (B, ...), drawn
  from `gen` with shapes that depend only on (B, T), so a checkpointed generator state resumes exactly;
- `counts(batch)`: for each loss term, how many positions it averages over;
- `losses(model, batch)`: for each loss term, its mean over a (micro-)batch;
- `eval_sums(model, batch)`: the held-out sums that `train.pretrain.evaluate` turns into `eval_loss` (the
  cross-entropy of the objective's own predictions: masked tokens, next tokens, span targets), `eval_accuracy`
  and the perplexity exp(eval_loss); `eval_loss_name` and `eval_accuracy_name` say what they are about;
- `order_probe`: whether evaluation also scores shuffled blocks (MLM's measure of what word order is worth).
The loop weighs each micro-batch's mean by its share of the global count, L = Σ_k w_k Σ_micro mean_k · n_k / N_k,
so accumulation and ranks give the same gradient as one big batch for every term.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from minibert import BertConfig, BertForMaskedLM
from minibert.electra import DISCRIMINATOR_WEIGHT, GENERATOR_SIZE, ElectraForPreTraining
from minibert.heads import IGNORE_INDEX
from train.causal import CausalLM
from train.masking import MLM_PROBABILITY, mask_tokens
from train.span import SpanCorruption

OBJECTIVES = ("mlm", "electra", "causal", "span")


class Objective(Protocol):
    """What the pretraining loop asks of an objective (the module docstring says what each part does)."""

    family: str
    weights: dict
    order_probe: bool
    eval_loss_name: str
    eval_accuracy_name: str

    @property
    def model_vocab_size(self) -> int: ...
    def config_from(self, fields: dict, vocab_size: int, max_len: int): ...
    def build(self, config) -> nn.Module: ...
    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]: ...
    def counts(self, batch: dict) -> dict[str, int]: ...
    def losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]: ...
    def eval_sums(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]: ...


@dataclass
class MaskedLM:
    """BERT's masked-language modelling: a fraction of the tokens chosen (`MLM_PROBABILITY`), 80/10/10 corrupted,
    predicted from context."""

    vocab_size: int
    special_ids: torch.Tensor
    mask_token_id: int
    mlm_probability: float = MLM_PROBABILITY
    word_start: torch.Tensor | None = None
    weights: dict = field(default_factory=lambda: {"mlm": 1.0})
    family = "bert"
    order_probe = True  # evaluation also scores shuffled blocks: what word order is worth (train/pretrain.py)
    eval_loss_name = "MLM loss"
    eval_accuracy_name = "masked-token accuracy"

    @property
    def model_vocab_size(self) -> int:
        return self.vocab_size

    def config_from(self, fields: dict, vocab_size: int, max_len: int) -> BertConfig:
        """The BERT the fields describe, as they are (`train.pretrain.model_config` has put in the vocabulary and
        the position table)."""
        del vocab_size, max_len
        return BertConfig(**fields)

    def build(self, config: BertConfig) -> nn.Module:
        return BertForMaskedLM(config)

    def _mask(self, ids: torch.Tensor, gen: torch.Generator, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(ids, vocab_size=self.vocab_size, special_ids=self.special_ids,
                           mask_token_id=self.mask_token_id, mlm_probability=self.mlm_probability, generator=gen,
                           word_start=self.word_start, **kw)

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        input_ids, labels = self._mask(blocks, gen)  # (B, T) each
        return {"input_ids": input_ids, "labels": labels}

    def counts(self, batch: dict) -> dict[str, int]:
        return {"mlm": int((batch["labels"] != IGNORE_INDEX).sum())}

    def losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return {"mlm": model(batch["input_ids"], labels=batch["labels"]).loss}

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Held-out sums: MLM cross-entropy, correct predictions and the count, at the masked positions."""
        labels = batch["labels"]
        logits = model(batch["input_ids"], labels=labels).logits.float()
        keep = labels != IGNORE_INDEX  # (B, T)
        if logits.dim() == 3:  # the dense head scores every position
            logits = logits[keep]  # (M, V)
        target = labels[keep]  # (M,)
        return {"loss": F.cross_entropy(logits, target, reduction="sum"),
                "correct": (logits.argmax(-1) == target).sum(), "count": keep.sum()}


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


CLASSES = {"mlm": MaskedLM, "electra": ReplacedTokenDetection, "causal": CausalLM, "span": SpanCorruption}
FAMILY = {name: cls.family for name, cls in CLASSES.items()}  # the model each objective trains


def make_objective(name: str, tok, *, mlm_probability: float = MLM_PROBABILITY, word_start=None,
                   generator_size: float = GENERATOR_SIZE,
                   discriminator_weight: float = DISCRIMINATOR_WEIGHT, share_embeddings: bool = False) -> Objective:
    """The objective `name` on the ids of tokenizer `tok`. mlm_probability and word_start (whole-word masking)
    are MLM's and ELECTRA's; generator_size, discriminator_weight and share_embeddings ELECTRA's; causal and span take the
    tokenizer's special ids and nothing else (span: T5's 15% noise in spans of mean length 3)."""
    if name == "causal":
        return CausalLM.from_tokenizer(tok)
    if name == "span":
        return SpanCorruption.from_tokenizer(tok)
    special = torch.as_tensor(sorted(tok.special_ids), dtype=torch.long)
    common = dict(vocab_size=tok.vocab_size, special_ids=special, mask_token_id=tok.mask_token_id,
                  mlm_probability=mlm_probability, word_start=word_start)
    if name == "mlm":
        return MaskedLM(**common)
    if name == "electra":
        return ReplacedTokenDetection(**common, generator_size=generator_size, discriminator_weight=discriminator_weight,
                                      share_embeddings=share_embeddings)
    raise ValueError(f"unknown objective {name!r}; choose one of {OBJECTIVES}")
