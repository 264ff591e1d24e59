"""Fine-tuning batches: examples encoded by the tokenizer, drawn in length buckets, padded to the longest.

    encode_examples   texts (and pairs) -> [CLS] a [SEP] (b [SEP]) ids and segment ids, truncated to max_length
    length_bucketed_batches   shuffled batches of similar lengths, so little padding is computed
    collate           one batch as (B, T) tensors, T its longest row, with token-dropout augmentation on request
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minibert.heads import IGNORE_INDEX
from train.finetune_data import Example


def load_tokenizer(directory: str | Path):
    from tokenizer import load

    return load(directory)


@dataclass
class EncodedSet:
    """Token ids of every example ([CLS] text [SEP] (pair [SEP]), truncated), unpadded, and the class ids."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode_texts(tok, texts: Sequence[str], pairs: Sequence[str | None] | None, max_length: int) -> tuple[list, list]:
    input_ids, token_type_ids = [], []
    for i, text in enumerate(texts):
        enc = tok.encode(text, pairs[i] if pairs is not None else None, max_length=max_length)
        input_ids.append(list(enc.input_ids))
        token_type_ids.append(list(enc.token_type_ids))
    return input_ids, token_type_ids


def encode_examples(tok, examples: Sequence[Example], max_length: int) -> EncodedSet:
    pairs = [e.text_pair for e in examples]
    input_ids, token_type_ids = encode_texts(
        tok, [e.text for e in examples], pairs if any(p is not None for p in pairs) else None, max_length
    )
    return EncodedSet(input_ids, token_type_ids, np.array([e.label for e in examples], dtype=np.int64))


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, chunk_batches: int = 50
) -> list[list[int]]:
    """Training batches that group examples of similar length, so a short review never pads to a long one:

    1. shuffle all indices; 2. cut them into chunks of `chunk_batches` batches; 3. sort each chunk by length and
    cut it into batches; 4. shuffle the order of the batches. Every index appears exactly once.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches: all examples sorted by length (ties by index), cut into batches."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]


def drop_tokens(ids: list[int], types: list[int], p: float, special_ids, rng: random.Random) -> tuple[list, list]:
    """Token-dropout augmentation: delete each non-special token with probability p (the specials [CLS]/[SEP]
    stay, so the pair structure survives). Deletion, not [UNK] replacement: the model never sees a training-only
    [UNK] pattern, and shorter inputs are cheaper. An example that would lose every text token is kept whole."""
    keep = [t in special_ids or rng.random() >= p for t in ids]
    if not any(k and t not in special_ids for k, t in zip(keep, ids)):
        return ids, types
    return [t for t, k in zip(ids, keep) if k], [s for s, k in zip(types, keep) if k]


def collate(
    data: EncodedSet,
    indices: Sequence[int],
    pad_id: int,
    token_dropout: float = 0.0,
    special_ids=frozenset(),
    rng: random.Random | None = None,
) -> dict[str, torch.Tensor]:
    """Pad the chosen examples to the longest: LongTensors input_ids, token_type_ids, attention_mask (B, T) and
    labels: (B,) class ids, or for a token classifier's windows (labels one array per example) (B, T), padded
    with IGNORE_INDEX."""
    rows = [(data.input_ids[i], data.token_type_ids[i]) for i in indices]
    if token_dropout > 0:
        rows = [drop_tokens(ids, types, token_dropout, special_ids, rng) for ids, types in rows]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, types) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        token_type_ids[r, : len(ids)] = torch.tensor(types)
        attention_mask[r, : len(ids)] = 1
    if isinstance(data.labels, np.ndarray):
        labels = torch.from_numpy(data.labels[np.asarray(indices, dtype=np.int64)])  # (B,)
    else:  # one label per token (train.ner_encoding); token dropout is not offered for them
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for r, i in enumerate(indices):
            labels[r, : len(data.labels[i])] = torch.from_numpy(data.labels[i])
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "labels": labels}
