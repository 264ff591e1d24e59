"""What the training commands share: options from dataclasses, and JSON written atomically.

Options: each dataclass field is an option, its `help` metadata the text, its default shown; the machinery
(`opt`, `build_parser`, `parse_options`) is `tokenizer.command`'s, shared by every command. The directory a
command writes its results into, and what it may remove there, is `minibert.rundir`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from minibert.files import atomic_write
from tokenizer.command import opt


TASKS = ("classification", "ner")  # what a fine-tuned model predicts: a label per text, or a tag per word
RUNS_DIR = "runs"  # where every command writes its runs and looks for the latest one, unless told otherwise


@dataclass
class TaskFiles:
    """Where a labelled task comes from: the options of every command that reads one (train.finetune,
    train.baseline, train.curve), read by `train.finetune_data.load_task`."""

    task: str = opt("classification", "classification: a label per text (the built-in task: review sentiment). "
                    "ner: a BIO tag per character or word, scored by entity-level F1 (the built-in task: person, "
                    "place and organisation names in People's Daily 1998)", choices=TASKS)
    train: str | None = opt(None, "training data. classification: a .csv, .tsv (with a header line) or .jsonl "
                            "file; ner: a CoNLL-style file (a token and its tag per line, a blank line between "
                            "sentences) or .jsonl with tokens and ner_tags. Without it, the built-in task",
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


def write_json(path: Path, obj) -> None:
    """`obj` as indented UTF-8 JSON (Chinese text kept readable), written atomically: a reader, or a run killed
    mid-write, sees the old file or the new one, never half of one."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))
