"""The tokenizer interface shared by the SentencePiece and the WordPiece tokenizers.

A subclass supplies the vocabulary (size, special ids, which tokens start a word), the text -> ids mapping without
specials (`tokenize`, `encode_plain`), `decode`, and saving/loading. Adding `[CLS]`/`[SEP]`, segment ids,
truncation and padding are the same for both kinds and live here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import encoding
from .encoding import Encoding


class Tokenizer(ABC):
    """Text <-> token ids for BERT, with `[PAD] [UNK] [CLS] [SEP] [MASK]` special tokens."""

    #: The value of "kind" in the saved `tokenizer_config.json`.
    kind: str = ""

    # -- vocabulary -------------------------------------------------------------------------------------------

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids; ids run from 0 to vocab_size - 1."""

    @property
    @abstractmethod
    def pad_token_id(self) -> int: ...

    @property
    @abstractmethod
    def unk_token_id(self) -> int: ...

    @property
    @abstractmethod
    def cls_token_id(self) -> int: ...

    @property
    @abstractmethod
    def sep_token_id(self) -> int: ...

    @property
    @abstractmethod
    def mask_token_id(self) -> int: ...

    @property
    def special_ids(self) -> frozenset[int]:
        """The ids of `[PAD] [UNK] [CLS] [SEP] [MASK]`."""
        return frozenset(
            (self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id)
        )

    @property
    @abstractmethod
    def word_start(self) -> np.ndarray:
        """Bool array of shape (vocab_size,): whether each token begins a new word (for whole-word masking)."""

    @abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of `token_id`."""

    @abstractmethod
    def token_to_id(self, token: str) -> int:
        """The id of vocabulary entry `token` (`unk_token_id` if it is not in the vocabulary)."""

    # -- text <-> ids -----------------------------------------------------------------------------------------

    @abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text`, without special tokens added."""

    @abstractmethod
    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text, without special tokens added (the fast path for whole corpora)."""

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids`; with `skip_special_tokens`, the five special tokens are left out."""

    def encode_words(self, words: Sequence[str], joiner: str = "") -> list[list[int]]:
        """The ids of each word of a text already split into words, without special tokens: what a token
        classifier reads, one label per word (Hugging Face's `is_split_into_words`).

        Each word is tokenized on its own, so no token spans two words, and as it would be inside the text the words
        make when joined by `joiner` ("" for characters of Chinese text, " " for words between spaces). A word that
        gives no token (a space) gets [UNK], so that every word has at least one token and none is lost.
        """
        ids = self._encode_words(list(words), joiner)
        return [word_ids or [self.unk_token_id] for word_ids in ids]

    def _encode_words(self, words: list[str], joiner: str) -> list[list[int]]:
        """Each word's ids, the word read on its own (a subclass refines what "on its own" means)."""
        return self.encode_plain(words)

    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None) -> Encoding:
        """`[CLS] text [SEP]` or `[CLS] text [SEP] text_pair [SEP]`, truncated to at most `max_length` ids.

        Pairs are truncated longest-first (see `encoding.truncated_lengths`).
        """
        texts = [text] if text_pair is None else [text, text_pair]
        ids = self.encode_plain(texts)
        ids_b = None if text_pair is None else ids[1]
        return encoding.build(ids[0], ids_b, self.cls_token_id, self.sep_token_id, max_length)

    def encode_batch(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        max_length: int | None = None,
        padding: str = "longest",
    ) -> dict[str, torch.Tensor]:
        """Encode a batch and pad it: LongTensors `input_ids`, `token_type_ids`, `attention_mask` of shape (B, T).

        T is the longest example ("longest") or `max_length` ("max_length"); pads are `pad_token_id` with mask 0.
        """
        if isinstance(texts, str) or isinstance(text_pairs, str):
            raise TypeError("encode_batch takes a list of texts; use encode for a single text")
        texts = list(texts)
        if text_pairs is not None:
            text_pairs = list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
        if padding == "max_length" and max_length is None:
            raise ValueError('padding="max_length" needs max_length')
        ids = self.encode_plain(texts + (text_pairs or []))
        ids_a, ids_b = ids[: len(texts)], ids[len(texts) :]
        encodings = [
            encoding.build(a, ids_b[i] if text_pairs is not None else None, self.cls_token_id, self.sep_token_id,
                           max_length)
            for i, a in enumerate(ids_a)
        ]
        return encoding.pad(encodings, self.pad_token_id, padding, max_length)

    # -- persistence ------------------------------------------------------------------------------------------

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write the tokenizer to `directory` (created if needed), including a `tokenizer_config.json`."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read a tokenizer written by `save`."""
