"""Model inputs from token ids: BERT's `[CLS] A [SEP] (B [SEP])` template, truncation and batch padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encoding:
    """One encoded example: token ids, segment ids (0 for `[CLS] A [SEP]`, 1 for `B [SEP]`), and 1s for real tokens."""

    input_ids: list[int]
    token_type_ids: list[int]
    attention_mask: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def truncated_lengths(len_a: int, len_b: int | None, max_length: int | None) -> tuple[int, int | None]:
    """How many tokens of segments A and B to keep so that, with the specials added, at most `max_length` remain.

    A single segment keeps its first `max_length - 2` tokens. For a pair, the longer segment is cut first, down to
    the length of the other; if that is not enough, the room left for text is split evenly, the odd token going
    to the segment that was longer (to B on a tie). This is the "longest first" rule of Hugging Face tokenizers,
    and keeps both segments non-empty whenever there is room for two tokens of text.
    """
    if max_length is None:
        return len_a, len_b
    n_special = 2 if len_b is None else 3
    if max_length < n_special:
        raise ValueError(f"max_length={max_length} leaves no room for the {n_special} special tokens")
    room = max_length - n_special
    if len_b is None:
        return min(len_a, room), None
    if len_a + len_b <= room:
        return len_a, len_b
    short, long_ = sorted((len_a, len_b))
    keep_short = short
    keep_long = max(short, room - short) if short <= room else short
    if keep_short + keep_long > room:
        keep_short, keep_long = room // 2, room // 2 + room % 2
    return (keep_long, keep_short) if len_a > len_b else (keep_short, keep_long)


def build(
    ids_a: Sequence[int], ids_b: Sequence[int] | None, cls_id: int, sep_id: int, max_length: int | None = None
) -> Encoding:
    """`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` from segment ids, truncated to `max_length` tokens in all."""
    keep_a, keep_b = truncated_lengths(len(ids_a), None if ids_b is None else len(ids_b), max_length)
    first = [cls_id, *ids_a[:keep_a], sep_id]
    input_ids = first
    token_type_ids = [0] * len(first)
    if ids_b is not None:
        second = [*ids_b[:keep_b], sep_id]
        input_ids = first + second
        token_type_ids += [1] * len(second)
    return Encoding(list(input_ids), token_type_ids, [1] * len(input_ids))


def pad(
    encodings: Sequence[Encoding], pad_id: int, padding: str = "longest", max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """Stack encodings into (B, T) LongTensors `input_ids`, `token_type_ids`, `attention_mask`.

    T is the longest encoding ("longest") or `max_length` ("max_length"); padding positions hold `pad_id`,
    segment 0 and mask 0.
    """
    if padding == "longest":
        width = max((len(e) for e in encodings), default=0)
    elif padding == "max_length":
        if max_length is None:
            raise ValueError('padding="max_length" needs max_length')
        width = max_length
    else:
        raise ValueError(f'padding must be "longest" or "max_length", not {padding!r}')
    input_ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((len(encodings), width), dtype=np.int64)
    attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        n = len(enc)
        input_ids[row, :n] = enc.input_ids
        token_type_ids[row, :n] = enc.token_type_ids
        attention_mask[row, :n] = 1
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(attention_mask),
    }
