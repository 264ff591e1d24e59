"""Hugging Face checkpoints in and out: a check of names and shapes, never a translation table.

minibert's module names produce Hugging Face BERT's state_dict keys, so converting is: add or strip the `bert.`
prefix, drop the weights of a head the target does not have, and refuse anything that does not fit. A key the
encoder needs that the checkpoint lacks, or a tensor of the wrong shape, is an error that lists them all; the
only weights that may start fresh are those of a task head (pooler, classifier, MLM head), and they are reported.

Nothing here imports `transformers`: checkpoints are plain files (`config.json`, `model.safetensors` or
`pytorch_model.bin`), and in-memory models are read through their `config` and `state_dict()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import BertConfig
from .errors import InputError
from .heads import BertForMaskedLM, BertForSequenceClassification
from .model import BertModel

MODEL_CLASSES = {c.__name__: c for c in (BertModel, BertForMaskedLM, BertForSequenceClassification)}
# Weights a target may lack in the checkpoint: a task head starts from BERT's initialisation.
# ELECTRA's generator and per-token head are pretraining heads too: an encoder loads from an ELECTRA run without them.
HEAD_PREFIXES = ("bert.pooler.", "pooler.", "classifier.", "cls.", "generator.", "discriminator_predictions.")
# Stored once: a decoder weight is the word-embedding matrix, the MLM decoder bias is `cls.predictions.bias`.
TIED_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "generator.predictions.decoder.weight")
# Old TensorFlow-era names.
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


@dataclass
class LoadReport:
    newly_initialised: list[str] = field(default_factory=list)  # head weights the checkpoint did not have
    unused: list[str] = field(default_factory=list)  # checkpoint weights of heads the target does not have


def _normalise_keys(state: dict[str, torch.Tensor], wants_prefix: bool) -> dict[str, torch.Tensor]:
    """Rename legacy keys and add or strip the `bert.` prefix to match the target model."""
    out = {}
    for key, value in state.items():
        for old, new in LEGACY_SUFFIXES.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        if key.endswith("position_ids"):  # a buffer older checkpoints saved; minibert derives it
            continue
        is_body = key.startswith(("embeddings.", "encoder.", "pooler."))
        if wants_prefix and is_body:
            key = "bert." + key
        elif not wants_prefix and key.startswith("bert."):
            key = key[len("bert.") :]
        out[key] = value
    # The MLM bias is saved as both `cls.predictions.bias` and `cls.predictions.decoder.bias`; some files hold one.
    a, b = "cls.predictions.bias", "cls.predictions.decoder.bias"
    if a in out and b not in out:
        out[b] = out[a]
    elif b in out and a not in out:
        out[a] = out[b]
    return out


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Copy `state` into `model`, or raise InputError listing every missing, unexpected or mis-shaped tensor."""
    target = model.state_dict()
    state = _normalise_keys(state, wants_prefix=any(k.startswith("bert.") for k in target))
    tied = {k for k in TIED_KEYS if k.endswith(".weight")}  # share storage with the word embeddings
    missing = [k for k in target if k not in state and k not in tied]
    unexpected = [k for k in state if k not in target]
    fatal_missing = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    fatal_unexpected = [k for k in unexpected if not k.startswith(HEAD_PREFIXES)]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    problems = []
    if fatal_missing:
        problems.append("missing from the checkpoint: " + ", ".join(fatal_missing))
    if fatal_unexpected:
        problems.append("not in the model: " + ", ".join(fatal_unexpected))
    if wrong_shape:
        problems.append("wrong shape: " + "; ".join(wrong_shape))
    if problems:
        raise InputError("checkpoint does not match the model config:\n  " + "\n  ".join(problems))
    with torch.no_grad():
        for k, v in target.items():
            if k in state:
                v.copy_(state[k])
    return LoadReport(newly_initialised=missing, unused=unexpected)


def from_hf_model(hf_model, cls: type[nn.Module] = BertModel, **config_overrides) -> nn.Module:
    """A minibert model with the weights of an in-memory `transformers` BERT model."""
    config = _with_overrides(BertConfig.from_hf_config(hf_model.config.to_dict()), config_overrides)
    model = cls(config)
    load_state_dict_checked(model, hf_model.state_dict())
    return model


def _with_overrides(config: BertConfig, overrides: dict) -> BertConfig:
    """Apply overrides after the Hugging Face fields are read, so minibert's own switches (unpad, ...) are kept."""
    return BertConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise InputError(f"{path}: no model.safetensors or pytorch_model.bin; is this a Hugging Face BERT directory?")


def load_hf(path: str | Path, cls: type[nn.Module] = BertModel, with_report: bool = False, **config_overrides):
    """Read a local Hugging Face BERT directory into a minibert `cls` (BertModel, BertForMaskedLM,
    BertForSequenceClassification). `config_overrides` set fields such as `num_labels`, `attn_impl` or `unpad`.
    With `with_report`, returns (model, LoadReport) to tell which head weights started fresh."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: no config.json; point at a directory saved by save_hf or transformers' save_pretrained")
    hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if hf_config.get("model_type", "bert") != "bert":
        raise InputError(f"{path}: model_type is {hf_config['model_type']!r}, not 'bert'")
    config = _with_overrides(BertConfig.from_hf_config(hf_config), config_overrides)
    model = cls(config)
    report = load_state_dict_checked(model, _read_weights(path))
    return (model, report) if with_report else model


def load_hf_tokenizer(path: str | Path):
    """The tokenizer of a Hugging Face BERT directory (its `vocab.txt`, WordPiece)."""
    from tokenizer import load as load_tokenizer

    if not (Path(path) / "vocab.txt").is_file():
        raise InputError(f"{path}: no vocab.txt, so no tokenizer to load")
    return load_tokenizer(path)


def save_hf(model: nn.Module, path: str | Path) -> None:
    """Write `config.json` + `model.safetensors` that `transformers`' `from_pretrained` loads with no missing or
    unexpected keys. The tied decoder weight is left out, as Hugging Face does; loading re-ties it."""
    from safetensors.torch import save_file

    name = type(model).__name__
    if name not in MODEL_CLASSES:
        raise InputError(f"save_hf writes BertModel, BertForMaskedLM or BertForSequenceClassification, not {name}")
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
