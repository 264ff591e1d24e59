"""python -m train.curve: the learning curve, test accuracy (or, for named entities, entity F1) against the number of
labelled training examples, for the pretrained model, the from-scratch control and the classic baseline (TF-IDF +
logistic regression; for --task ner a CRF), over several seeds.

    python -m train.curve                                      # latest runs/pretrain-*/, budgets 500 1000 3000 all
    python -m train.curve --task ner --init runs/pretrain-news # People's Daily entities, budgets 100 300 1000 all
    python -m train.curve --init runs/pretrain-A runs/pretrain-E --labels mlm electra
    python -m train.curve --budgets 1000 all --seeds 0 --no-baseline --finetune-args "--lr 3e-4"
    python -m train.curve --jobs 2                             # two cells at once, on a machine with spare cores

Every cell (model, budget, seed) is its own process, `python -m train.finetune` or `python -m train.baseline` with
`--out OUT/cells/CELL`: a cell that fails or is interrupted takes nothing else with it, and memory is returned after
each. A cell is recorded in `OUT/curve.json` as soon as it finishes, so running the same command again (or
`--resume`, which finds the latest RUNS_DIR/curve-*/) skips the cells already done, continues an interrupted
fine-tuning cell from its last whole epoch (`train.finetune --resume`) and reruns any other from its start. A
recorded cell whose command line would now differ is an error, so one curve never mixes recipes. A cell that fails
stops the curve: the cells still running are stopped, the cells done are kept, and one line gives the cell's error.
SIGINT (Ctrl-C) or SIGTERM stops the running cells the same way (each saves its last whole epoch), waits for them,
and exits with 130 or 143; no cell outlives the curve. One curve at a time works in a directory (its lock).

The same draws for every model: the cell (budget N, seed S) of every model runs with `--train-examples N
--split-seed S --seeds S`, so seed S gives its own stratified draw of N training examples
(`train.finetune_data.subsample_train`), and the pretrained model, the control and the baseline all train on that
same draw, judged on the same validation and test splits. The built-in task's split is fixed, so there the seed
changes only the draw (and the neural models' initialisation and batch order); a single --train file is also split
80/10/10 by --split-seed, so there each seed is a different split as well (give --validation and --test files to
hold the evaluation sets fixed). The budget "all" uses every training example: its seeds differ only in training
randomness, which the deterministic baseline does not have.

Fine-tuning epochs, unless --epochs says otherwise: E(N) = min(10, max(3, ceil(1000 / ceil(N / B)))), B the batch
size: at least 1,000 optimiser steps where 10 epochs reach them, never fewer epochs than train.finetune's default 3
nor more than 10. With the default batch of 32 that is 10 epochs for 500, 1,000 and 3,000 labels and 3 for all
13,891, the recipe of README's learning curve. For --task ner a budget counts sentences.

Outputs in --out: `curve.json` (every cell: test accuracy and macro F1, or entity F1, precision and recall;
validation scores, seconds, command), `curve.md` (mean ± sample std per budget and model, and the time taken),
`curve.png` (the headline score against labels on a log axis, one line per model, its spread as error bars),
`cells/` (each cell's own results.json) and `logs/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from minibert.errors import InputError
from minibert.rundir import OutDir, OutState, RunKind, check_usable, claim, inspect_out
from train import metrics
from tokenizer.command import build_parser, opt
from tokenizer.command import parse_options as parse_command_options
from train.cli import RUNS_DIR, TaskFiles, write_json
from train.signals import StopSignals
from tokenizer.command import command_main

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUDGETS = {"classification": ("500", "1000", "3000", "all"), "ner": ("100", "300", "1000", "all")}
# The test scores a cell records, the first the curve's headline (its picture), by task; and their names.
SCORES = {"classification": ("accuracy", "macro_f1"), "ner": ("f1", "precision", "recall")}
SCORE_NAMES = {"accuracy": "test accuracy", "macro_f1": "test macro F1", "f1": "test entity F1",
               "precision": "test entity precision", "recall": "test entity recall"}
BASELINE_MODELS = {"classification": "TF-IDF character n-grams + logistic regression, tuned on validation",
                   "ner": "a linear-chain CRF on character features (python-crfsuite), c1 and c2 tuned on validation"}
MIN_STEPS, MIN_EPOCHS, MAX_EPOCHS = 1000, 3, 10  # the epochs rule of the module docstring
SCRATCH, BASELINE = "scratch", "baseline"
# Options the curve sets for every cell itself; --finetune-args / --baseline-args may not set them.
OWNED = {"init", "from_scratch", "out", "runs_dir", "seeds", "split_seed", "train_examples", "epochs", "task",
         "train", "validation", "test", "text_column", "text_pair_column", "label_column"}
DATA_OPTIONS = ("task", "train", "validation", "test", "text_column", "text_pair_column", "label_column")


@dataclass
class CurveOptions(TaskFiles):
    """train.curve's options; the task's (--train ... --label-column), passed to every cell, from
    `train.cli.TaskFiles`."""

    out: str | None = opt(None, "the curve's directory; an existing one is resumed. none: RUNS_DIR/curve-YYYYmmdd "
                          "(so the same command on the same day resumes)", metavar="DIR")
    runs_dir: str = opt(RUNS_DIR, "where the latest pretraining run (no --init) and the latest curve (--resume) are "
                        "looked for, and where the default --out goes", metavar="DIR")
    resume: bool = opt(False, "without --out: resume the latest RUNS_DIR/curve-*/ instead of today's")
    plot_only: bool = opt(False, "run nothing: rewrite curve.md and curve.png from the curve.json in --out (or the "
                          "latest curve)")
    # -- what is measured
    budgets: list[str] = opt((), "numbers of labelled training examples (each drawn as train.finetune "
                             "--train-examples draws them), 'all' for every one. none: 500 1000 3000 all, or for "
                             "--task ner 100 300 1000 all (sentences)", metavar="N")
    seeds: list[int] = opt((0, 1, 2), "seeds: seed S draws its own training examples (--split-seed S) and seeds "
                           "the training (--seeds S), the same for every model", metavar="SEED")
    # --init and --labels extend: repeat the option or list several after one
    init: list[str] = opt((), "pretrained runs to fine-tune, each its own line (repeat the option or list several). "
                          "none: the latest RUNS_DIR/pretrain-*/, as train.finetune chooses it", action="extend",
                          nargs="+", metavar="DIR")
    labels: list[str] = opt((), "a name for each --init, in order (letters, digits, . _ -). none: the run "
                            "directories' names", action="extend", nargs="+", metavar="NAME")
    scratch: bool = opt(True, "the from-scratch control: the first --init's architecture and tokenizer, random "
                        "weights (train.finetune --from-scratch)")
    baseline: bool = opt(True, "the classic baseline (python -m train.baseline): TF-IDF + logistic regression, or "
                         "for --task ner a CRF")
    epochs: list[int] = opt((), "fine-tuning epochs: one number for every budget, or one per budget in --budgets "
                            "order. none: the rule of --help's description (10 for few labels, 3 for all)",
                            metavar="E")
    finetune_args: str = opt("", "more options for every train.finetune cell, as one string, e.g. "
                             "\"--lr 3e-4 --batch-size 16\" (not the options the curve sets)", metavar="ARGS")
    baseline_args: str = opt("", "more options for every train.baseline cell, e.g. \"--c-values 10 30\"",
                             metavar="ARGS")
    max_cells: int | None = opt(None, "run at most this many cells, then stop (rerun to continue); none: all",
                                metavar="N")
    jobs: int = opt(1, "cells run at once, each its own process; with more than one, each cell gets "
                    "OMP_NUM_THREADS = CPU cores / jobs unless OMP_NUM_THREADS is set", metavar="N")


def parse_options(argv: list[str] | None = None) -> CurveOptions:
    """The curve's options (the description: this module's docstring)."""
    return parse_command_options(CurveOptions, argv, __doc__, "python -m train.curve")[0]


# -- the plan -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    label: str
    kind: str  # "pretrained", "scratch" or "baseline"
    init: str | None  # the pretrained run (for scratch: whose architecture)


@dataclass(frozen=True)
class Cell:
    model: Model
    budget: str  # "500" ... or "all"
    seed: int
    module: str  # train.finetune or train.baseline
    args: tuple[str, ...]  # everything but --out

    @property
    def name(self) -> str:
        return f"{self.model.label}-n{self.budget}-s{self.seed}"


def _given(parser: argparse.ArgumentParser, tokens: list[str], what: str) -> set[str]:
    """The destinations that `tokens` set (abbreviations included), checked against `parser`."""
    sentinel = object()
    parser.set_defaults(**{dest: sentinel for dest in vars(parser.parse_known_args([])[0])})
    ns, unknown = parser.parse_known_args(tokens)
    if unknown:
        raise InputError(f"{what}: {parser.prog} does not take `{shlex.join(unknown)}`; see {parser.prog} --help")
    return {k for k, v in vars(ns).items() if v is not sentinel}


def split_args(text: str, parser: argparse.ArgumentParser, what: str) -> tuple[list[str], set[str]]:
    try:
        tokens = shlex.split(text)
    except ValueError as err:
        raise InputError(f"{what}: {err}") from None
    given = _given(parser, tokens, what)
    clash = sorted(given & OWNED)
    if clash:
        flags = ", ".join("--" + d.replace("_", "-") for d in clash)
        raise InputError(f"{what} sets {flags}, which the curve sets for every cell; use the curve's own options "
                         "(--budgets, --seeds, --init, --epochs, the data options)")
    return tokens, given


def epochs_for(n: int, batch_size: int) -> int:
    """E(N) = min(10, max(3, ceil(1000 / ceil(N / B))))."""
    return min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(MIN_STEPS / math.ceil(n / batch_size))))


def budget_size(budget: str, n_train: int) -> int:
    return n_train if budget == "all" else int(budget)


def check_budgets(budgets: list[str], n_train: int, n_labels: int) -> list[str]:
    """The budgets as given ("all" or whole numbers), each at most the training set, sorted with "all" last."""
    for b in budgets:
        if b != "all" and not re.fullmatch(r"[0-9]+", b):
            raise InputError(f"--budgets {b}: give whole numbers of examples or 'all'")
        if b != "all" and not n_labels <= int(b) <= n_train:
            raise InputError(f"--budgets {b}: must be between {n_labels} (one per label) and {n_train} (the "
                             "training examples there are), or 'all'")
    if len(set(budgets)) != len(budgets):
        raise InputError("--budgets must be distinct")
    return sorted(budgets, key=lambda b: (b == "all", int(b) if b != "all" else 0))


def models_of(o: CurveOptions) -> list[Model]:
    from train.finetune import latest_pretraining_run

    inits = [str(Path(p)) for p in o.init] or [str(latest_pretraining_run(Path(o.runs_dir)))]
    for p in inits:
        if not Path(p).is_dir():
            raise InputError(f"--init {p}: no such directory")
    if o.labels and len(o.labels) != len(inits):
        raise InputError(f"--labels: {len(o.labels)} name(s) for {len(inits)} --init run(s); give one per run")
    labels = o.labels or [Path(p).name for p in inits]
    # Without --labels the names are the runs' directory names: a message about them names those, not --labels.
    named = "--labels" if o.labels else "the --init runs' directory names (the labels when --labels is not given)"
    for label, init in zip(labels, inits):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
            what = f"--labels {label!r}" if o.labels else f"--init {init}: its directory name {label!r}"
            raise InputError(f"{what} cannot name a model: use letters, digits, '.', '_' or '-' (it names "
                             f"directories){'' if o.labels else '; give --labels with a name for each --init'}")
    if len(set(labels)) != len(labels) or {SCRATCH, BASELINE} & set(labels):
        raise InputError(f"{named} must be distinct and not {SCRATCH!r} or {BASELINE!r}: {', '.join(labels)}"
                         f"{'' if o.labels else '; give --labels with a distinct name for each --init'}")
    models = [Model(label, "pretrained", p) for label, p in zip(labels, inits)]
    if o.scratch:
        models.append(Model(SCRATCH, "scratch", inits[0]))
    if o.baseline:
        models.append(Model(BASELINE, "baseline", None))
    return models


def plan(o: CurveOptions, models: list[Model], budgets: list[str], n_train: int) -> list[Cell]:
    """Every cell, small budgets first, so the cheap end of the curve is there soonest."""
    from train import baseline as bl
    from train import finetune as ft

    ft_tokens, _ = split_args(o.finetune_args, ft.build_parser(), "--finetune-args")
    bl_tokens, _ = split_args(o.baseline_args, build_parser(bl.BaselineOptions, "", "python -m train.baseline"),
                              "--baseline-args")
    # The cells' own range checks, here, before any cell runs (a cell that fails stops the curve).
    task = ["--task", o.task]  # each cell is given the curve's task (a data option)
    ft_options = parse_command_options(ft.Options, [*task, *ft_tokens], "", "python -m train.finetune")[0]
    bl_options = parse_command_options(bl.BaselineOptions, [*task, *bl_tokens], "", "python -m train.baseline")[0]
    for what, check, options in (("--finetune-args", ft.check_options, ft_options),
                                 ("--baseline-args", bl.check_options, bl_options)):
        try:
            check(options)
        except InputError as err:
            raise InputError(f"{what}: {err}") from None
    batch_size = ft_options.batch_size
    listed = list(o.budgets or DEFAULT_BUDGETS[o.task])  # in the order given, which --epochs follows
    if o.epochs and len(o.epochs) not in (1, len(listed)):
        raise InputError(f"--epochs: give one number, or one per budget ({len(listed)})")
    if any(e < 1 for e in o.epochs):
        raise InputError("--epochs must be at least 1")
    given_epochs = dict(zip(listed, o.epochs * len(listed) if len(o.epochs) == 1 else o.epochs))
    data = []
    for name in DATA_OPTIONS:
        value = getattr(o, name)
        if value is not None and value != CurveOptions.__dataclass_fields__[name].default:
            data += ["--" + name.replace("_", "-"), str(value)]
    cells = []
    for budget in budgets:
        draw = [] if budget == "all" else ["--train-examples", budget]
        epochs = given_epochs.get(budget) or epochs_for(budget_size(budget, n_train), batch_size)
        for seed in o.seeds:
            common = ["--seeds", str(seed), "--split-seed", str(seed), *draw, *data]
            for m in models:
                if m.kind == "baseline":
                    cells.append(Cell(m, budget, seed, "train.baseline", tuple(common + bl_tokens)))
                    continue
                init = ["--init", m.init] + (["--from-scratch"] if m.kind == "scratch" else [])
                args = init + common + ["--epochs", str(epochs)] + ft_tokens
                cells.append(Cell(m, budget, seed, "train.finetune", tuple(args)))
    return cells


# -- the record ---------------------------------------------------------------------------------------------


CURVE_RUN = RunKind("curve", "learning curve")
CURVE_ENTRIES = ("curve.json", "curve.md", "curve.png", "cells", "logs")  # what a curve writes into its --out

# What the table and the picture read from each recorded cell, and its type (a bool is not a number here).
CELL_FIELDS = {"model": str, "kind": str, "budget": str, "seed": int, "train_examples": int,
               "epochs": (int, type(None)), "seconds": (int, float), "module": str, "args": list}
KINDS = ("pretrained", SCRATCH, BASELINE)


def load_record(out: Path) -> dict:
    """OUT/curve.json ({"cells": {}} when there is none yet); InputError naming what is wrong with a malformed one."""
    path = out / "curve.json"
    if not path.is_file():
        return {"cells": {}}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        detail = err.msg if isinstance(err, json.JSONDecodeError) else err
        raise InputError(f"{path}: not valid JSON ({detail}); move it away to start the curve afresh") from None
    check_record(record, path)
    return record


def check_record(record, path: Path) -> None:
    """InputError, naming the cell and field, for a curve.json that train.curve did not write as it is."""
    def bad(what: str) -> InputError:
        return InputError(f"{path}: {what}, so it is not a curve record as train.curve writes it; restore it, or "
                          "move it away to start the curve afresh")

    if not isinstance(record, dict) or not isinstance(record.get("cells"), dict):
        raise bad('no "cells" object')
    if record.get("task_kind", "classification") not in SCORES:
        raise bad(f"its task_kind is not one of {', '.join(SCORES)}")
    fields = {**CELL_FIELDS, **{score: (int, float) for score in SCORES[task_kind(record)]}}
    for name, cell in record["cells"].items():
        if not isinstance(cell, dict):
            raise bad(f"cell {name!r} is not an object")
        for key, types in fields.items():
            value = cell.get(key)
            if not isinstance(value, types) or isinstance(value, bool):
                raise bad(f"cell {name!r} has no valid {key!r}")
        if not re.fullmatch(r"all|[0-9]+", cell["budget"]):
            raise bad(f"cell {name!r} has no valid 'budget'")
    def is_model(m) -> bool:
        return (isinstance(m, dict) and isinstance(m.get("label"), str) and m.get("kind") in KINDS
                and "init" in m and isinstance(m["init"], (str, type(None))))

    models = record.get("models", [])
    if not isinstance(models, list) or not all(map(is_model, models)):
        raise bad('"models" is not a list of models (label, kind, init)')
    if not isinstance(record.get("seeds", []), list):
        raise bad('"seeds" is not a list')


def task_kind(record: dict) -> str:
    """The curve's task: "classification" or "ner"."""
    return record.get("task_kind", "classification")


def cell_record(cell: Cell, results: dict, seconds: float, directory: str, task: str) -> dict:
    test, validation = results["test"], results["validation"]
    scores = {score: test[score] for score in SCORES[task]}
    scores.update({f"validation_{score}": validation[score] for score in SCORES[task]})
    return {
        "model": cell.model.label,
        "kind": cell.model.kind,
        "init": cell.model.init,
        "budget": cell.budget,
        "seed": cell.seed,
        "train_examples": results["sizes"]["train"],
        "epochs": results["options"].get("epochs") if cell.module == "train.finetune" else None,
        **scores,
        "seconds": round(seconds, 1),
        "module": cell.module,
        "args": list(cell.args),
        "dir": directory,
    }


def check_consistent(cells: list[Cell], done: dict) -> None:
    for cell in cells:
        old = done.get(cell.name)
        if old and (old["module"], old["args"]) != (cell.module, list(cell.args)):
            raise InputError(
                f"cell {cell.name} was run as `python -m {old['module']} {shlex.join(old['args'])}` and would now run "
                f"as `python -m {cell.module} {shlex.join(cell.args)}`; use a new --out for a different recipe"
            )


# -- running ------------------------------------------------------------------------------------------------


POLL_SECONDS = 0.2  # how often the curve looks at its running cells
STOP_GRACE_SECONDS = 30  # after a second signal: how long a cell asked twice to stop may take before it is killed


def cell_env(jobs: int = 1) -> dict:
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:  # the cores shared out, not each cell using all of them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class CellFailed(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the curve (its running cells stopped first); `str()` is the line to print."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class Attempt:
    """A cell's process while it runs."""

    cell: Cell
    process: subprocess.Popen
    directory: Path  # its --out, OUT/cells/CELL
    log: Path
    started: float
    resumed: bool


def resumable(directory: Path) -> bool:
    """Whether a cell's directory holds a fine-tuning run that saved some of its work (`train.finetune --resume`
    continues it). InputError when a live process still works in it."""
    from train import finetune as ft

    found = inspect_out(directory, ft.FINETUNE_RUN, option="the cell directory")
    return found.state is OutState.RUN and ft.saved_anything(directory)


def start_cell(cell: Cell, out: Path, jobs: int) -> Attempt:
    """Start one cell as its own process, its output in OUT/logs/CELL.log. An interrupted fine-tuning cell
    continues (--resume); whatever else an earlier attempt left is removed and the cell starts from nothing. The
    cell stays in the curve's process group, so that whatever the terminal sends the group (Ctrl-C, a hangup)
    reaches it too, and it is never left running on its own."""
    directory = out / "cells" / cell.name
    resume = cell.module == "train.finetune" and resumable(directory)
    if directory.exists() and not resume:
        shutil.rmtree(directory)
    log_path = out / "logs" / f"{cell.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", cell.module, "--out", str(directory), *cell.args, *(["--resume"] * resume)]
    with open(log_path, "a" if resume else "w", encoding="utf-8") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=cell_env(jobs))
    return Attempt(cell, process, directory, log_path, time.time(), resume)


def finish(attempt: Attempt) -> tuple[dict, float]:
    """A cell's results.json and seconds, once its process has ended; CellFailed with the cell's error, in one
    line, when it failed."""
    code = attempt.process.returncode
    results_path = attempt.directory / "results.json"
    if code == 0:
        try:
            return json.loads(results_path.read_text(encoding="utf-8")), time.time() - attempt.started
        except (OSError, ValueError) as err:
            raise CellFailed(f"cell {attempt.cell.name} ended without a readable {results_path} ({err}); its log: "
                             f"{attempt.log}", 1) from None
    lines = [ln for ln in attempt.log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "(its log is empty)"
    raise CellFailed(f"cell {attempt.cell.name} failed (exit {code}): {last.removeprefix('error: ')} (its log: "
                     f"{attempt.log})", 2 if code == 2 else 1)


def stop_cells(running: list[Attempt], grace: float | None = None) -> None:
    """Ask every running cell to stop, and wait until each has: SIGTERM, which a fine-tuning cell answers by
    stopping between two steps with its last whole epoch saved (SIGTERM whatever signal the curve got: a cell
    started in the background may ignore SIGINT). A cell that had the signal already (a Ctrl-C reaches the whole
    process group) takes this one as its second and stops at once; what it saved stays. After `grace` seconds,
    one that has not ended is killed."""
    for attempt in running:
        if attempt.process.poll() is None:
            attempt.process.send_signal(signal.SIGTERM)
    for attempt in running:
        try:
            attempt.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            attempt.process.kill()
            attempt.process.wait()


def run_cells(batch: list[Cell], out: Path, jobs: int, started: Callable[[Attempt], None],
              done: Callable[[Attempt, dict, float], None]) -> tuple[int, list[Attempt]] | None:
    """Run the cells of `batch`, up to `jobs` at once, each its own process; `started` and `done` are called as
    each starts and finishes. Returns None when every cell ran, or (signal, the cells it stopped) after SIGINT or
    SIGTERM. A cell that fails raises CellFailed. However it ends, no cell's process is left running."""
    waiting, running = list(batch), []
    with StopSignals() as stop:
        try:
            while waiting or running:
                while waiting and len(running) < jobs and stop.signum is None:
                    running.append(start_cell(waiting.pop(0), out, jobs))
                    started(running[-1])
                if stop.signum is not None:
                    stop_cells(running)
                    for attempt in [a for a in running if a.process.returncode == 0]:  # done before it stopped
                        running.remove(attempt)
                        done(attempt, *finish(attempt))
                    return stop.signum, running
                time.sleep(POLL_SECONDS)
                for attempt in [a for a in running if a.process.poll() is not None]:
                    running.remove(attempt)
                    done(attempt, *finish(attempt))
        except CellFailed:  # the cells still running stop cleanly, their saved epochs kept
            stop_cells(running)
            raise
        except BaseException:  # a second signal, or a fault of the curve's own: stop them, and soon
            stop_cells(running, STOP_GRACE_SECONDS)
            raise
    return None


def default_out(o: CurveOptions) -> Path:
    if o.out:
        return Path(o.out)
    if o.resume or o.plot_only:
        runs = sorted(p for p in Path(o.runs_dir).glob("curve-*") if (p / "curve.json").is_file())
        if not runs:
            raise InputError(f"no curve to {'resume' if o.resume else 'plot'}: no {o.runs_dir}/curve-*/curve.json")
        return runs[-1]
    return Path(o.runs_dir) / f"curve-{datetime.now():%Y%m%d}"


def plan_out(out: Path) -> OutDir:
    """Whether --out may hold this curve: a new or empty directory, or a curve to resume that no process is
    running in; it must be writable. Decided without writing anything."""
    found = inspect_out(out, CURVE_RUN)
    if found.state is OutState.FOREIGN:
        raise InputError(f"--out {out} {found.why}, so it is not a curve to resume; choose a new --out (nothing in "
                         "it was changed)")
    check_usable(found)
    return found


def plot_only(out: Path) -> dict:
    """--plot-only: curve.md and curve.png again from the curve.json in `out`."""
    found = inspect_out(out, CURVE_RUN)
    if found.state is not OutState.RUN:
        raise InputError(f"--plot-only: {out} {found.why or found.state.value}; there is no curve to plot")
    record = load_record(out)
    if not record["cells"]:
        raise InputError(f"{out}: no curve.json with cells to plot")
    with claim(found, CURVE_RUN, ("curve.md", "curve.png"), clear=False):
        write_outputs(out, record)
    return record


def check_curve_options(o: CurveOptions) -> None:
    checks = [
        (o.max_cells is None or o.max_cells >= 1, "--max-cells must be at least 1"),
        (o.jobs >= 1, f"--jobs {o.jobs}: must be at least 1"),
        (bool(o.seeds) and len(set(o.seeds)) == len(o.seeds), "--seeds must be distinct"),
        (all(0 <= s < 2**32 for s in o.seeds), f"--seeds {' '.join(map(str, o.seeds))}: each must be between 0 and "
         "2**32 - 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def task_and_budgets(o: CurveOptions) -> tuple:
    """The curve's task as its cells will read it, and --budgets (or the task's own) checked against it."""
    from train.finetune_data import Columns, load_task
    from train.ner_data import load_ner_task

    if o.task == "ner":
        task = load_ner_task(o.train, o.validation, o.test, 0)
        smallest = 1
    else:
        task = load_task(o.train, o.validation, o.test, Columns(o.text_column, o.text_pair_column, o.label_column))
        smallest = len(task.label_names)  # one example of each label
    return task, check_budgets(list(o.budgets or DEFAULT_BUDGETS[o.task]), len(task.train), smallest)


def run(o: CurveOptions) -> dict:
    """Everything `main` does; returns what it writes to curve.json. Raises CellFailed when a cell fails and
    Interrupted on SIGINT or SIGTERM, the cells done recorded in either case."""
    out = default_out(o)
    if o.plot_only:
        return plot_only(out)
    check_curve_options(o)
    # 1. The directory, checked before any work: new, empty, or a curve no other process is running in.
    found = plan_out(out)
    # 2. The task, read once here to check the budgets (every cell reads it again, the same way).
    task, budgets = task_and_budgets(o)
    # 3. The plan: every (model, budget, seed), and what is already done.
    models = models_of(o)
    cells = plan(o, models, budgets, len(task.train))
    record = load_record(out) if found.state is OutState.RUN else {"cells": {}}
    check_consistent(cells, record["cells"])
    source = task.source
    if o.train and not o.validation:
        source = f"{o.train} split 80/10/10 (stratified, --split-seed = each cell's seed)"
    if record["cells"] and task_kind(record) != o.task:
        raise InputError(f"{out} holds a curve of --task {task_kind(record)}; use a new --out for --task {o.task}")
    record.update(task=source, task_kind=o.task, models=[dataclasses.asdict(m) for m in models], budgets=budgets,
                  seeds=o.seeds)
    headline = SCORES[o.task][0]
    record.setdefault("created", datetime.now().isoformat(timespec="seconds"))
    todo = [c for c in cells if c.name not in record["cells"]]
    # 4. The directory is this curve's from here to the end (its lock): a second curve there is refused.
    with claim(found, CURVE_RUN, CURVE_ENTRIES, clear=False):
        print(f"curve in {out}: {len(cells)} cells ({len(models)} models x {len(budgets)} budgets x {len(o.seeds)} "
              f"seeds), {len(cells) - len(todo)} done before, {len(todo)} to run; task: {source}", flush=True)
        heads = {c.name: f"[{i}/{len(cells)}] {c.model.label} budget={c.budget} seed={c.seed}"
                 for i, c in enumerate(cells, 1)}
        for cell in cells:
            if cell.name in record["cells"]:
                print(f"{heads[cell.name]}: done before ({100 * record['cells'][cell.name][headline]:.1f}%), "
                      "skipped", flush=True)
        batch = todo if o.max_cells is None else todo[:o.max_cells]

        def started(attempt: Attempt) -> None:  # one line per cell alone; with --jobs, a line as each starts
            resumed = " (resumed)" if attempt.resumed else ""
            print(f"{heads[attempt.cell.name]} ...{resumed}", end=" " if o.jobs == 1 else "\n", flush=True)

        def done(attempt: Attempt, results: dict, seconds: float) -> None:
            cell = attempt.cell
            record["cells"][cell.name] = cell_record(cell, results, seconds, f"cells/{cell.name}", o.task)
            record["updated"] = datetime.now().isoformat(timespec="seconds")
            write_json(out / "curve.json", record)
            line = f"{100 * results['test'][headline]:.1f}% in {seconds:.0f} s"  # the headline score
            print(line if o.jobs == 1 else f"{heads[cell.name]}: {line}", flush=True)

        # 5. Each cell as its own process (up to --jobs at once), recorded as soon as it finishes.
        try:
            stopped = run_cells(batch, out, o.jobs, started, done)
        except BaseException:
            if o.jobs == 1:
                print(flush=True)  # end the line of the cell that was running, before the error's
            raise
        finally:
            # 6. The table and the picture, from whatever is done (also after a failure or an interruption).
            write_json(out / "curve.json", record)
            if record["cells"]:
                write_outputs(out, record)
        if stopped is not None:
            signum, cut = stopped
            if o.jobs == 1 and cut:
                print(flush=True)
            what = f"stopped {', '.join(a.cell.name for a in cut)}" if cut else "no cell was running"
            raise Interrupted(f"interrupted by {signal.Signals(signum).name}: {what}; {len(record['cells'])} of "
                              f"{len(cells)} cells are done, in {out / 'curve.json'}; rerun the same command to "
                              "continue (a stopped fine-tuning cell resumes from its last whole epoch)", signum)
        if len(batch) < len(todo):
            print(f"stopping after {len(batch)} cell(s) (--max-cells); rerun the same command to continue", flush=True)
    return record


# -- the table and the picture ------------------------------------------------------------------------------


def _budget_key(budget: str) -> tuple:
    return (budget == "all", int(budget) if budget != "all" else 0)


def summarize(record: dict) -> list[dict]:
    """One row per (model, budget): mean and sample std of each test score (`SCORES`) over the seeds done."""
    groups: dict[tuple, list[dict]] = {}
    for cell in record["cells"].values():
        groups.setdefault((cell["model"], cell["budget"]), []).append(cell)
    rows = []
    for (model, budget), cells in groups.items():
        rows.append({
            "model": model, "budget": budget,
            "train_examples": cells[0]["train_examples"],
            **{score: metrics.mean_and_std([c[score] for c in cells]) for score in SCORES[task_kind(record)]},
            "seconds": metrics.mean_and_std([c["seconds"] for c in cells]),
            "seeds": sorted(c["seed"] for c in cells),
        })
    return rows


def model_order(record: dict) -> list[str]:
    """The models in the order of the last plan, then any others the record holds."""
    order = [m["label"] for m in record.get("models", [])]
    return order + sorted({c["model"] for c in record["cells"].values()} - set(order))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def format_table(record: dict) -> str:
    rows = {(r["model"], r["budget"]): r for r in summarize(record)}
    models = model_order(record)
    budgets = sorted({b for _, b in rows}, key=_budget_key)
    size = {b: next(r["train_examples"] for (m, bb), r in rows.items() if bb == b) for b in budgets}

    def table(title: str, value) -> list[str]:
        lines = [f"### {title}", "", "| training labels | " + " | ".join(models) + " |",
                 "|---:|" + "---:|" * len(models)]
        for b in budgets:
            label = f"{size[b]:,}" + (" (all)" if b == "all" else "")
            lines.append(f"| {label} | " + " | ".join(value(rows[(m, b)]) if (m, b) in rows else "—"
                                                     for m in models) + " |")
        return lines + [""]

    def score(key):
        def cell(r):
            s = r[key]
            spread = f" ± {100 * s['std']:.2f}" if s["n"] > 1 else ""  # one seed has no spread to show
            return f"{100 * s['mean']:.2f}{spread}" + (f" (n={s['n']})" if s["n"] != n_seeds else "")
        return cell

    n_seeds = len(record.get("seeds") or {c["seed"] for c in record["cells"].values()})
    total = sum(c["seconds"] for c in record["cells"].values())
    lines = [f"# Learning curve: {record.get('task', '')}", "",
             f"Test split, mean ± sample std over seeds {', '.join(map(str, record.get('seeds', [])))} "
             f"(n = seeds done where fewer). Seed S draws its own training examples, the same for every model; "
             f"{len(record['cells'])} cells, {_minutes(total)} in all.", ""]
    for m in record.get("models", []):
        what = {"pretrained": f"fine-tuned from `{m['init']}`",
                "scratch": f"from scratch, the architecture of `{m['init']}`",
                "baseline": BASELINE_MODELS[task_kind(record)]}[m["kind"]]
        lines.append(f"- **{m['label']}**: {what}")
    lines.append("")
    for key in SCORES[task_kind(record)]:
        name = SCORE_NAMES[key]
        lines += table(f"{name[0].upper()}{name[1:]} (%)", score(key))
    lines += table("Time per cell (mean)", lambda r: _minutes(r["seconds"]["mean"]))
    epochs = sorted({(c["budget"], c["epochs"]) for c in record["cells"].values() if c["epochs"]},
                    key=lambda be: _budget_key(be[0]))
    if epochs:
        lines.append("Fine-tuning epochs: " + ", ".join(f"{e} at {size.get(b, b):,} labels" if b in size else
                                                         f"{e} at {b}" for b, e in epochs) + ".")
        lines.append("")
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarize(record)
    headline = SCORES[task_kind(record)][0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = [m for m in model_order(record) if any(r["model"] == m for r in rows)]
    for i, model in enumerate(models):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["train_examples"])
        dodge = 1.025 ** (i - (len(models) - 1) / 2)  # side by side on the log axis, so error bars do not overlap
        x = [r["train_examples"] * dodge for r in mine]
        y = [100 * r[headline]["mean"] for r in mine]
        err = [100 * r[headline]["std"] for r in mine]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=4, linestyle="--" if model == BASELINE else "-",
                    label=model)
    ax.set_xscale("log")
    ticks = sorted({r["train_examples"] for r in rows})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:,}" for t in ticks])
    ax.minorticks_off()
    units = "sentences" if task_kind(record) == "ner" else "examples"
    ax.set_xlabel(f"labelled training {units} (log scale)")
    ax.set_ylabel(f"{SCORE_NAMES[headline]} (%)")
    n_seeds = len(record.get("seeds", []))
    ax.set_title(f"Learning curve: {SCORE_NAMES[headline]} against labels" + (" (mean ± std over seeds)"
                                                                              if n_seeds > 1 else " (one seed)"))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, record: dict) -> None:
    (out / "curve.md").write_text(format_table(record), encoding="utf-8")
    plot(record, out / "curve.png")
    print(f"wrote {out / 'curve.md'} and {out / 'curve.png'}", flush=True)


@command_main
def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        run(options)
    except CellFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        return 128 + stop.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
