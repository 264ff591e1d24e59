"""A pretraining run's directory: its checkpoints, its metrics and its loss curve.

    OUT/checkpoints/step_N/   model.safetensors + config.json + state.pt (optimiser, batch stream, generators, step)
    OUT/model.safetensors     the latest checkpoint's weights, at the top level where the other commands read them
    OUT/metrics.jsonl         one JSON record per logged step and per evaluation; loss.png drawn from it

A checkpoint is written whole under a temporary name and renamed into place, so a process killed at any moment
leaves the previous one intact; `--resume` reads the newest readable one, sets aside one that cannot be read, and
repairs a top level that a kill left a step behind. Whether --out may be used at all (a new run, one to continue
with --resume, one to start over with --force) is `plan_out_dir`'s, decided before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from minibert import BertConfig, GPT2Config, T5Config
from minibert.checkpoint import read_config, save_pretrained
from minibert.files import CONFIG_NAME, WEIGHTS_NAME, atomic_write, read_weights, remove_leftovers, weights_step
from minibert.errors import InputError
from minibert.rundir import RUN_MARKER, OutDir, OutState, RunKind, check_usable, inspect_out, recorded_entries
from train.cli import RUNS_DIR


# A pretraining run directory (`minibert.rundir`) and the top-level entries a run writes into it.
PRETRAIN_RUN = RunKind("pretrain", "pretraining run")
PRETRAIN_ENTRIES = (CONFIG_NAME, WEIGHTS_NAME, "tokenizer", "checkpoints", "data", "metrics.jsonl", "loss.png",
                    "args.json")


def checkpoint_dirs(out: Path) -> list[Path]:
    """checkpoints/step_N directories in step order (a save in progress, `.tmp-step_N`, is not one)."""
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def latest_checkpoint(out: Path) -> Path | None:
    found = checkpoint_dirs(out)
    return found[-1] if found else None


@dataclass
class Resumed:
    """A checkpoint read whole: the model's config and weights, the loop's state, and the newer checkpoints that
    could not be read (they are moved aside)."""

    path: Path
    config: BertConfig | GPT2Config | T5Config  # the family its config.json's model_type names
    weights: dict[str, torch.Tensor]
    state: dict
    unreadable: list[tuple[Path, str]]


STATE_KEYS = ("step", "total_steps", "train_seconds", "stream", "mask_rng", "torch_rng", "args", "optimizer")


def read_checkpoint(ckpt: Path) -> tuple[BertConfig | GPT2Config | T5Config, dict, dict]:
    """config, weights and state of one checkpoint; InputError naming the file that is missing or cannot be read."""
    config = read_config(ckpt / CONFIG_NAME)
    weights = read_weights(ckpt / WEIGHTS_NAME)
    state_path = ckpt / "state.pt"
    if not state_path.is_file():
        raise InputError(f"{state_path}: missing")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated file fails in the zip reader, the unpickler or with EOFError
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{state_path}: cannot be read ({detail}); it may be truncated or corrupt") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise InputError(f"{state_path}: not the state of a minibert pretraining checkpoint")
    return config, weights, state


def load_checkpoint(out: Path) -> Resumed:
    """The latest checkpoint that reads whole; the newer ones that do not are reported. Reads only."""
    unreadable = []
    for ckpt in reversed(checkpoint_dirs(out)):
        try:
            config, weights, state = read_checkpoint(ckpt)
        except InputError as e:
            unreadable.append((ckpt, str(e)))
            continue
        return Resumed(ckpt, config, weights, state, unreadable)
    raise InputError(f"{unreadable[0][1]}; there is no earlier complete checkpoint to fall back to: restore the "
                     "file, or start the run over with --force")


def set_aside_unreadable(resumed: Resumed) -> None:
    """Rename each unreadable newer checkpoint to checkpoints/broken-step_N, so it is neither resumed from nor
    rotated in place of a good one; say so."""
    for ckpt, why in resumed.unreadable:
        aside = ckpt.with_name(f"broken-{ckpt.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(ckpt, aside)
        print(f"warning: {why}. Resuming from the previous complete checkpoint, {resumed.path.name}; the "
              f"unreadable one is kept as {aside}", file=sys.stderr, flush=True)


def repair_top_level(out: Path, ckpt: Path, step: int) -> None:
    """Make the run's top-level weights those of the checkpoint it resumes from: a kill between a checkpoint and
    the top-level copy (or a fallback past an unreadable checkpoint) leaves them older, or newer, or missing."""
    found = weights_step(out)
    if found == step and (out / CONFIG_NAME).is_file():
        return
    if not (out / WEIGHTS_NAME).is_file():
        was = "missing"
    else:
        was = "of an unknown step" if found is None else f"at step {found}"
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        atomic_write(out / name, lambda p, name=name: shutil.copyfile(ckpt / name, p))
    print(f"note: {out / WEIGHTS_NAME} was {was}; copied from {ckpt.relative_to(out)} (step {step})",
          file=sys.stderr, flush=True)


def remove_save_leftovers(out: Path) -> None:
    """Delete what killed saves left: temporary files of the run's own files (those its marker records) and
    half-written checkpoints."""
    removed = remove_leftovers(out, [*recorded_entries(out), RUN_MARKER])
    removed += [p for sub in ("checkpoints", "data", "tokenizer") for p in remove_leftovers(out / sub)]
    if removed:
        print(f"note: removed {len(removed)} temporary file(s) of an interrupted save: "
              f"{', '.join(str(p.relative_to(out)) for p in removed)}", file=sys.stderr, flush=True)


def save_checkpoint(out: Path, model, optimizer, state: dict, keep_last: int) -> Path:
    """Write checkpoints/step_N atomically (a temporary directory renamed into place), update the run's top-level
    weights, and delete all but the last `keep_last` checkpoints."""
    ckpt_root = out / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{state['step']:06d}"
    tmp = ckpt_root / f".tmp-step_{state['step']:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp, step=state["step"])
    torch.save({**state, "optimizer": optimizer.state_dict()}, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)  # the checkpoint appears whole or not at all
    # Consumers read the run's top level. A kill before this line leaves it a step behind: --resume repairs it.
    save_pretrained(model, out, step=state["step"])
    for old in checkpoint_dirs(out)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def append_metrics(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, after_step: int) -> None:
    """On resume, drop the lines logged after the checkpoint: they are about to be logged again."""
    if path.is_file():
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= after_step]
        atomic_write(path, lambda p: p.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8"))


def plot_losses(metrics_path: Path, png: Path, loss_name: str = "MLM loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(ln) for ln in metrics_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="training loss", alpha=0.7)
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"{loss_name} (nats)")
    ax.set_title("minibert pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def plan_out_dir(args, main: bool = True) -> OutDir:
    """What pretraining's --out is and whether this command may use it (`args`: the run's options, --out, --resume
    and --force), deciding without writing anything (`main`: the process
    that will hold the directory's lock; the other ranks of a multi-process run do not look at the lock).

    A new or empty directory starts a run. A run directory needs --resume (it continues) or --force (it starts
    over); one that never saved a checkpoint holds nothing worth keeping and starts over as it is. Anything else
    is refused."""
    out = inspect_out(Path(args.out or f"{RUNS_DIR}/pretrain-{datetime.now():%Y%m%d-%H%M%S}"), PRETRAIN_RUN,
                      check_lock=main)
    check_usable(out)
    is_run = out.state is OutState.RUN
    worth_keeping = is_run and (latest_checkpoint(out.path) is not None or (out.path / WEIGHTS_NAME).is_file())
    if args.resume:
        if not is_run:
            raise InputError(f"--resume: {out.path} {out.state.value}; there is no run to continue")
        if latest_checkpoint(out.path) is None:
            raise InputError(f"--resume: {out.path} holds no checkpoint: the run stopped before its first save "
                             "completed. Run the same command without --resume to start it over")
    elif worth_keeping and not args.force:
        raise InputError(f"{out.path} already holds a run; pass --resume to continue it or --force to start over")
    elif is_run and not args.force:
        print(f"note: {out.path} holds a run that stopped before its first checkpoint; starting it over", flush=True)
    return out
