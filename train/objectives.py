"""Pretraining objectives: what a batch of packed blocks becomes, which model learns from it, and its losses.

Shapes: B blocks in the (global) batch, T tokens per block.

The pretraining loop is the same for every objective. An objective (`Objective` below) says
- `family`: the model it trains, "bert" (mlm, `train/mlm.py`; electra, `train/electra.py`), "gpt2" (causal,
  `train/causal.py`) or "t5" (span, `train/span.py`); `config_from(fields, vocab_size, max_len)`: that model's config, of the size of a minibert
  preset's BERT fields, so that the objectives compare at the same size; `model_vocab_size`: the rows of its
  embedding (T5's include the sentinels);
- `build(config)`: the model it trains;
- `make_batch(blocks, gen)`: the global batch (inputs, targets, any random draws), every tensor (B, ...), drawn
  from `gen` with shapes that depend only on (B, T), so a checkpointed generator state resumes exactly;
- `counts(batch)`: for each loss term, how many positions it averages over;
- `losses(model, batch)`: for each loss term, its mean over a (micro-)batch;
- `eval_sums(model, batch)`: the held-out sums that `train.pretrain_eval.evaluate` turns into `eval_loss` (the
  cross-entropy of the objective's own predictions: masked tokens, next tokens, span targets), `eval_accuracy`
  and the perplexity exp(eval_loss); `eval_loss_name` and `eval_accuracy_name` say what they are about;
- `order_probe`: whether evaluation also scores shuffled blocks (MLM's measure of what word order is worth).
The loop weighs each micro-batch's mean by its share of the global count, L = Σ_k w_k Σ_micro mean_k · n_k / N_k,
so accumulation and ranks give the same gradient as one big batch for every term.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from minibert.electra import DISCRIMINATOR_WEIGHT, GENERATOR_SIZE
from train.causal import CausalLM
from train.electra import ReplacedTokenDetection
from train.mlm import MLM_PROBABILITY, MaskedLM
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
