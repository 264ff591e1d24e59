"""BERT's "basic" tokenisation: normalise raw text and split it into words before WordPiece runs.

The steps and their order are those of `transformers.BertTokenizer` (Rust `BertNormalizer` + `BertPreTokenizer`):

1. cut the raw text at literal special tokens (`[CLS]`, `[MASK]`, ...), which are kept whole and untouched;
2. in the other stretches, drop NUL, U+FFFD and control characters, turn every whitespace character into a space,
   and put spaces around every CJK character;
3. strip accents (NFD, then drop non-spacing marks) when asked, which by default is whenever lower-casing;
4. lower-case character by character (so a final capital sigma becomes "σ", not "ς");
5. split on whitespace and make every punctuation character a word of its own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from .chars import CharMap, is_cjk, is_control, is_nonspacing_mark, is_punctuation, is_whitespace


def _clean_rule(char: str) -> str | None:
    if char in "\x00\ufffd" or is_control(char):
        return None
    if is_whitespace(char):
        return " "
    if is_cjk(char):
        return f" {char} "
    return char


def _accent_rule(char: str) -> str | None:
    return None if is_nonspacing_mark(char) else char


def _punctuation_rule(char: str) -> str:
    return f" {char} " if is_punctuation(char) else char


# Shared by every instance: the classification of a character never depends on the options.
_CLEAN = CharMap(_clean_rule)
_STRIP_ACCENTS = CharMap(_accent_rule)
_SPLIT_PUNCTUATION = CharMap(_punctuation_rule)


class BasicTokenizer:
    """Splits text into BERT words; `never_split` strings found in the raw text come out as single words."""

    def __init__(
        self,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        never_split: Iterable[str] = (),
    ):
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.never_split = tuple(never_split)
        if tokenize_chinese_chars:
            self._clean = _CLEAN
        else:
            self._clean = CharMap(lambda c: c if is_cjk(c) else _clean_rule(c))
        # Longest first, so that a special token that is a prefix of another cannot win over it.
        alternatives = sorted(self.never_split, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")") if alternatives else None

    def tokenize(self, text: str) -> list[str]:
        """The list of words of `text`, in order, special tokens included as words."""
        if self._special_re is None:
            return self._words(text)
        words: list[str] = []
        # re.split with one capturing group alternates plain stretches (even indices) and special tokens (odd).
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:
                words.append(part)
            elif part:
                words.extend(self._words(part))
        return words

    def _words(self, text: str) -> list[str]:
        text = text.translate(self._clean)
        if self.strip_accents:
            text = unicodedata.normalize("NFD", text).translate(_STRIP_ACCENTS)
        if self.do_lower_case:
            # str.lower applies the context-dependent final-sigma rule; the reference lower-cases each character
            # on its own, which always gives "σ".
            text = text.replace("Σ", "σ").lower()
        return text.translate(_SPLIT_PUNCTUATION).split()
