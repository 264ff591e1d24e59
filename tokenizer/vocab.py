"""Reading a Hugging Face / Google BERT `vocab.txt`: one token per line, the line number is the id."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .textfile import decode_utf8


def read_vocab(path: str | Path) -> list[str]:
    """The tokens of `path` in id order.

    Lines end at LF, CRLF or CR (as Python's universal newlines, which the reference reader uses); a final line
    ending does not start another token, but an empty line in the middle is a token (the empty string).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such vocabulary file; give the vocab.txt of a BERT checkpoint")
    text = decode_utf8(path.read_bytes(), path)
    tokens = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise InputError(f"{path} is empty; a vocab.txt lists one token per line")
    return tokens
