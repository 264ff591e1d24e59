"""A user's text corpus: which files it is, and its documents read as a stream, never all at once.

`--corpus` takes files, directories and glob patterns. A directory stands for the corpus files under it, searched
recursively (`CORPUS_SUFFIXES`: .txt, .jsonl, and their .gz forms), in sorted path order, so that the corpus, and
everything derived from it, does not depend on file system order; a pattern (`'data/*.jsonl.gz'`, quoted so that
the shell leaves it alone; `**` crosses directories) stands for the files it matches, sorted. A file named
explicitly is read whatever its name: as JSONL if it ends in .jsonl(.gz), as plain text otherwise. What a document
is, and how a file is read, is `train.corpus_reader`'s.

A file that cannot be read as text (empty, only blank lines, binary, not UTF-8, a bad .jsonl line, a broken .gz)
is a `BadFile`, named with its line; `BadFiles` does what `--bad-files` says: stop there (InputError, exit status
2) or skip the file with a warning, and count the files skipped.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from minibert.errors import InputError
from train.corpus_reader import BadText, TextReader, documents

CORPUS_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
BAD_FILE_POLICIES = ("stop", "skip")
EMPTY_FILE = "file is empty; add text to it or leave it out of the corpus"
BLANK_FILE = "file has no text, only blank lines; add text to it or leave it out"


class BadFile(InputError):
    """A corpus file that cannot be read as text: the file, the line at fault (None: the whole file), and why."""

    def __init__(self, path: Path, reason: str, line: int | None = None):
        self.path, self.reason, self.line = Path(path), reason, line
        super().__init__(f"{path}, line {line}: {reason}" if line is not None else f"{path}: {reason}")


def is_corpus_file(path: Path) -> bool:
    return path.name.endswith(CORPUS_SUFFIXES) and path.is_file()


def _in_directory(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob("*") if is_corpus_file(p))
    if not files:
        raise InputError(f"{path}: directory holds no *.txt or *.jsonl files (nor their .gz forms); put the corpus "
                         "text in such files")
    return files


def corpus_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files a corpus given as files, directories and glob patterns stands for, in order: as given, each
    directory's and each pattern's files sorted. InputError for a path that does not exist, a pattern that matches
    nothing, a directory without corpus files, or no paths at all."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files.extend(_in_directory(path))
        elif path.exists():
            files.append(path)
        elif glob.has_magic(str(given)):
            matches = [Path(m) for m in sorted(glob.glob(str(given), recursive=True))]
            found = [f for m in matches for f in (_in_directory(m) if m.is_dir() else [m] if m.is_file() else [])]
            if not found:
                raise InputError(f"{given}: the pattern matches no files; check the corpus path")
            files.extend(found)
        else:
            raise InputError(f"{path}: no such file or directory; check the corpus path")
    if not files:
        raise InputError("no corpus files given; pass at least one text file, JSONL file or directory")
    return files


def file_documents(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[str]:
    """The documents of one corpus file, in order; BadFile (naming the file and line) when it cannot be read as
    text or holds none."""
    if path.stat().st_size == 0:
        raise BadFile(path, EMPTY_FILE)
    any_text = False
    try:
        for _, text in documents(TextReader(path, on_bytes=on_bytes)):
            any_text = True
            yield text
    except BadText as bad:
        raise BadFile(path, bad.reason, bad.line) from None
    if not any_text:
        raise BadFile(path, BLANK_FILE)


class BadFiles:
    """What `--bad-files` says to do with a file that cannot be read as text: "stop" raises InputError naming it;
    "skip" leaves it out, with a warning (`warn`, stderr by default) the first time it is met, and counts it."""

    def __init__(self, policy: str = "stop", warn: Callable[[str], None] | None = None):
        if policy not in BAD_FILE_POLICIES:
            raise InputError(f"--bad-files {policy!r}: choose one of {', '.join(BAD_FILE_POLICIES)}")
        self.policy = policy
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self.skipped: dict[Path, BadFile] = {}  # file -> why

    def found(self, bad: BadFile) -> None:
        """The policy applied to one bad file."""
        if self.policy == "stop":
            raise InputError(f"{bad} (or pass --bad-files skip to leave such files out of the corpus)")
        if bad.path not in self.skipped:
            self.skipped[bad.path] = bad
            self.warn(f"warning: skipping {bad}")

    def __contains__(self, path: Path) -> bool:
        return Path(path) in self.skipped

    def summary(self, n_files: int) -> str | None:
        """The line that counts the files left out (None when none was)."""
        if not self.skipped:
            return None
        return f"note: {len(self.skipped):,} of {n_files:,} corpus files skipped as unreadable (--bad-files skip)"


def stream_documents(files: Sequence[Path], bad: BadFiles, progress: tqdm | None = None,
                     on_file_start: Callable[[], object] | None = None,
                     on_bad_file: Callable[[object], None] | None = None) -> Iterator[str]:
    """The documents of the corpus files in order, read line by line; a bad file goes to `bad` (which stops or
    skips it). A file found bad half-way has already yielded documents: `on_file_start()` is called before each
    file and its result handed to `on_bad_file` when that file turns out bad, so that the consumer can take them
    back (`tokenizer.training_text.Reservoir` does)."""
    for path in files:
        if path in bad:
            continue
        mark = on_file_start() if on_file_start is not None else None
        try:
            yield from file_documents(path, progress.update if progress is not None else None)
        except BadFile as err:
            if on_bad_file is not None:
                on_bad_file(mark)
            bad.found(err)


def read_texts(paths: Sequence[str | Path]) -> list[str]:
    """All documents of a corpus, in a list: files in the order given, lines in order. For corpora that fit in
    memory (pretraining streams instead, `train.shards`). Raises InputError as `corpus_files` does, and for the
    first file that cannot be read as text (naming file and line)."""
    return [text for path in corpus_files(paths) for text in file_documents(path)]


def iter_file_lines(path: Path, progress: tqdm | None = None) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its line ending) for every line of a UTF-8 file, blank ones included.

    A leading byte order mark is dropped. Bytes that are not UTF-8, and NUL bytes (which only binary files hold),
    raise InputError naming the file and line.
    """
    try:
        yield from TextReader(path, on_bytes=progress.update if progress is not None else None)
    except BadText as bad:
        raise BadFile(path, bad.reason, bad.line) from None
