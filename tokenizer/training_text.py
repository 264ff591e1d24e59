"""Training text for a tokenizer: read from files, directories of .txt files or in-memory strings, and sampled.

Every non-blank line is a sentence. When there are more than `max_sentences`, a uniform random sample of that many
is kept (reservoir sampling, so memory stays bounded however large the input is).

A line longer than `MAX_LINE_CHARS` characters (a whole book on one line, say) is split into pieces of at most that
many characters, or refused naming the file and line (`long_lines="refuse"`). SentencePiece trains on sentences:
one huge "sentence" makes its training slow beyond use (a 10 MB line ran for more than 5 minutes) or fail outright
(a 1 MB line: an internal error), and no useful piece spans two sentences. The split comes after sentence
punctuation (`SENTENCE_END`: 。！？!?；; and any closing quotes after them), with consecutive sentences put back
together while they fit; a sentence longer than the limit is cut every `MAX_LINE_CHARS` characters.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import InputError
from .textfile import decode_utf8

#: Inputs at least this large (in bytes) get a progress bar while they are read.
PROGRESS_MIN_BYTES = 4 << 20
#: The longest training line, in characters; a longer one is split (or refused): see the module doc.
MAX_LINE_CHARS = 4096
#: Where a long line may be split: after a run of sentence-ending punctuation and the closing quotes that follow it.
SENTENCE_END = re.compile(r"[。！？!?；;]+[”’\"'）)」』\]]*")
#: What to do with a line longer than MAX_LINE_CHARS.
LONG_LINES = ("split", "refuse")


@dataclass
class Corpus:
    """Sampled sentences plus counts over everything that was read."""

    sentences: list[str]
    n_sentences: int  # non-blank lines read (long ones counted as their pieces), before sampling
    n_chars: int  # characters in those lines
    source: str  # what was read, for messages
    n_long: int = 0  # lines longer than MAX_LINE_CHARS, split into pieces
    n_pieces: int = 0  # the pieces they became
    first_long: str = ""  # where the first of them is ("file, line N"), for the note

    def long_lines_note(self) -> str | None:
        """The note that says how many long lines were split, or None when none was."""
        if not self.n_long:
            return None
        lines = "1 line" if self.n_long == 1 else f"{self.n_long:,} lines"
        return (f"{lines} longer than {MAX_LINE_CHARS:,} characters ({self.first_long}"
                f"{' and more' if self.n_long > 1 else ''}) split at sentence ends into {self.n_pieces:,} pieces "
                f"for training (--long-lines refuse stops at such a line instead)")


def split_inputs(inputs) -> tuple[list[Path], list[str]]:
    """Separate `inputs` into paths and in-memory text.

    A single `str` or path-like is one path; in an iterable, `pathlib.Path` (or other path-like) items are paths
    and `str` items are text (one or more sentences, one per line).
    """
    if isinstance(inputs, (str, os.PathLike)):
        return [Path(inputs)], []
    paths: list[Path] = []
    texts: list[str] = []
    for item in inputs:
        if isinstance(item, os.PathLike):
            paths.append(Path(item))
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise TypeError(f"training inputs must be paths or strings, not {type(item).__name__}")
    return paths, texts


def text_files(paths: Iterable[Path]) -> list[Path]:
    """The files named, with each directory replaced by the .txt files under it (sorted, recursively)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise InputError(f"{path} is a directory with no .txt files in it; put the corpus in .txt files "
                                 "(UTF-8, one sentence or paragraph per line) or name the files themselves")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path} does not exist; give an existing text file or directory of .txt files")
    return files


def file_lines(path: Path, bar: tqdm | None = None) -> Iterator[tuple[int, str]]:
    """(line number, line) for the non-blank lines of a UTF-8 file, without line endings; an empty file raises
    `InputError`."""
    any_text = False
    pending = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            pending += len(raw)
            if bar is not None and pending >= 1 << 20:
                bar.update(pending)
                pending = 0
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                decode_utf8(raw, path, first_line=number)  # raises, naming the line
                raise
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.rstrip("\r\n")
            if line.strip():
                any_text = True
                yield number, line
    if bar is not None:
        bar.update(pending)
    if not any_text:
        raise InputError(f"{path} is empty (no line has text); give a UTF-8 text file, one sentence or paragraph "
                         "per line")


def split_long_line(line: str, limit: int = MAX_LINE_CHARS) -> list[str]:
    """`line` as pieces of at most `limit` characters: cut after sentence punctuation, consecutive sentences joined
    again while they fit, a sentence longer than `limit` cut every `limit` characters. Blank pieces are dropped."""
    sentences, start = [], 0
    for end in SENTENCE_END.finditer(line):
        sentences.append(line[start:end.end()])
        start = end.end()
    sentences.append(line[start:])
    chunks = (s[i : i + limit] for s in sentences for i in range(0, len(s), limit))
    pieces: list[list[str]] = []
    size = limit + 1  # of the piece being filled: none yet
    for chunk in chunks:
        if size + len(chunk) > limit:
            pieces.append([])
            size = 0
        pieces[-1].append(chunk)
        size += len(chunk)
    return [text for parts in pieces if (text := "".join(parts)).strip()]


def long_line_error(where: str, length: int) -> InputError:
    return InputError(f"{where}: a line of {length:,} characters, more than the {MAX_LINE_CHARS:,} a training line "
                      "may have (SentencePiece trains on sentences); put one sentence or paragraph per line, or "
                      "pass --long-lines split to split such lines at sentence ends")


def read_corpus(inputs, max_sentences: int, seed: int = 0, progress: bool | None = None,
                long_lines: str = "split") -> Corpus:
    """Read all of `inputs` (see `split_inputs`) and keep a uniform sample of at most `max_sentences` sentences.

    `progress=None` shows a progress bar only for inputs of at least `PROGRESS_MIN_BYTES`. A line longer than
    `MAX_LINE_CHARS` is split (`long_lines="split"`, counted in the corpus) or raises InputError ("refuse").
    """
    if long_lines not in LONG_LINES:
        raise InputError(f"long lines: {long_lines!r} is not one of {', '.join(LONG_LINES)}")
    paths, texts = split_inputs(inputs)
    files = text_files(paths)
    source = ", ".join(map(str, files)) if files else "the given sentences"
    if files and texts:
        source += " and the given sentences"
    total_bytes = sum(f.stat().st_size for f in files)
    show = progress if progress is not None else total_bytes >= PROGRESS_MIN_BYTES
    long = {"n": 0, "pieces": 0, "first": ""}

    def numbered() -> Iterator[tuple[str, str]]:  # (where, line) for messages
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="reading", disable=not show) as bar:
            for f in files:
                for number, line in file_lines(f, bar if show else None):
                    yield f"{f}, line {number}", line
        n = 0
        for text in texts:
            for line in text.split("\n"):
                line = line.rstrip("\r")
                if line.strip():
                    n += 1
                    yield f"the given sentences, line {n}", line

    def lines() -> Iterator[str]:
        for where, line in numbered():
            if len(line) <= MAX_LINE_CHARS:
                yield line
                continue
            if long_lines == "refuse":
                raise long_line_error(where, len(line))
            pieces = split_long_line(line)
            long["n"] += 1
            long["pieces"] += len(pieces)
            long["first"] = long["first"] or where
            yield from pieces

    sample = Reservoir(max_sentences, seed)
    for line in lines():
        sample.add(line)
    if not sample.kept:
        raise InputError(f"no text to train on in {source}: every line is blank")
    return Corpus(sample.kept, sample.seen, sample.chars, source, long["n"], long["pieces"], long["first"])


class Reservoir:
    """A uniform random sample of at most `size` of the lines added (reservoir sampling: line n replaces a random
    kept one with probability size / n), drawn with `random.Random(seed)`; all of them, in order, when there are
    no more than `size`. Memory stays bounded however many lines come.

    `mark()` and `back_to(mark)` take back every line added in between, as if they had never come (the sample,
    the counts and the generator as they were): lines of a file that turns out unreadable half-way are left out."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.rng = size, random.Random(seed)
        self.kept: list[str] = []
        self.seen = 0  # lines added
        self.chars = 0  # their characters
        self._replaced: dict[int, str] | None = None  # since the mark: slot -> the line it held then

    def add(self, line: str) -> None:
        self.seen += 1
        self.chars += len(line)
        if len(self.kept) < self.size:
            self.kept.append(line)
            return
        j = self.rng.randrange(self.seen)
        if j < self.size:
            if self._replaced is not None:  # only a slot's first replacement: at most `size` lines held back
                self._replaced.setdefault(j, self.kept[j])
            self.kept[j] = line

    def add_text(self, text: str) -> None:
        """A document as training lines: one, or the pieces of a line longer than MAX_LINE_CHARS."""
        for line in split_long_line(text) if len(text) > MAX_LINE_CHARS else [text]:
            self.add(line)

    def mark(self) -> tuple:
        self._replaced = {}
        return self.seen, self.chars, len(self.kept), self.rng.getstate()

    def back_to(self, mark: tuple) -> None:
        seen, chars, n_kept, state = mark
        for j, line in (self._replaced or {}).items():
            self.kept[j] = line
        del self.kept[n_kept:]  # the lines added since, and any that replaced them
        self.seen, self.chars, self._replaced = seen, chars, {}
        self.rng.setstate(state)
