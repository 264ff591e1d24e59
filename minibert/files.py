"""The files of a model directory, written and read safely: `config.json` and `model.safetensors`.

The lowest layer of checkpointing, below every model family's rules (`minibert.checkpoint` for the directory
format, `minibert.hf` and `minibert.gpt_t5_checkpoint` for Hugging Face's): what the names are, how a file is written so
that a killed process never leaves half of one (`atomic_write`: a temporary name beside the destination, then a
rename), how the leftovers of a killed save are cleaned (`remove_leftovers`), and how the weights are read with a
clear error for a truncated or garbled file (`read_weights`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import InputError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or torch.compile wrappers (no `module.` / `_orig_mod.`)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


TMP_MARK = ".tmp-"  # in the name of every file or directory that is written and then renamed into place


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path onto path (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def temp_name_of(p: Path) -> str | None:
    """The name whose interrupted atomic write left `p` (`.NAME.tmp-PID` or `.tmp-NAME`), else None."""
    if p.name.startswith(TMP_MARK):
        return p.name.removeprefix(TMP_MARK)
    if p.name.startswith(".") and TMP_MARK in p.name:
        return p.name[1:].rsplit(TMP_MARK, 1)[0]
    return None


def remove_leftovers(directory: Path, names: list[str] | None = None) -> list[Path]:
    """Delete the temporary files and directories (`.NAME.tmp-PID`, `.tmp-NAME`) that a killed save left in
    `directory` (only those of `names`, when given: a directory shared with files minibert did not write);
    returns what was removed."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir()
             if (name := temp_name_of(p)) is not None and (names is None or name in names)]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return found


def write_model(directory: str | Path, state: dict[str, torch.Tensor], config: dict, step: int | None = None) -> None:
    """model.safetensors (the tensors of `state`; `step`, when given, in its metadata), then config.json (`config`
    as JSON), each written atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {"format": "pt", **({} if step is None else {"step": str(step)})}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata=metadata))
    text = json.dumps(config, indent=2) + "\n"
    atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(text, encoding="utf-8"))


def weights_step(directory: str | Path) -> int | None:
    """The training step recorded in directory/model.safetensors, or None (no file, unreadable, or no step)."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(directory) / WEIGHTS_NAME), framework="pt") as f:
            step = (f.metadata() or {}).get("step")
        return int(step) if step is not None else None
    except Exception:  # missing, truncated, not safetensors: no step to trust
        return None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; InputError naming the file when it is missing, truncated or not one."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type (and OSError) for a file cut short or garbled
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: not a readable safetensors file ({detail}); it may be truncated or corrupt: "
                         "restore it, or write it again") from None


def read_checkpoint_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint directory: its model.safetensors, or a Hugging Face pytorch_model.bin;
    InputError naming the file when it cannot be read (cut short, garbled, not weights), or the directory when it
    has neither."""
    directory = Path(directory)
    if (directory / WEIGHTS_NAME).is_file():
        return read_weights(directory / WEIGHTS_NAME)
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        try:
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated zip, a failed unpickle, or a file that holds no tensors
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{legacy}: not a readable PyTorch checkpoint ({detail}); it may be truncated or "
                             "corrupt") from None
    raise InputError(f"{directory}: no {WEIGHTS_NAME} or pytorch_model.bin; is this a checkpoint directory?")
