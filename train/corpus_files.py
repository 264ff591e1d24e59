"""Read a user's text corpus: plain text files, JSONL files, or directories of them, into a list of strings.

A plain text file holds one document (or sentence) per line. A `.jsonl` file holds one JSON object per line with
a string field "text". A directory is searched recursively for `*.txt` and `*.jsonl` files, read in sorted path
order so that the corpus, and hence everything derived from it, does not depend on file system order.
Leading and trailing whitespace is stripped from every text and empty texts are skipped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from minibert.errors import InputError

TEXT_SUFFIXES = (".txt", ".jsonl")

# Files are decoded in chunks of this many bytes: large enough that decoding runs at C speed, small enough that a
# multi-gigabyte corpus is not held twice in memory (once as bytes, once as text).
_CHUNK_BYTES = 16 * 1024 * 1024

# Below this total size the progress bar would only flicker, so it is not shown.
_PROGRESS_MIN_BYTES = 64 * 1024 * 1024

_REENCODE_HINT = "re-encode the file as UTF-8, e.g. `iconv -f GBK -t UTF-8 in.txt > out.txt`"


def iter_file_lines(path: Path, progress: tqdm | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line number starting at 1, line without its line ending) for every line of a UTF-8 file.

    A leading byte order mark is dropped. Bytes that are not UTF-8, and NUL bytes (which only binary files hold),
    raise InputError naming the file and line.
    """
    line_number = 0
    carry = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK_BYTES)
            if progress is not None:
                progress.update(len(chunk))
            data = carry + chunk
            if chunk:
                # Decode only whole lines, so that a multi-byte character is never cut at the chunk edge.
                cut = data.rfind(b"\n") + 1
                data, carry = data[:cut], data[cut:]
            else:
                carry = b""
            if data:
                if (nul := data.find(b"\0")) >= 0:  # valid UTF-8, but never in text: a binary file
                    bad_line = line_number + data.count(b"\n", 0, nul) + 1
                    raise InputError(
                        f"{path}, line {bad_line}: a NUL byte (0x00), so this is a binary file, not UTF-8 text; "
                        "give text files (one document per line)"
                    )
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    bad_line = line_number + data.count(b"\n", 0, err.start) + 1
                    raise InputError(
                        f"{path}, line {bad_line}: byte 0x{data[err.start]:02x} is not valid UTF-8; "
                        f"{_REENCODE_HINT}"
                    ) from None
                if line_number == 0 and text.startswith("\ufeff"):
                    text = text[1:]
                lines = text.split("\n")
                if text.endswith("\n"):
                    lines.pop()  # the empty string after the final line ending is not a line
                for line in lines:
                    line_number += 1
                    yield line_number, line.rstrip("\r")
            if not chunk:
                return


def _read_text_file(path: Path, progress: tqdm | None) -> list[str]:
    """The non-empty, stripped lines of a plain text file."""
    return [s for _, line in iter_file_lines(path, progress) if (s := line.strip())]


def _read_jsonl_file(path: Path, progress: tqdm | None) -> list[str]:
    """The non-empty, stripped "text" fields of a JSONL file (blank lines are skipped)."""
    texts = []
    for line_number, line in iter_file_lines(path, progress):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}, line {line_number}: not valid JSON ({err.msg}); "
                'each line of a .jsonl file must be one object like {"text": "..."}'
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(
                f"{path}, line {line_number}: no string field \"text\"; "
                'each line of a .jsonl file must be one object like {"text": "..."}'
            )
        if text := record["text"].strip():
            texts.append(text)
    return texts


def _expand(path: Path) -> list[Path]:
    """The files a corpus path stands for: itself, or the text files under a directory in sorted order."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the corpus path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
        if not files:
            raise InputError(
                f"{path}: directory holds no *.txt or *.jsonl files; put the corpus text in such files"
            )
        return files
    return [path]


def read_texts(paths: Sequence[str | Path]) -> list[str]:
    """All texts of a corpus given as files and directories, in order: files in the order given, lines in order.

    Raises InputError for a missing path, a directory without text files, a file with no text, bytes that are not
    UTF-8 or NUL bytes (naming file and line), a JSONL line that is not an object with a string "text" (naming file
    and line), or a corpus with no text at all.
    """
    files = [f for p in paths for f in _expand(Path(p))]
    if not files:
        raise InputError("no corpus files given; pass at least one text file, JSONL file or directory")
    total_bytes = sum(f.stat().st_size for f in files)
    show = total_bytes >= _PROGRESS_MIN_BYTES and sys.stderr.isatty()
    texts: list[str] = []
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="reading corpus", disable=not show) as progress:
        for f in files:
            if f.stat().st_size == 0:
                raise InputError(f"{f}: file is empty; add text to it or leave it out of the corpus")
            read = _read_jsonl_file if f.suffix == ".jsonl" else _read_text_file
            file_texts = read(f, progress)
            if not file_texts:
                raise InputError(f"{f}: file has no text, only blank lines; add text to it or leave it out")
            texts.extend(file_texts)
    if not texts:
        raise InputError("the corpus has no text at all; add text files with one document per line")
    return texts
