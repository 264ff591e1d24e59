"""Where a fine-tuning seed stands, saved at the end of every epoch so that `train.finetune --resume` continues it
exactly (the same figures as a run that was never stopped).

    SEED/checkpoint/state.pt   the state after the last whole epoch; written atomically, removed once the seed is done
    SEED/results.json          written last: a seed directory that has it is finished

SEED is the run's --out for a single seed, OUT/seed-S with several. The state holds what the next epoch reads: the
weights, the optimiser's moments, the schedule's step, the random states (Python's for the batch order and token
dropout, torch's for dropout and the head's initialisation), and the loop's own record: the epochs done and their
history, the best epoch so far (its validation scores, and its weights when they are not the current ones) and the
early-stopping counter.
"""

from __future__ import annotations

import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from minibert.files import CONFIG_NAME, WEIGHTS_NAME, atomic_write, remove_leftovers
from train.classifier import FINETUNE_NAME, HEAD_NAME, LABELS_NAME
from train.optim import set_lr

CHECKPOINT = "checkpoint"
STATE_NAME = "state.pt"
RESULTS_NAME = "results.json"
# What a finished seed's directory holds besides its results: the model (train.classifier.save_classifier).
MODEL_ENTRIES = (CONFIG_NAME, WEIGHTS_NAME, HEAD_NAME, FINETUNE_NAME, LABELS_NAME, "tokenizer")


@dataclass
class Progress:
    """The training loop's own record after `epoch` whole epochs."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)  # one record per epoch: train loss, validation headline
    best: dict | None = None  # the validation report of the best epoch so far
    best_epoch: int = 0
    best_state: dict | None = None  # that epoch's weights (state_dict), kept in memory
    stale: int = 0  # epochs since the best one, for --patience
    stopped_early: bool = False
    train_seconds: float = 0.0  # time spent so far, over every attempt


def is_finished(seed_dir: Path) -> bool:
    return (seed_dir / RESULTS_NAME).is_file()


def has_state(seed_dir: Path) -> bool:
    return (seed_dir / CHECKPOINT / STATE_NAME).is_file()


def save_state(seed_dir: Path, classifier, optimizer, schedule, rng: random.Random, progress: Progress) -> None:
    """Write SEED/checkpoint/state.pt, replacing the previous epoch's in one rename (a kill leaves one or the other).
    The best epoch's weights are stored only when they are not the current ones."""
    stored = asdict(progress)
    stored["best_state"] = None if progress.best_epoch == progress.epoch else progress.best_state
    state = {
        "model": classifier.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule_steps": schedule.steps,
        "python_rng": rng.getstate(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "progress": stored,
    }
    directory = seed_dir / CHECKPOINT
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / STATE_NAME, lambda p: torch.save(state, p))


def restore_state(seed_dir: Path, classifier, optimizer, schedule, rng: random.Random) -> Progress:
    """Load SEED/checkpoint/state.pt into the freshly built classifier, optimiser, schedule and generators, and
    return the loop's record. Without a saved state (or with one that cannot be read: said, and the seed starts
    over, which gives the same figures) the objects are left as they are and the record is a new one."""
    path = seed_dir / CHECKPOINT / STATE_NAME
    if not path.is_file():
        return Progress()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
        classifier.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(**state["progress"])
    except Exception as e:  # a file cut short, or not this run's (another model): the seed starts over
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"note: {path} cannot be read ({detail}); this seed starts over from its first epoch",
              file=sys.stderr, flush=True)
        return Progress()
    schedule.steps = state["schedule_steps"]
    set_lr(optimizer, schedule.lr(schedule.steps))
    rng.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if progress.best_state is None and progress.best_epoch == progress.epoch:  # the best epoch is the current one
        progress.best_state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
    return progress


def remove_state(seed_dir: Path) -> None:
    """The seed is finished: its resumable state is no longer needed."""
    shutil.rmtree(seed_dir / CHECKPOINT, ignore_errors=True)


def remove_unfinished_model(seed_dir: Path) -> None:
    """Delete the model files of a seed that is not finished (a save cut short by a second signal or a kill), so
    that nothing half-written looks like a fine-tuned model; its saved state stays. Only these names, and the
    temporary files of atomic writes in that directory."""
    if not seed_dir.is_dir() or is_finished(seed_dir):
        return
    for name in MODEL_ENTRIES:
        p = seed_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    remove_leftovers(seed_dir)
