"""Strict UTF-8 decoding whose error names the file, the line and the offending bytes."""

from __future__ import annotations

from pathlib import Path

from minibert.errors import InputError


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
