"""python -m train.baseline: the classic model every fine-tuned model is compared with, its settings chosen on the
validation split only: for text classification, TF-IDF character n-grams and a logistic regression (scikit-learn);
for named entities (--task ner), a linear-chain CRF on character features (python-crfsuite, `train.ner_crf`).

    python -m train.baseline                                   # the built-in review task, every training label
    python -m train.baseline --train-examples 1000 --split-seed 1
    python -m train.baseline --train data.csv --label-column sentiment
    python -m train.baseline --task ner --train-examples 1000  # People's Daily entities, a CRF
    python -m train.baseline --task ner --train train.conll --validation dev.conll --test test.conll

It takes the data options of `train.finetune` and reads the data through the same functions
(`train.finetune_data.load_task`, `subsample_train`), so the same options give the same split and the same
`--train-examples` draw: the draw is made with `--split-seed`, as in `train.finetune`. The fit is deterministic
(the lbfgs solver), so `--seeds` only repeats it; different draws come from different `--split-seed` values, which is
how `train.curve` gives every seed of a learning curve its own draw, the same for every model.

The model, for a text x and its character n-grams g of lengths 1..n (a sentence pair is one text, "text [sep] pair"):

    tf(g, x) = count of g in x                      (1 + ln count with sublinear tf)
    idf(g)   = ln((1 + N) / (1 + df(g))) + 1        (N training texts, df(g) of them contain g: scikit-learn's
                                                     smoothed idf, computed on the training split only)
    v(x)     = tf(., x) idf / || tf(., x) idf ||_2
    p(k | x) = softmax_k(W v(x) + b)                (two classes: sigmoid(w . v(x) + b))
    W, b     = argmin  C Σ_n -ln p(y_n | x_n) + ||W||² / 2

The protocol: 1. count n-grams on the training split; 2. for every setting of the grid (n-gram range, C, sublinear tf)
fit on the training split and score the validation split; 3. choose the setting with the best validation --metric
(ties go to the earlier setting: fewer n-grams, then plain tf, then smaller C); 4. score the test split once, with
the chosen model. Outputs in --out: `results.json`, with the metrics of `train.finetune` (`train.metrics`) plus the
chosen setting and the whole validation grid, and the same tables on stdout.

--task ner reads the named-entity data through `train.ner_data.load_ner_task` (the built-in People's Daily task, or
CoNLL-style / JSON lines files) and follows the same protocol over a grid of the CRF's L1 and L2 strengths (c1, c2),
choosing by validation entity F1 (`train.ner_metrics`); every report in results.json has "f1" at its top level. Its
--seeds are training draws: with --train-examples, seed s trains on the N sentences drawn with seed s
(`train.ner_data.subsample_ner_train`); without --seeds, the one draw is --split-seed's, the draw of every command
given that --split-seed. The CRF's fits are deterministic, so without --train-examples the draws are one fit.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from minibert.errors import InputError
from minibert.rundir import OutDir, OutState, RunKind, check_usable, claim, inspect_out
from train import metrics, ner_crf
from tokenizer.command import opt, parse_options
from train.cli import RUNS_DIR, TaskDraw, write_json
from train.finetune_data import Columns, Example, TaskData, label_counts, load_task, subsample_train, warn
from tokenizer.command import command_main

METRICS = ("macro_f1", "accuracy")
BASELINE_RUN = RunKind("baseline", "baseline run")
ENTRIES = ("results.json",)  # what a baseline run writes into its --out
PAIR_SEPARATOR = " [SEP] "  # between a text and its pair; the char analyzer lowercases it to " [sep] "
MAX_ITER = 2000  # lbfgs iterations; the largest C on 1-4-grams converges well within this on the built-in task
MODEL = "TF-IDF character n-grams + logistic regression (scikit-learn, lbfgs)"


def _values(values) -> str:
    return " ".join(f"{v:g}" for v in values)


@dataclass
class BaselineOptions(TaskDraw):
    """train.baseline's options; the task's (--task, the data, the draw), the same as train.finetune's, come from
    `train.cli.TaskDraw`."""

    out: str | None = opt(None, "output directory (must not exist or be empty); none: "
                          "RUNS_DIR/baseline-YYYYmmdd-HHMMSS (baseline-ner-... for --task ner)", metavar="DIR")
    runs_dir: str = opt(RUNS_DIR, "where the default --out goes", metavar="DIR")
    # -- the grid, searched on the validation split
    ngram_max: list[int] = opt((2, 3, 4), "character n-gram ranges tried: (1, n) for each n given",
                               metavar="N")
    c_values: list[float] = opt((1.0, 3.0, 10.0, 30.0), "inverse regularisation strengths C tried (larger C: "
                                "weaker L2 penalty)", metavar="C")
    metric: str = opt("macro_f1", "validation score that chooses the setting, as train.finetune's --metric",
                      choices=METRICS)
    seeds: list[int] = opt((0,), "one run per seed (the solver's random_state). The lbfgs fit is deterministic, "
                           "so every seed gives the same result; accepted so that the baseline takes "
                           "train.finetune's command line. With --task ner each seed is a draw: with "
                           "--train-examples, seed S trains on the sentences drawn with seed S (none given: the "
                           "--split-seed draw), and results.json has the mean and std over draws", metavar="SEED")
    # -- the CRF's grid (--task ner), searched on the validation split
    c1_values: list[float] | None = opt(None, "--task ner: L1 strengths c1 tried (larger: fewer features kept). "
                                        f"none: {_values(ner_crf.C1_VALUES)}, or {_values(ner_crf.LARGE_C1_VALUES)} "
                                        f"above {ner_crf.LARGE_TRAIN:,} training sentences (each fit takes minutes "
                                        "there)", metavar="C1")
    c2_values: list[float] | None = opt(None, f"--task ner: L2 strengths c2 tried. none: "
                                        f"{_values(ner_crf.C2_VALUES)}, or {_values(ner_crf.LARGE_C2_VALUES)} above "
                                        f"{ner_crf.LARGE_TRAIN:,} training sentences", metavar="C2")
    max_iterations: int = opt(ner_crf.MAX_ITERATIONS, "--task ner: L-BFGS iterations per fit at most (each costs "
                              "a pass over the training sentences; 0: until converged)", metavar="N")


# The options of one task only: refused with the other task, rather than silently ignored.
CLASSIFICATION_ONLY = ("text_column", "text_pair_column", "label_column", "ngram_max", "c_values", "metric")
NER_ONLY = ("c1_values", "c2_values", "max_iterations")


# -- features -----------------------------------------------------------------------------------------------


def texts_of(examples: list[Example]) -> list[str]:
    return [e.text if e.text_pair is None else e.text + PAIR_SEPARATOR + e.text_pair for e in examples]


def labels_of(examples: list[Example]) -> np.ndarray:
    return np.array([e.label for e in examples], dtype=np.int64)  # (N,)


class NgramCounts:
    """Character n-gram counts of lengths 1..n_max with the vocabulary of the training texts, from which the TF-IDF
    features of every range (1, n), n <= n_max, are cut: the columns of the n-grams no longer than n. That is exactly
    what a TfidfVectorizer(analyzer="char", ngram_range=(1, n)) fitted on the same texts computes (the vocabulary
    of (1, n) is the part of (1, n_max)'s of length <= n), with one pass over the text instead of one per n."""

    def __init__(self, train_texts: list[str], n_max: int):
        from sklearn.feature_extraction.text import CountVectorizer

        self.vectorizer = CountVectorizer(analyzer="char", ngram_range=(1, n_max))
        self.train = self.vectorizer.fit_transform(train_texts)  # (N, G) counts, G n-grams of length 1..n_max
        self.lengths = np.array([len(g) for g in self.vectorizer.get_feature_names_out()])  # (G,)

    def counts(self, texts: list[str]):
        return self.vectorizer.transform(texts)  # (M, G)

    def columns(self, n: int) -> np.ndarray:
        return np.flatnonzero(self.lengths <= n)


@dataclass
class Features:
    """The TF-IDF features of one (n, sublinear) setting: the weighting fitted on the training counts."""

    columns: np.ndarray  # which n-gram columns the range keeps
    tfidf: object  # a fitted sklearn TfidfTransformer
    train: object  # (N, G_n) sparse, rows L2-normalised

    @classmethod
    def fit(cls, counts: NgramCounts, n: int, sublinear: bool) -> "Features":
        from sklearn.feature_extraction.text import TfidfTransformer

        columns = counts.columns(n)
        tfidf = TfidfTransformer(sublinear_tf=sublinear)
        return cls(columns, tfidf, tfidf.fit_transform(counts.train[:, columns]))

    def transform(self, counts_matrix):
        return self.tfidf.transform(counts_matrix[:, self.columns])  # (M, G_n)


def class_logits(model, x) -> np.ndarray:
    """(M, K) scores whose softmax is the model's predict_proba: the decision function, and for two classes the
    column [0, w.v + b], since softmax([0, s]) = [1 - sigmoid(s), sigmoid(s)]."""
    scores = model.decision_function(x)  # (M,) for two classes, else (M, K)
    if scores.ndim == 1:
        scores = np.column_stack([np.zeros_like(scores), scores])  # (M, 2)
    return scores


def report(model, x, y: np.ndarray, label_names: list[str]) -> dict:
    logits = class_logits(model, x)  # (M, K)
    return metrics.classification_report(y, logits.argmax(axis=1), len(label_names), label_names, logits)


# -- one run ------------------------------------------------------------------------------------------------


def grid_settings(o: BaselineOptions) -> list[dict]:
    """Every setting, in the order that breaks ties: fewer n-grams, then plain tf, then smaller C."""
    return [{"ngram_range": [1, n], "sublinear_tf": s, "C": c}
            for n in sorted(o.ngram_max) for s in (False, True) for c in sorted(o.c_values)]


def fit_logistic_regression(x, y: np.ndarray, c: float, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded per setting as "converged" instead
        model.fit(x, y)
    return model


def run_one_seed(o: BaselineOptions, seed: int, task: TaskData, log=print) -> dict:
    started = time.time()
    names = task.label_names
    y_train, y_val = labels_of(task.train), labels_of(task.validation)
    # 1. Count character n-grams on the training split (vocabulary from training texts only).
    counts = NgramCounts(texts_of(task.train), max(o.ngram_max))
    val_counts = counts.counts(texts_of(task.validation))
    # 2. Every setting: fit on the training split, score the validation split.
    grid, best, best_model, best_features = [], None, None, None
    f, f_key = None, None
    for setting in grid_settings(o):
        key = (setting["ngram_range"][1], setting["sublinear_tf"])
        if key != f_key:  # the grid is ordered so each (n, sublinear) is weighted once
            f, f_key = Features.fit(counts, *key), key
        t0 = time.time()
        model = fit_logistic_regression(f.train, y_train, setting["C"], seed)
        val = report(model, f.transform(val_counts), y_val, names)
        record = {**setting, "features": int(f.train.shape[1]),
                  "validation": {k: val[k] for k in ("loss", "accuracy", "macro_f1")},
                  "converged": bool(np.all(model.n_iter_ < MAX_ITER)), "seconds": round(time.time() - t0, 2)}
        grid.append(record)
        log(f"  char {setting['ngram_range'][0]}-{setting['ngram_range'][1]}  sublinear "
            f"{'on ' if setting['sublinear_tf'] else 'off'}  C {setting['C']:<5g}  validation accuracy "
            f"{val['accuracy']:.4f}  macro-F1 {val['macro_f1']:.4f}  ({record['seconds']:.1f}s)")
        # 3. Keep the best by validation score; a tie keeps the earlier setting.
        if best is None or val[o.metric] > best[1][o.metric]:
            best, best_model, best_features = (setting, val), model, f
    chosen, validation = best
    # 4. The test split, scored once, by the chosen model (fitted on the training split with the chosen setting).
    test = report(best_model, best_features.transform(counts.counts(texts_of(task.test))), labels_of(task.test),
                  names)
    return {
        "seed": seed,
        "chosen": {**chosen, "features": int(best_features.train.shape[1])},
        "grid": grid,
        "validation": validation,
        "test": test,
        "train_seconds": round(time.time() - started, 1),
    }


# -- the command --------------------------------------------------------------------------------------------


def given_options(o: BaselineOptions) -> set[str]:
    """The options whose value is not their default: what was given, when the command line is not at hand."""
    defaults = BaselineOptions()
    return {f.name for f in dataclasses.fields(o) if getattr(o, f.name) != getattr(defaults, f.name)}


def check_options(o: BaselineOptions, given: set[str] | None = None) -> None:
    """Every option's range, and no option of the other task among those `given` (default: those not at their
    default), before any work is done; InputError names the option."""
    given = given_options(o) if given is None else given
    foreign = NER_ONLY if o.task == "classification" else CLASSIFICATION_ONLY
    for name in (n for n in foreign if n in given):
        flag, other = "--" + name.replace("_", "-"), "ner" if o.task == "classification" else "classification"
        raise InputError(f"{flag} does not apply to --task {o.task} (it is an option of --task {other}); leave it "
                         "out")
    checks = [
        (all(n >= 1 for n in o.ngram_max), "--ngram-max values must be at least 1"),
        (all(math.isfinite(c) for c in o.c_values), "--c-values must be finite numbers"),
        (all(c > 0 for c in o.c_values), "--c-values must be positive"),
        (all(math.isfinite(c) and c >= 0 for c in o.c1_values or ()), "--c1-values must be finite numbers, 0 or "
                                                                         "more"),
        (all(math.isfinite(c) and c >= 0 for c in o.c2_values or ()), "--c2-values must be finite numbers, 0 or "
                                                                         "more"),
        (0 <= o.max_iterations < ner_crf.NO_LIMIT, f"--max-iterations must be between 0 (until converged) and "
                                                   f"{ner_crf.NO_LIMIT - 1}"),
        # the solver's random_state: scikit-learn takes 0 to 2**32 - 1 (and the draws of --task ner, the same)
        (all(0 <= s < 2**32 for s in o.seeds), "--seeds must be between 0 and 2**32 - 1"),
        (len(set(o.seeds)) == len(o.seeds), "--seeds must be distinct"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def load_data(o: BaselineOptions) -> TaskData:
    """The task exactly as train.finetune reads it: same split, same --train-examples draw (by --split-seed)."""
    task = load_task(o.train, o.validation, o.test, Columns(o.text_column, o.text_pair_column, o.label_column),
                     o.split_seed)
    if o.train_examples is not None:
        task = subsample_train(task, o.train_examples, o.split_seed)
    return task


def prepare_out(o: BaselineOptions) -> OutDir:
    """--out, checked before any work (the grid takes minutes): a new or empty directory that can be written."""
    name = f"baseline{'-ner' if o.task == 'ner' else ''}-{datetime.now():%Y%m%d-%H%M%S}"
    out = inspect_out(Path(o.out) if o.out else Path(o.runs_dir) / name, BASELINE_RUN)
    if out.state is OutState.RUN:
        raise InputError(f"--out {out.path} already holds a baseline run; choose another --out (nothing in it was "
                         "changed)")
    check_usable(out)  # a file, a directory holding anything else, or one that cannot be written: refused
    return out


def run_header(o: BaselineOptions, task: TaskData) -> dict:
    return {
        "model": MODEL,
        "task": task.source,
        "label_names": task.label_names,
        "sizes": {"train": len(task.train), "validation": len(task.validation), "test": len(task.test)},
        "label_counts": {split: label_counts(getattr(task, split), task.label_names)
                         for split in ("train", "validation", "test")},
        "data_notes": task.notes,
        "options": dataclasses.asdict(o),
    }


def describe(chosen: dict) -> str:
    lo, hi = chosen["ngram_range"]
    return f"char {lo}-{hi}-grams, C = {chosen['C']:g}, sublinear tf {'on' if chosen['sublinear_tf'] else 'off'}"


def require(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise InputError(f"the baseline needs {package}: pip install -e \".[baseline]\"") from None


def run(o: BaselineOptions, given: set[str] | None = None) -> dict:
    """Everything `main` does, returning what it writes to results.json; `given`: the options on the command line
    (default: those not at their default)."""
    given = given_options(o) if given is None else given
    check_options(o, given)
    if o.task == "ner" and "seeds" not in given:
        o = dataclasses.replace(o, seeds=[o.split_seed])  # one draw, --split-seed's
    require(*(("sklearn", "scikit-learn") if o.task == "classification" else ("pycrfsuite", "python-crfsuite")))
    out = prepare_out(o)
    data = load_data(o) if o.task == "classification" else load_ner_draws(o)
    for note in data.notes:
        warn(note)
    # Claimed (created, locked) once the data is known good; released on any failure or signal, so that nothing of
    # the run is left, nor the directory if it made it. results.json is written atomically, at the end.
    run_dir = claim(out, BASELINE_RUN, ENTRIES)
    try:
        results = fit_and_report(o, data) if o.task == "classification" else fit_and_report_ner(o, data)
        write_json(out.path / "results.json", results)
    except BaseException:
        run_dir.release()
        raise
    run_dir.close()
    print(f"wrote {out.path}")
    return results


def fit_and_report(o: BaselineOptions, task: TaskData) -> dict:
    """Every seed's grid and test score, printed as they come; returns what results.json holds."""
    print(f"{MODEL}; task: {task.source}; train {len(task.train)}, validation {len(task.validation)}, test "
          f"{len(task.test)}; labels {', '.join(task.label_names)}", flush=True)
    runs = {}
    for seed in o.seeds:
        print(f"seed {seed}: validation grid ({o.metric} chooses)", flush=True)
        runs[seed] = run_one_seed(o, seed, task, log=lambda line: print(line, flush=True))
        print(f"seed {seed}: chose {describe(runs[seed]['chosen'])}", flush=True)
    results = run_header(o, task)
    one = next(iter(runs.values()))  # the titles of a single seed's tables
    metrics.report_seeds(results, runs, f"validation (chosen: {describe(one['chosen'])})",
                         "test (scored once, chosen setting)")
    return results


# -- --task ner: the CRF of train.ner_crf --------------------------------------------------------------------


def load_ner_draws(o: BaselineOptions) -> ner_crf.NerDraws:
    """The task as every NER command reads it, and seed S's draw of --train-examples sentences, made with seed S."""
    from train.ner_data import load_ner_task, subsample_ner_train

    task = load_ner_task(o.train, o.validation, o.test, o.split_seed)
    if o.train_examples is None:
        return ner_crf.NerDraws(task, {s: task for s in o.seeds})
    return ner_crf.NerDraws(task, {s: subsample_ner_train(task, o.train_examples, s) for s in o.seeds})


def fit_and_report_ner(o: BaselineOptions, data: ner_crf.NerDraws) -> dict:
    """Every draw's grid and test score (printed as they come), and the tables; returns what results.json holds."""
    settings = ner_crf.grid_settings(o.c1_values, o.c2_values, len(next(iter(data.draws.values())).train))
    runs = ner_crf.fit_draws(data, settings, o.max_iterations or None)
    results = {**ner_crf.results_header(data), "options": dataclasses.asdict(o)}
    ner_crf.report_draws(results, runs)
    return results


@command_main
def main(argv: list[str] | None = None) -> None:
    o, given = parse_options(BaselineOptions, argv, __doc__.split("\n\n")[0], "python -m train.baseline")
    run(o, given)


if __name__ == "__main__":
    sys.exit(main())
