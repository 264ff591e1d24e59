"""WordPiece tokenisation over a BERT `vocab.txt`, token for token the same as `transformers.BertTokenizer`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import Tokenizer
from .basic import BasicTokenizer
from .config import SPECIAL_TOKENS, read_config, write_config
from .errors import InputError
from .vocab import read_vocab

VOCAB_NAME = "vocab.txt"
CONTINUATION = "##"


class WordPieceTokenizer(Tokenizer):
    """BERT's basic tokenisation followed by greedy longest-match-first WordPiece with `##` continuations.

    Literal special tokens in the text (`[MASK]`, `[SEP]`, ...) are recognised as those tokens, as in BERT.
    """

    kind = "wordpiece"

    def __init__(
        self,
        tokens: Sequence[str],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        max_input_chars_per_word: int = 100,
        source: str = "the vocabulary",
    ):
        self._tokens = list(tokens)
        self._vocab: dict[str, int] = {}
        for i, token in enumerate(self._tokens):
            # A duplicated line maps to its last id, as in the reference reader.
            self._vocab[token] = i
        missing = [t for t in SPECIAL_TOKENS.values() if t not in self._vocab]
        if missing:
            raise InputError(f"{source} lacks the special token(s) {' '.join(missing)}; a BERT vocab.txt needs all of "
                             f"{' '.join(SPECIAL_TOKENS.values())}")
        self._special = {name: self._vocab[t] for name, t in SPECIAL_TOKENS.items()}
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word
        self._basic = BasicTokenizer(do_lower_case, strip_accents, tokenize_chinese_chars, SPECIAL_TOKENS.values())
        # No vocabulary entry is longer than this, so the longest-match search never needs to look further.
        self._longest = max(map(len, self._tokens))
        self._word_cache: dict[str, tuple[str, ...]] = {}
        self._word_start = np.array([not t.startswith(CONTINUATION) for t in self._tokens], dtype=bool)

    @classmethod
    def from_vocab(
        cls,
        vocab_file: str | Path,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
    ) -> WordPieceTokenizer:
        """A tokenizer over the tokens of a Hugging Face `vocab.txt` (`strip_accents=None`: follow lower-casing)."""
        return cls(read_vocab(vocab_file), do_lower_case, strip_accents, tokenize_chinese_chars, source=str(vocab_file))

    # -- vocabulary -------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def pad_token_id(self) -> int:
        return self._special["pad"]

    @property
    def unk_token_id(self) -> int:
        return self._special["unk"]

    @property
    def cls_token_id(self) -> int:
        return self._special["cls"]

    @property
    def sep_token_id(self) -> int:
        return self._special["sep"]

    @property
    def mask_token_id(self) -> int:
        return self._special["mask"]

    @property
    def word_start(self) -> np.ndarray:
        """True for every token except `##` continuations."""
        return self._word_start.copy()

    def id_to_token(self, token_id: int) -> str:
        return self._tokens[token_id]

    def token_to_id(self, token: str) -> int:
        return self._vocab.get(token, self.unk_token_id)

    # -- text <-> ids -----------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for word in self._basic.tokenize(text):
            tokens.extend(self._word_pieces(word))
        return tokens

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        vocab = self._vocab
        return [[vocab[t] for t in self.tokenize(text)] for text in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Tokens joined by spaces, with `##` continuations glued to the token before them."""
        special = self.special_ids
        out: list[str] = []
        for i in ids:
            i = int(i)
            if skip_special_tokens and i in special:
                continue
            token = self._tokens[i]
            if token.startswith(CONTINUATION) and out:
                out.append(token[len(CONTINUATION):])
            else:
                out.append((" " if out else "") + token)
        return "".join(out)

    def _word_pieces(self, word: str) -> tuple[str, ...]:
        """Greedy longest-match-first split of one word; the whole word becomes `[UNK]` if some part has no match."""
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        if len(word) > self.max_input_chars_per_word:
            pieces: tuple[str, ...] = (SPECIAL_TOKENS["unk"],)
        elif word in self._vocab:
            pieces = (word,)
        else:
            found: list[str] = []
            start = 0
            while start < len(word):
                end = min(len(word), start + self._longest)
                while end > start:
                    piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                    if piece in self._vocab:
                        break
                    end -= 1
                if end == start:
                    found = [SPECIAL_TOKENS["unk"]]
                    break
                found.append(piece)
                start = end
            pieces = tuple(found)
        # Bounded so that a stream of distinct words (numbers, URLs) cannot grow it without limit.
        if len(self._word_cache) >= 200_000:
            self._word_cache.clear()
        self._word_cache[word] = pieces
        return pieces

    # -- persistence ------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write `vocab.txt` and a `tokenizer_config.json` that Hugging Face's BertTokenizer can also read."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCAB_NAME).write_text("".join(t + "\n" for t in self._tokens), encoding="utf-8")
        write_config(directory, {
            "kind": self.kind,
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "max_input_chars_per_word": self.max_input_chars_per_word,
        })

    @classmethod
    def load(cls, directory: str | Path) -> WordPieceTokenizer:
        """Read `vocab.txt` and the options in `tokenizer_config.json` (a Hugging Face BERT directory works too).

        Without a config, the Hugging Face defaults apply: lower-casing, accents stripped, CJK characters split.
        """
        directory = Path(directory)
        config = read_config(directory)
        vocab_file = directory / VOCAB_NAME
        if not vocab_file.is_file():
            raise InputError(f"{directory} has no {VOCAB_NAME}; a WordPiece tokenizer directory needs one")
        return cls(
            read_vocab(vocab_file),
            do_lower_case=bool(config.get("do_lower_case", True)),
            strip_accents=config.get("strip_accents"),
            tokenize_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            max_input_chars_per_word=int(config.get("max_input_chars_per_word", 100)),
            source=str(vocab_file),
        )
