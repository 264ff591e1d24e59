"""BERT's masked language modelling (MLM): the dynamic masking, drawn afresh for every batch (`mask_tokens`), and
the pretraining objective built on it (`MaskedLM`, as `train.objectives` describes an objective).

Why not [MASK] at every chosen position (the 80/10/10 rule of `mask_tokens`): fine-tuning and inference never see
[MASK], and if [MASK] were the only place a prediction is asked for, the model could learn to represent well only
the [MASK] positions. Random and unchanged tokens force it to keep a good representation of every input token,
since any token may be one it must predict, and the random ones teach it not to trust the visible token blindly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minibert import BertConfig, BertForMaskedLM
from minibert.heads import IGNORE_INDEX  # -100: the label of positions that carry no loss (one definition)


def _id_tensor(ids: torch.Tensor | Iterable[int], device: torch.device) -> torch.Tensor:
    """A 1-D long tensor of token ids on `device`, from a tensor or any iterable of ints."""
    if isinstance(ids, torch.Tensor):
        return ids.to(device=device, dtype=torch.long).flatten()
    return torch.tensor(sorted(int(i) for i in ids), dtype=torch.long, device=device)


def _word_starts(input_ids: torch.Tensor, candidate: torch.Tensor, word_start: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: where a word begins, among candidate tokens.

    A word is a word-start token followed by its continuation tokens. A candidate token right after a
    non-candidate (a special token or padding) also begins a word, so that no word spans a special token.
    """
    starts_word = word_start[input_ids]  # (B, T)
    previous_is_candidate = F.pad(candidate[:, :-1], (1, 0), value=False)  # (B, T)
    return candidate & (starts_word | ~previous_is_candidate)  # (B, T)


# The fraction of tokens chosen for prediction: MosaicBERT's 0.3, which measured better than BERT's 0.15 for the
# built-in task (docs/RESULTS.md). Every default of the masking, the MLM objective and `python -m train.pretrain`.
MLM_PROBABILITY = 0.3


def _choose(input_ids: torch.Tensor, candidate: torch.Tensor, word_start, vocab_size: int, p: float,
            choice_draw: torch.Tensor, fallback_draw: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the tokens chosen for prediction (`mask_tokens`' Choice and Whole-word masking): each unit (a
    token, or a whole word with `word_start`) with probability p, at least one unit per sequence that has any."""
    B, T = input_ids.shape
    if word_start is None:
        unit_start = candidate  # (B, T) every candidate token is its own unit
    else:
        table = torch.as_tensor(word_start, dtype=torch.bool, device=input_ids.device)
        if table.shape != (vocab_size,):
            raise ValueError(f"word_start must have shape ({vocab_size},), got {tuple(table.shape)}")
        unit_start = _word_starts(input_ids, candidate, table)  # (B, T)

    chosen_start = unit_start & (choice_draw < p)  # (B, T)
    # At least one unit per sequence that has any: the unit start with the largest fallback draw.
    needs_one = unit_start.any(dim=1) & ~chosen_start.any(dim=1)  # (B,)
    forced = torch.where(unit_start, fallback_draw, -1.0).argmax(dim=1)  # (B,)
    chosen_start |= F.one_hot(forced, T).bool() & needs_one[:, None]  # (B, T)
    if word_start is None:
        return chosen_start  # (B, T)
    # Spread each word's choice over its tokens: every token looks up the last word start at or before it.
    positions = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
    start_of_word = torch.where(unit_start, positions, 0).cummax(dim=1).values  # (B, T)
    return chosen_start.gather(1, start_of_word) & candidate  # (B, T)


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    special_ids: torch.Tensor | Iterable[int],
    mask_token_id: int,
    mlm_probability: float = MLM_PROBABILITY,
    generator: torch.Generator,
    word_start: torch.Tensor | np.ndarray | None = None,
    random_replace_prob: float = 0.1,
    keep_prob: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose tokens to predict and corrupt them: returns (masked_input_ids, labels), both (B, T).

    Candidates are all tokens whose id is not in `special_ids` (which must include padding, [CLS], [SEP] and
    [MASK]); special tokens are never chosen.

    Choice. Each candidate unit is chosen independently with probability p = `mlm_probability` (Bernoulli, as
    in BERT and Hugging Face's DataCollatorForLanguageModeling). A unit is a single token, or with `word_start`
    a whole word. If a sequence that has candidates ends up with none chosen, one of its units is chosen
    uniformly at random, so that no sequence, and so no batch, has zero labels (a zero-label batch gives a
    NaN mean loss). This raises the expected rate above p only for short sequences: by p * (1 - p)^n roughly,
    for n units.

    Whole-word masking. With `word_start`, a (V,) bool table saying whether each token id begins a word, a word
    is a word-start token followed by its non-start continuations (a word also begins right after any special
    token). Each word is chosen with probability p and then all its tokens are chosen, so each token is still
    chosen with probability p. The 80/10/10 decision below is then made per token, as in Google's original
    whole-word masking and Hugging Face's DataCollatorForWholeWordMask.

    Corruption (the 80/10/10 rule). Of the chosen tokens, independently per token:
        1 - random_replace_prob - keep_prob  (80%)  become [MASK],
        random_replace_prob                  (10%)  become a uniformly random non-special token id,
        keep_prob                            (10%)  stay unchanged
    (why not [MASK] everywhere: the module doc).

    Labels: the original id at chosen positions, IGNORE_INDEX (-100) elsewhere. Where the label is -100 the
    input is unchanged.

    Every random draw comes from `generator`, with shapes that depend only on (B, T), so the same generator
    state and input give the same output, and checkpointing the generator state makes resumed runs exact.
    Draws happen on the generator's device and are moved to the input's device.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
    if random_replace_prob < 0 or keep_prob < 0 or random_replace_prob + keep_prob > 1:
        raise ValueError("random_replace_prob and keep_prob must be non-negative and sum to at most 1")
    device = input_ids.device
    B, T = input_ids.shape
    special = _id_tensor(special_ids, device)
    candidate = ~torch.isin(input_ids, special)  # (B, T)
    replaceable = torch.arange(vocab_size, device=device)
    replaceable = replaceable[~torch.isin(replaceable, special)]  # (V',) the ids a random replacement may take
    if replaceable.numel() == 0:
        raise ValueError("every vocabulary id is special; there is no token to replace with")

    # All draws first, in a fixed order with fixed shapes, so the generator advances the same way for any data.
    def uniform() -> torch.Tensor:
        return torch.rand((B, T), generator=generator, device=generator.device).to(device)

    choice_draw = uniform()  # (B, T) Bernoulli(p) choice of units, read at each unit's first token
    fallback_draw = uniform()  # (B, T) picks the one forced unit of a sequence with none chosen
    action_draw = uniform()  # (B, T) the 80/10/10 decision per token
    random_index = torch.randint(
        replaceable.numel(), (B, T), generator=generator, device=generator.device
    ).to(device)  # (B, T)

    chosen = _choose(input_ids, candidate, word_start, vocab_size, mlm_probability, choice_draw, fallback_draw)

    mask_share = 1.0 - random_replace_prob - keep_prob
    to_mask = chosen & (action_draw < mask_share)  # (B, T)
    to_random = chosen & (action_draw >= mask_share) & (action_draw < mask_share + random_replace_prob)  # (B, T)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)  # (B, T)
    masked = torch.where(to_random, replaceable[random_index].to(input_ids.dtype), masked)  # (B, T)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))  # (B, T)
    return masked, labels


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
        """The BERT the fields describe, as they are (`train.pretrain_options.model_config` has put in the vocabulary and
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
