"""Strict UTF-8 decoding whose error names the file, the line and the offending bytes; a quick look at whether a
file is text at all; whether an output directory can be made where a user points."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from .errors import InputError


def decode_utf8(data: bytes, path: str | Path, first_line: int = 1) -> str:
    """`data` decoded as UTF-8 (a leading byte-order mark dropped); bad bytes raise `InputError`.

    `first_line` is the line number of the first line in `data`, for callers that decode a file piece by piece.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        bad = data[err.start : err.end].hex(" ")
        raise InputError(
            f"{path}, line {line}: bytes that are not UTF-8 ({bad}). Re-encode the file as UTF-8, "
            f"e.g. `iconv -f GB18030 -t UTF-8 {path} > fixed.txt` for a Chinese legacy encoding."
        ) from None
    return text[1:] if first_line == 1 and text.startswith("\ufeff") else text


def check_looks_like_text(path: str | Path, sample_bytes: int = 1 << 20) -> None:
    """InputError naming `path` when its first `sample_bytes` hold a NUL byte (a binary file: NUL is valid UTF-8
    but never in text) or bytes that are not UTF-8; reads only that much, so a large corpus costs nothing extra."""
    with open(path, "rb") as f:
        data = f.read(sample_bytes)
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError(f"{path}, line {line}: a NUL byte (0x00), so this is a binary file, not UTF-8 text; give "
                         "text files, one sentence or paragraph per line")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=len(data) < sample_bytes)
    except UnicodeDecodeError:
        decode_utf8(data[: data.rfind(b"\n") + 1] or data, path)  # raises, naming the line and the bytes


def check_can_create(path: str | Path, option: str) -> None:
    """InputError naming `option` unless `path` is a directory that can be written, or can be made as one: its
    nearest existing ancestor must be a writable directory, not a file."""
    path = existing = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file; give a directory")
    while not existing.exists() and existing != existing.parent:  # the directory that a new one is made in
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path}: cannot be created, {existing} is a file; choose a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write there ({existing} is read-only); choose a writable "
                         "directory")
