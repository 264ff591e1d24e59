"""The lines and documents of one corpus file, or of a byte range of it, read block by block.

Standard library only: the worker processes that tokenize a corpus (`train.shard_worker`) import this and
SentencePiece, not torch, so each starts in a fraction of a second and holds a few megabytes.

A document is a line of a text file, or the string field "text" of a line of a .jsonl file, with leading and
trailing whitespace stripped; blank ones are skipped. A name ending in .gz is read through gzip. Lines end at "\\n"
alone (a "\\r" before it is dropped), never at the other characters `str.splitlines` takes for line ends, so a
document is the same however the file is cut into ranges. A leading byte order mark is dropped.

What makes a file unreadable as text raises `BadText`: bytes that are not UTF-8, a NUL byte (only binary files hold
one), a .jsonl line that is not an object with a string "text", a .gz file that gzip cannot read, a file that cannot
be opened. `train.corpus_files` turns it into the message that names the file and line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

# Bytes read (and decoded) at a time: large enough that decoding runs at C speed, small enough that a line-sized
# read of a multi-gigabyte file holds little, and that progress is reported every megabyte.
READ_BYTES = 1 << 20

REENCODE_HINT = "re-encode the file as UTF-8, e.g. `iconv -f GBK -t UTF-8 in.txt > out.txt`"
JSONL_HINT = 'each line of a .jsonl file must be one object like {"text": "..."}'


class BadText(Exception):
    """Why a file cannot be read as text. `line`: the line at fault, counted from the first line of the range read
    (1 for the first), or None for the whole file; `reason` says what is wrong and what to do."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason, self.line = reason, line


def is_gzip(path: Path) -> bool:
    return path.name.endswith(".gz")


def is_jsonl(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith(".jsonl")


class TextReader:
    """The lines of `path` from byte `start` to byte `end` (None: the end of the file), decoded; a .gz file is
    read whole (gzip cannot start in the middle). `start` must be 0 or just after a line end, and `end` just after
    one or at the end of the file. `on_bytes(n)` is told of every n bytes of the file read. After iterating,
    `lines` is the number of lines read (blank ones included)."""

    def __init__(self, path: Path, start: int = 0, end: int | None = None,
                 on_bytes: Callable[[int], None] | None = None):
        self.path, self.start, self.end, self.on_bytes = Path(path), start, end, on_bytes
        self.lines = 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        """(line number from 1, line without its line ending) for every line."""
        try:
            raw = open(self.path, "rb")
        except OSError as err:
            raise BadText(f"cannot be read ({err.strerror or err})") from None
        with raw:
            source = gzip.GzipFile(fileobj=raw) if is_gzip(self.path) else raw
            if self.start and source is raw:
                raw.seek(self.start)
            yield from self._lines(raw, source)

    def _read(self, raw, source, left: int | None) -> bytes:
        """The next block of bytes (b"" at the end of the range); gzip's failures are the file's fault."""
        before = raw.tell()
        try:
            chunk = source.read(READ_BYTES if left is None else min(READ_BYTES, left))
        except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            raise BadText(f"not a readable gzip file ({err}); give it whole, or unpack it") from None
        if self.on_bytes is not None:
            self.on_bytes(raw.tell() - before)
        return chunk

    def _lines(self, raw, source) -> Iterator[tuple[int, str]]:
        left = None if self.end is None or source is not raw else self.end - self.start
        carry = b""
        while True:
            chunk = self._read(raw, source, left)
            if left is not None:
                left -= len(chunk)
            data = carry + chunk
            if chunk:
                # Decode only whole lines, so that a multi-byte character is never cut at the block's edge.
                cut = data.rfind(b"\n") + 1
                data, carry = data[:cut], data[cut:]
            else:
                carry = b""
            if data:
                yield from self._decoded(data)
            if not chunk:
                return

    def _decoded(self, data: bytes) -> Iterator[tuple[int, str]]:
        if (nul := data.find(b"\0")) >= 0:  # valid UTF-8, but never in text: a binary file
            raise BadText("a NUL byte (0x00), so this is a binary file, not UTF-8 text; give text files (one "
                          "document per line)", self.lines + data.count(b"\n", 0, nul) + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadText(f"byte 0x{data[err.start]:02x} is not valid UTF-8; {REENCODE_HINT}",
                          self.lines + data.count(b"\n", 0, err.start) + 1) from None
        if self.lines == 0 and self.start == 0 and text.startswith("\ufeff"):
            text = text[1:]
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()  # the empty string after the final line ending is not a line
        for line in lines:
            self.lines += 1
            yield self.lines, line.rstrip("\r")


def documents(reader: TextReader) -> Iterator[tuple[int, str]]:
    """(line number, document) for the non-blank documents `reader` reads: stripped lines, or for a .jsonl file
    the stripped "text" of each non-blank line."""
    jsonl = is_jsonl(reader.path)
    for number, line in reader:
        if jsonl:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise BadText(f"not valid JSON ({err.msg}); {JSONL_HINT}", number) from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise BadText(f'no string field "text"; {JSONL_HINT}', number)
            line = record["text"]
        if text := line.strip():
            yield number, text
