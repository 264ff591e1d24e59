"""Hugging Face checkpoints in and out: a check of names and shapes, never a translation table.

minibert's module names produce Hugging Face BERT's state_dict keys, so converting is: add or strip the `bert.`
prefix, drop the weights of a head the target does not have, and refuse anything that does not fit. A key the
encoder needs that the checkpoint lacks, or a tensor of the wrong shape, is an error that lists them all; the
only weights that may start fresh are those of a task head (pooler, classifier, MLM head), and they are reported.
Those rules are `minibert.state_dict`'s, shared with minibert's own run directories.

Nothing here imports `transformers`: checkpoints are plain files (`config.json`, `model.safetensors` or
`pytorch_model.bin`), and in-memory models are read through their `config` and `state_dict()`.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .config import BertConfig
from .errors import InputError
from .heads import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification
from .model import BertModel
from .files import read_checkpoint_weights
from .state_dict import TIED_KEYS, load_state_dict_checked

MODEL_CLASSES = {c.__name__: c for c in (BertModel, BertForMaskedLM, BertForSequenceClassification,
                                         BertForTokenClassification)}


def from_hf_model(hf_model, cls: type[nn.Module] = BertModel, **config_overrides) -> nn.Module:
    """A minibert model with the weights of an in-memory `transformers` BERT model."""
    config = _with_overrides(BertConfig.from_hf_config(hf_model.config.to_dict()), config_overrides)
    model = cls(config)
    load_state_dict_checked(model, hf_model.state_dict())
    return model


def _with_overrides(config: BertConfig, overrides: dict) -> BertConfig:
    """Apply overrides after the Hugging Face fields are read, so minibert's own switches (unpad, ...) are kept."""
    return BertConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config


def load_hf(path: str | Path, cls: type[nn.Module] = BertModel, **config_overrides) -> nn.Module:
    """Read a local Hugging Face BERT directory into a minibert `cls` (BertModel, BertForMaskedLM,
    BertForSequenceClassification, BertForTokenClassification). `config_overrides` set fields such as `num_labels`,
    `attn_impl` or `unpad`. Head weights the directory lacks start fresh, as `load_state_dict_checked` allows."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: no config.json; point at a directory saved by save_hf or transformers' save_pretrained")
    hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if hf_config.get("model_type", "bert") != "bert":
        raise InputError(f"{path}: model_type is {hf_config['model_type']!r}, not 'bert'")
    config = _with_overrides(BertConfig.from_hf_config(hf_config), config_overrides)
    model = cls(config)
    load_state_dict_checked(model, read_checkpoint_weights(path))
    return model


def load_hf_tokenizer(path: str | Path):
    """The tokenizer of a Hugging Face BERT directory (its `vocab.txt`, WordPiece)."""
    from tokenizer import load as load_tokenizer

    if not (Path(path) / "vocab.txt").is_file():
        raise InputError(f"{path}: no vocab.txt, so no tokenizer to load")
    return load_tokenizer(path)


def save_hf(model: nn.Module, path: str | Path) -> None:
    """Write `config.json` + `model.safetensors` that `transformers`' `from_pretrained` loads with no missing or
    unexpected keys. The tied decoder weight is left out, as Hugging Face does; loading re-ties it. A classifier's
    label names go into the config as `id2label` and `label2id` (`BertConfig.to_hf_config`)."""
    from safetensors.torch import save_file

    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise InputError(f"save_hf writes one of {', '.join(MODEL_CLASSES)}, not {name}")
    hf_config = model.config.to_hf_config()
    hf_config["architectures"] = [name]
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if k not in TIED_KEYS
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
