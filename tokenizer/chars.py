"""Character classes used by BERT's text normalisation and by whole-word masking.

The definitions follow the Rust `tokenizers` implementation that `transformers.BertTokenizer` runs on, which is
the reference for parity:

- control: Unicode category Cc, Cf, Co or Cs, except tab, newline and carriage return, which count as whitespace;
  unassigned code points (Cn) are kept, as the reference does;
- whitespace: the Unicode White_Space property (for characters that are not controls this is exactly `str.isspace`);
- punctuation: ASCII 33-47, 58-64, 91-96, 123-126 (so `$+<=>^`|~` count, as in the original BERT) or category P*;
- CJK character: the CJK Unified Ideographs blocks and extensions listed in `CJK_RANGES`.
"""

from __future__ import annotations

import unicodedata

# The Rust implementation starts extension E at 0x2B920 where the original Python BERT code had 0x2B820;
# the characters in between are therefore *not* split off as words, and we do the same.
CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})


def is_cjk(char: str) -> bool:
    """Whether `char` is a CJK ideograph, which BERT treats as a word of its own."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def is_control(char: str) -> bool:
    """Whether `char` is a control, format, private-use or surrogate character (tab, LF and CR excluded)."""
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in _CONTROL_CATEGORIES


def is_whitespace(char: str) -> bool:
    """Whether `char` is whitespace (tab, LF, CR, or any White_Space character that is not a control)."""
    return char in "\t\n\r" or (char.isspace() and not is_control(char))


def is_punctuation(char: str) -> bool:
    """Whether `char` is punctuation in BERT's sense: ASCII symbols/punctuation or Unicode category P*."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_nonspacing_mark(char: str) -> bool:
    """Whether `char` is a non-spacing combining mark (category Mn), what accent stripping removes."""
    return unicodedata.category(char) == "Mn"


class CharMap(dict):
    """A `str.translate` table filled lazily: each code point is classified once, on first sight.

    Building a full table for all 1.1M code points would cost a noticeable start-up; a text only ever uses a few
    thousand distinct characters, and `str.translate` keeps the per-character work in C.
    """

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, cp: int):
        value = self._rule(chr(cp))
        self[cp] = value
        return value
