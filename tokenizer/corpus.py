"""Training text for a tokenizer: read from files, directories of .txt files or in-memory strings, and sampled.

Every non-blank line is a sentence. When there are more than `max_sentences`, a uniform random sample of that many
is kept (reservoir sampling, so memory stays bounded however large the input is).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import InputError
from .textfile import decode_utf8

#: Inputs at least this large (in bytes) get a progress bar while they are read.
PROGRESS_MIN_BYTES = 4 << 20


@dataclass
class Corpus:
    """Sampled sentences plus counts over everything that was read."""

    sentences: list[str]
    n_sentences: int  # non-blank lines read, before sampling
    n_chars: int  # characters in those lines
    source: str  # what was read, for messages


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


def file_lines(path: Path, bar: tqdm | None = None) -> Iterator[str]:
    """The non-blank lines of a UTF-8 file, without line endings; an empty file raises `InputError`."""
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
                yield line
    if bar is not None:
        bar.update(pending)
    if not any_text:
        raise InputError(f"{path} is empty (no line has text); give a UTF-8 text file, one sentence or paragraph "
                         "per line")


def read_corpus(inputs, max_sentences: int, seed: int = 0, progress: bool | None = None) -> Corpus:
    """Read all of `inputs` (see `split_inputs`) and keep a uniform sample of at most `max_sentences` sentences.

    `progress=None` shows a progress bar only for inputs of at least `PROGRESS_MIN_BYTES`.
    """
    paths, texts = split_inputs(inputs)
    files = text_files(paths)
    source = ", ".join(map(str, files)) if files else "the given sentences"
    if files and texts:
        source += " and the given sentences"
    total_bytes = sum(f.stat().st_size for f in files)
    show = progress if progress is not None else total_bytes >= PROGRESS_MIN_BYTES
    rng = random.Random(seed)
    kept: list[str] = []
    n_sentences = n_chars = 0

    def lines() -> Iterator[str]:
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="reading", disable=not show) as bar:
            for f in files:
                yield from file_lines(f, bar if show else None)
        for text in texts:
            for line in text.split("\n"):
                line = line.rstrip("\r")
                if line.strip():
                    yield line

    for line in lines():
        n_sentences += 1
        n_chars += len(line)
        if len(kept) < max_sentences:
            kept.append(line)
        else:
            j = rng.randrange(n_sentences)
            if j < max_sentences:
                kept[j] = line
    if not kept:
        raise InputError(f"no text to train on in {source}: every line is blank")
    return Corpus(kept, n_sentences, n_chars, source)
