"""The classic named-entity baseline: a linear-chain CRF (CRFsuite, through python-crfsuite) on hand-made features of
each token and its neighbours, its regularisation chosen on the validation split only.

The model, for a sentence x of tokens x_1..x_T (characters for the built-in task) and tags y_1..y_T:

    score(x, y) = Σ_t Σ_f w[f, y_t] [f fires at position t of x]  +  Σ_t A[y_{t-1}, y_t]
    p(y | x)    = exp score(x, y) / Σ_y' exp score(x, y')              (the sum by the forward algorithm)
    w, A        = argmin  -Σ_n ln p(y_n | x_n) + c1 Σ |θ| + c2 Σ θ²    (θ: every weight of w and A; CRFsuite's
                                                                         L-BFGS, OWL-QN when c1 > 0)

and the tags of a sentence are the argmax of p(y | x) (Viterbi). The features at position t (`token_features`):
the token itself; each neighbour within two positions (a position beyond the sentence reads as a boundary symbol);
the four token bigrams inside that window; whether the token is a digit, ASCII letters, or punctuation; and
markers on the first and the last token. c1 (L1, which also zeroes weights and so prunes the feature set) and c2
(L2) come from a small grid: each setting is fitted on the training split and scored on the validation split
(entity F1, `train.ner_metrics`); the best, ties going to the earlier setting (smaller c1, then smaller c2), is the
one model that scores the test split.
"""

from __future__ import annotations

import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from train.metrics import report_seeds
from train.ner_metrics import format_ner_report, ner_report, summarize_ner_reports

if TYPE_CHECKING:
    from train.ner_data import NerTask, Sentence

MODEL = "linear-chain CRF on character features (CRFsuite via python-crfsuite, L-BFGS)"
BEFORE, AFTER = "<s>", "</s>"  # what a window position beyond the sentence's start or end reads
WINDOW = 2  # neighbours on each side
# The iteration cap and the default grid. A fit's cost grows with the training sentences (~0.1 s per L-BFGS
# iteration at 1,000 built-in sentences, ~15 times that on the whole training split). At 1,000 sentences a fit
# converges in 300 to 600 iterations; 100 come within 0.1 validation F1 point of it at a third of the cost or less.
MAX_ITERATIONS = 100
C1_VALUES = (0.0, 0.05, 0.2)
C2_VALUES = (0.01, 0.1, 1.0)
# Above LARGE_TRAIN training sentences the default grid leaves out the strongest penalties, c1 0.2 and c2 1 (at
# 1,000 sentences already below the others of their row, and more data needs less regularisation): 4 fits, not 9.
LARGE_TRAIN = 5000
LARGE_C1_VALUES = (0.0, 0.05)
LARGE_C2_VALUES = (0.01, 0.1)
NO_LIMIT = 2**31 - 1  # CRFsuite's own default for max_iterations: until L-BFGS converges


# -- features -----------------------------------------------------------------------------------------------


def _is_punctuation(token: str) -> bool:
    return all(unicodedata.category(ch).startswith("P") for ch in token)


def token_features(tokens: Sequence[str]) -> list[list[str]]:
    """The names of the features that fire at each position of a sentence (each with value 1)."""
    n = len(tokens)
    padded = [BEFORE] * WINDOW + list(tokens) + [AFTER] * WINDOW  # position t of tokens is t + WINDOW here
    out = []
    for t, token in enumerate(tokens):
        window = padded[t:t + 2 * WINDOW + 1]  # tokens t-2 .. t+2
        f = ["bias", f"w[0]={token}"]
        f += [f"w[{o:+d}]={window[o + WINDOW]}" for o in range(-WINDOW, WINDOW + 1) if o]
        # the bigram starting at offset o: (t+o, t+o+1), every pair inside the window
        f += [f"w[{o:+d}:{o + 1:+d}]={window[o + WINDOW]}|{window[o + WINDOW + 1]}" for o in range(-WINDOW, WINDOW)]
        if token.isdigit():
            f.append("digit")
        if token.isascii() and token.isalpha():
            f.append("ascii_letters")
        if _is_punctuation(token):
            f.append("punctuation")
        if t == 0:
            f.append("sentence_begin")
        if t == n - 1:
            f.append("sentence_end")
        out.append(f)
    return out


# -- fitting and tagging ------------------------------------------------------------------------------------


class CrfModel:
    """A fitted CRF, held in memory (the model file's bytes), that tags sentences."""

    def __init__(self, data: bytes):
        import pycrfsuite

        self.data = data
        self.tagger = pycrfsuite.Tagger()
        self.tagger.open_inmemory(data)

    def predict(self, sentences: Sequence[Sentence]) -> list[tuple[str, ...]]:
        return [tuple(self.tagger.tag(token_features(s.tokens))) if s.tokens else () for s in sentences]

    def info(self) -> dict:
        """How many state features (feature, tag) and transitions the model kept (nonzero weights)."""
        info = self.tagger.info()
        return {"state_features": len(info.state_features), "transitions": len(info.transitions)}


class CrfTrainer:
    """The training split's features, computed once (kept by CRFsuite, compactly, as attribute ids), and fitted
    once per setting of the grid."""

    def __init__(self, train: Sequence[Sentence]):
        import pycrfsuite

        self.trainer = pycrfsuite.Trainer(verbose=False)
        for s in train:
            if s.tokens:  # an empty sentence teaches nothing (and CRFsuite refuses one)
                self.trainer.append(token_features(s.tokens), list(s.tags))

    def fit(self, c1: float, c2: float, max_iterations: int | None) -> tuple[CrfModel, int]:
        """The model of one setting and the number of L-BFGS iterations it took. CRFsuite writes the model to a
        file; it lives in a temporary directory, removed as soon as its bytes are read (or the fit fails)."""
        # every parameter set on every fit: CRFsuite keeps a parameter from the previous fit otherwise
        self.trainer.set_params({"c1": c1, "c2": c2, "feature.possible_transitions": True,
                                 "max_iterations": NO_LIMIT if max_iterations is None else max_iterations})
        with tempfile.TemporaryDirectory(prefix="minibert-crf-") as directory:
            path = Path(directory) / "model.crfsuite"
            self.trainer.train(str(path))
            data = path.read_bytes()
        return CrfModel(data), int(self.trainer.logparser.last_iteration["num"])


def grid_settings(c1_values: Sequence[float] | None, c2_values: Sequence[float] | None, n_train: int) -> list[dict]:
    """Every (c1, c2), in the order that breaks ties: smaller c1, then smaller c2. None: the default values for
    `n_train` training sentences (the smaller grid above LARGE_TRAIN)."""
    large = n_train > LARGE_TRAIN
    c1_values = c1_values or (LARGE_C1_VALUES if large else C1_VALUES)
    c2_values = c2_values or (LARGE_C2_VALUES if large else C2_VALUES)
    return [{"c1": c1, "c2": c2} for c1 in sorted(c1_values) for c2 in sorted(c2_values)]


def score(model: CrfModel, sentences: Sequence[Sentence]) -> dict:
    return ner_report([s.tags for s in sentences], model.predict(sentences))


def run_draw(train: Sequence[Sentence], validation: Sequence[Sentence], test: Sequence[Sentence],
             settings: Sequence[dict], max_iterations: int | None, log: Callable[[str], None] = print) -> dict:
    """One training set's grid: every setting fitted on `train` and scored on `validation`, the best (by entity F1;
    a tie keeps the earlier setting) scores `test`, once. Returns the chosen setting, the grid, both reports."""
    started = time.time()
    trainer = CrfTrainer(train)
    grid, best = [], None
    for setting in settings:
        t0 = time.time()
        model, iterations = trainer.fit(setting["c1"], setting["c2"], max_iterations)
        val = score(model, validation)
        record = {**setting, **model.info(), "iterations": iterations,
                  "stopped_at_max_iterations": max_iterations is not None and iterations >= max_iterations,
                  "validation": {k: val[k] for k in ("precision", "recall", "f1", "token_accuracy")},
                  "seconds": round(time.time() - t0, 2)}
        grid.append(record)
        log(f"  c1 {setting['c1']:<6g} c2 {setting['c2']:<6g} validation F1 {100 * val['f1']:6.2f}  (P "
            f"{100 * val['precision']:.2f}, R {100 * val['recall']:.2f}; {iterations} iterations, "
            f"{record['seconds']:.1f}s)")
        if best is None or val["f1"] > best[1]["f1"]:
            best = (record, val, model)
    chosen, validation_report, model = best
    return {
        "chosen": {k: chosen[k] for k in ("c1", "c2", "state_features", "transitions", "iterations")},
        "grid": grid,
        "validation": validation_report,
        "test": score(model, test),
        "train_seconds": round(time.time() - started, 1),
    }


# -- the draws of one command ------------------------------------------------------------------------------


@dataclass
class NerDraws:
    """A named-entity task and the training draws to fit, one per seed (each the task with its training split
    replaced; the same object for seeds that draw the same sentences)."""

    task: NerTask
    draws: dict[int, NerTask]

    @property
    def notes(self) -> list[str]:
        """The task's notes and each draw's, each once, in order."""
        return list(dict.fromkeys(n for d in self.draws.values() for n in d.notes))


def results_header(data: NerDraws) -> dict:
    """What results.json says of the model and the data: sizes, entities per type in each split and draw."""
    from train.ner_data import entity_counts

    task, first = data.task, next(iter(data.draws.values()))
    return {
        "model": MODEL,
        "task": task.source,
        "label_names": task.label_names,
        "sizes": {"train": len(first.train), "validation": len(task.validation), "test": len(task.test)},
        "entity_counts": {"validation": entity_counts(task.validation), "test": entity_counts(task.test),
                          "train": {str(s): entity_counts(d.train) for s, d in data.draws.items()}},
        "data_notes": data.notes,
    }


def fit_draws(data: NerDraws, settings: Sequence[dict], max_iterations: int | None) -> dict[int, dict]:
    """`run_draw` for every draw, printed as it comes; a draw of the same sentences as an earlier one (no
    --train-examples: every draw is the whole split) reuses its result, the fits being deterministic."""
    task = data.task
    print(f"{MODEL}; task: {task.source}; train {len(next(iter(data.draws.values())).train)}, validation "
          f"{len(task.validation)}, test {len(task.test)}; labels {', '.join(task.label_names)}", flush=True)
    runs, fitted = {}, {}
    for seed, draw in data.draws.items():
        print(f"draw {seed}: validation grid (entity F1 chooses)", flush=True)
        if id(draw) not in fitted:
            fitted[id(draw)] = run_draw(draw.train, task.validation, task.test, settings, max_iterations,
                                        log=lambda line: print(line, flush=True))
        runs[seed] = {"seed": seed, **fitted[id(draw)]}
        print(f"draw {seed}: chose {describe(runs[seed]['chosen'])}", flush=True)
    return runs


def describe(chosen: dict) -> str:
    return f"c1 = {chosen['c1']:g}, c2 = {chosen['c2']:g}"


def report_draws(results: dict, runs: dict) -> None:
    """Put the runs of each draw into `results` and print their tables (`train.metrics.report_seeds`, with the
    entity-level report and summary): one draw's reports as they are, several as `runs` plus the mean ± sample std
    over draws of every score."""
    one = next(iter(runs.values()))
    report_seeds(results, runs, f"validation (chosen: {describe(one['chosen'])})", "test (scored once, chosen setting)",
                 format_report=format_ner_report, summarize_reports=summarize_ner_reports)
