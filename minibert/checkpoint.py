"""minibert's own checkpoint directory: `config.json` (every BertConfig field, minibert's too) + `model.safetensors`.

Keys are Hugging Face's, so the same weights also load through `minibert.hf`. Saving is atomic: files are written
to a temporary name beside their destination and renamed into place, so a process killed mid-save leaves the
previous files intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .config import BertConfig
from .errors import InputError
from .hf import TIED_KEYS, LoadReport, load_state_dict_checked

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


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path onto path (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_pretrained(model: nn.Module, directory: str | Path) -> None:
    from safetensors.torch import save_file

    model = unwrap(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in TIED_KEYS}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, lambda p: model.config.save(p))


def load_pretrained(directory: str | Path, cls: type[nn.Module], **config_overrides) -> tuple[nn.Module, LoadReport]:
    """Build `cls` from a directory written by `save_pretrained`; `config_overrides` replace config fields
    (for example `num_labels` for a classifier on a pretrained encoder). Returns the model and what was not loaded."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / WEIGHTS_NAME).is_file():
        raise InputError(f"{directory}: no {WEIGHTS_NAME}; is this a minibert run directory?")
    config = BertConfig.load(directory / CONFIG_NAME)
    config = BertConfig.from_dict({**config.to_dict(), **config_overrides})
    model = cls(config)
    report = load_state_dict_checked(model, load_file(str(directory / WEIGHTS_NAME)))
    return model, report
