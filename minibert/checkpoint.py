"""minibert's own checkpoint directory: `config.json` (every config field, minibert's too) + `model.safetensors`.

Keys are Hugging Face's, so the same weights also load through `minibert.hf` (BERT) and `minibert.gpt_t5_checkpoint`; the
files themselves (names, atomic writes, reading the weights) are `minibert.files`, below both.
One directory format for every model family: a BERT model's `config.json` holds its BertConfig fields alone (as it
always has); a GPT-2 or T5 model's adds its `model_type`, "gpt2" or "t5" (`minibert.gpt_t5_checkpoint.save_pretrained`).
`read_config` and `load_checked` choose the family by that field, so a training loop saves, resumes and loads
any model through the same three calls. Saving is atomic: files are written
to a temporary name beside their destination and renamed into place, so a process killed mid-save leaves the
previous files intact (and, at worst, a `.NAME.tmp-PID` file that `remove_leftovers` cleans). A training run records
its step in the weights file's metadata (`weights_step`), so a copy older than the run's last checkpoint is found.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .config import BertConfig
from .errors import InputError
from .files import CONFIG_NAME, WEIGHTS_NAME, read_weights, remove_leftovers, unwrap, weights_step, write_model
from .gpt_t5_checkpoint import MODELS, config_type
from .gpt_t5_checkpoint import load_checked as load_gpt_t5
from .gpt_t5_checkpoint import read_config as read_gpt_t5_config
from .gpt_t5_checkpoint import save_pretrained as save_gpt_t5
from .state_dict import TIED_KEYS, LoadReport, load_state_dict_checked

def save_pretrained(model: nn.Module, directory: str | Path, step: int | None = None) -> None:
    """config.json + model.safetensors; `step`, when given, is recorded in the weights' metadata. A GPT-2 or T5
    model (its config a GPT2Config or T5Config) is written by `minibert.gpt_t5_checkpoint.save_pretrained`."""
    model = unwrap(model)
    if not isinstance(model.config, BertConfig):
        return save_gpt_t5(model, directory, step=step)
    state = {k: v for k, v in model.state_dict().items() if k not in TIED_KEYS}
    write_model(directory, state, model.config.to_dict(), step)


def family(config) -> str:
    """"bert", "gpt2" or "t5": the model family of a config object."""
    kind = "bert" if isinstance(config, BertConfig) else config_type(config)
    if kind is None:
        raise InputError(f"{type(config).__name__} is not the config of a BERT, GPT-2 or T5 model")
    return kind


def stored_model_type(path: str | Path) -> str | None:
    """The `model_type` a config.json names ("gpt2", "t5"), or None: a minibert BERT config has none. A file that
    cannot be read also gives None, for `BertConfig.load` to name what is wrong with it."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d.get("model_type") if isinstance(d, dict) else None


def read_config(path: str | Path, **overrides):
    """The config object a config.json describes, of the family its `model_type` names (none: BERT);
    `overrides` replace fields. InputError naming the file when it is missing, unreadable or not a config."""
    path = Path(path)
    kind = stored_model_type(path)
    if kind is None:
        config = BertConfig.load(path)
        return BertConfig.from_dict({**config.to_dict(), **overrides}, str(path)) if overrides else config
    if kind not in MODELS:
        raise InputError(f"{path}: model_type {kind!r} is not one minibert builds (BERT has none; "
                         f"{', '.join(sorted(MODELS))})")
    return read_gpt_t5_config(path, **overrides)


def load_checked(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Copy `state` into `model` with the check of its family (`minibert.hf.load_state_dict_checked` for BERT,
    whose task heads may start fresh; `minibert.gpt_t5_checkpoint.load_checked` for GPT-2 and T5, which takes every key)."""
    if isinstance(unwrap(model).config, BertConfig):
        return load_state_dict_checked(model, state)
    load_gpt_t5(unwrap(model), state)
    return LoadReport()


def load_pretrained(directory: str | Path, cls: type[nn.Module], **config_overrides) -> tuple[nn.Module, LoadReport]:
    """Build `cls` from a directory written by `save_pretrained`; `config_overrides` replace config fields
    (for example `num_labels` for a classifier on a pretrained encoder). Returns the model and what was not loaded."""
    directory = Path(directory)
    if not (directory / WEIGHTS_NAME).is_file():
        raise InputError(f"{directory}: no {WEIGHTS_NAME}; is this a minibert run directory?")
    kind = stored_model_type(directory / CONFIG_NAME)
    if kind is not None:
        raise InputError(f"{directory} holds a {kind} model, not BERT; {cls.__name__} needs a BERT run")
    config = BertConfig.load(directory / CONFIG_NAME)
    config = BertConfig.from_dict({**config.to_dict(), **config_overrides}, str(directory / CONFIG_NAME))
    weights = read_weights(directory / WEIGHTS_NAME)
    model = cls(config)
    report = load_state_dict_checked(model, weights)
    return model, report
