"""GPT-2 and T5 checkpoints: Hugging Face's in and out, and minibert's own directory for both models.

`minibert/gpt.py` and `minibert/t5.py` name their modules as transformers' `GPT2LMHeadModel` and
`T5ForConditionalGeneration` do, and GPT-2's `Conv1D` weights keep their (in, out) layout, so the two state_dicts
hold the same keys with the same shapes: converting copies tensors by name after checking every key and shape, and
rewrites none. What is handled on the way:
- tied weights are stored once, as Hugging Face saves them: GPT-2's `lm_head.weight` is `transformer.wte.weight`;
  T5's `lm_head.weight`, `encoder.embed_tokens.weight` and `decoder.embed_tokens.weight` are `shared.weight`;
- older GPT-2 files: keys saved from a bare `GPT2Model` (no `transformer.` prefix), and the `attn.bias` /
  `attn.masked_bias` buffers that held the causal mask, which minibert computes instead.

Nothing here imports `transformers`: checkpoints are plain files (`config.json`, `model.safetensors` or
`pytorch_model.bin`), and in-memory models are read through their `config` and `state_dict()`. (The BERT loader in
`minibert/hf.py` knows BERT's prefixes and tied keys; these two models have their own, hence their own checker.)

A model is GPT-2 or T5 by its config (a GPT2Config or a T5Config), so a model built on either body, a fine-tuning
classifier for instance, is saved and loaded here too. Which keys are tied is read off the model itself: a
parameter registered under several names is stored once, under the name it was registered by first.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .files import CONFIG_NAME, read_checkpoint_weights, unwrap, write_model
from .errors import InputError
from .gpt import GPT2Config, GPT2LMHeadModel
from .t5 import T5Config, T5ForConditionalGeneration

MODELS = {"gpt2": (GPT2Config, GPT2LMHeadModel), "t5": (T5Config, T5ForConditionalGeneration)}
GPT2_BODY = ("wte.", "wpe.", "h.", "ln_f.")  # the keys of a bare GPT2Model
GPT2_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


def config_type(config) -> str | None:
    """"gpt2" for a GPT2Config, "t5" for a T5Config, None for anything else."""
    for name, (config_cls, _) in MODELS.items():
        if isinstance(config, config_cls):
            return name
    return None


def model_type(model: nn.Module) -> str:
    """"gpt2" or "t5", Hugging Face's `model_type` of a minibert model, by its config's class."""
    kind = config_type(getattr(model, "config", None))
    if kind is None:
        raise InputError(f"expected a model with a GPT2Config or a T5Config, not {type(model).__name__}")
    return kind


def tied_keys(model: nn.Module) -> dict[str, str]:
    """{tied key: the key it is stored under}: every name of a parameter registered under several names, but the
    first. GPT2LMHeadModel: {lm_head.weight: transformer.wte.weight}; T5ForConditionalGeneration: the two
    embed_tokens and lm_head, all shared.weight (their `TIED_KEYS`)."""
    first: dict[int, str] = {}
    tied = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            tied[name] = first[id(p)]
        else:
            first[id(p)] = name
    return tied


def normalise_keys(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Bring an older GPT-2 file's keys to GPT2LMHeadModel's: add the `transformer.` prefix, drop mask buffers."""
    if kind != "gpt2":
        return dict(state)
    bare = not any(k.startswith("transformer.") for k in state)
    out = {}
    for key, value in state.items():
        if key.endswith(GPT2_MASK_BUFFERS):
            continue
        out["transformer." + key if bare and key.startswith(GPT2_BODY) else key] = value
    return out


def load_checked(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `model`, or raise InputError listing every missing, unexpected or mis-shaped tensor.

    A tied key (`model.TIED_KEYS`) may be absent, since it is the same tensor as the one it is tied to; present, it
    must equal that tensor (an untied head is not a model these classes build)."""
    target = model.state_dict()
    state = normalise_keys(state, model_type(model))
    ties = tied_keys(model)
    tied = set(ties)
    missing = [k for k in target if k not in state and k not in tied]
    unexpected = [k for k in state if k not in target]
    wrong_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
                   for k in target if k in state and state[k].shape != target[k].shape]
    problems = []
    if missing:
        problems.append("missing from the checkpoint: " + ", ".join(missing))
    if unexpected:
        problems.append("not in the model: " + ", ".join(unexpected))
    if wrong_shape:
        problems.append("wrong shape: " + "; ".join(wrong_shape))
    if problems:
        raise InputError("checkpoint does not match the model config:\n  " + "\n  ".join(problems))
    untied = sorted(k for k in tied if k in state and not torch.equal(state[k], state[ties[k]]))
    if untied:
        sources = ", ".join(sorted({ties[k] for k in untied}))
        raise InputError(f"{', '.join(untied)} differ from {sources}: the checkpoint has an untied output layer, "
                         "which this model does not build")
    with torch.no_grad():
        for k, v in target.items():
            if k in state and k not in tied:
                v.copy_(state[k])


def _build(kind: str, hf_config: dict, overrides: dict) -> nn.Module:
    config_cls, model_cls = MODELS[kind]
    config = config_cls.from_hf_config(hf_config)
    if overrides:  # after the Hugging Face fields are read, so minibert's own switches (attn_impl) apply
        config = config_cls.from_dict({**config.to_dict(), **overrides})
    return model_cls(config)


def from_hf_model(hf_model, **config_overrides) -> nn.Module:
    """A minibert GPT2LMHeadModel or T5ForConditionalGeneration with the weights of an in-memory `transformers` one."""
    hf_config = hf_model.config.to_dict()
    kind = hf_config.get("model_type")
    if kind not in MODELS:
        raise InputError(f"model_type {kind!r} is not one of {sorted(MODELS)}")
    model = _build(kind, hf_config, config_overrides)
    load_checked(model, hf_model.state_dict())
    return model


def _read_config(path: Path) -> dict:
    return _read_config_file(path / CONFIG_NAME)


def _read_config_file(file: Path) -> dict:
    if not file.is_file():
        raise InputError(f"{file.parent}: no {CONFIG_NAME}; point at a directory saved by save_hf, save_pretrained "
                         "or transformers' save_pretrained")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") not in MODELS:
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise InputError(f"{file}: model_type is {kind!r}, not one of {sorted(MODELS)}")
    return config


def read_config(file: str | Path, **overrides) -> GPT2Config | T5Config:
    """The GPT2Config or T5Config of a config.json written by `save_pretrained` (every field, and `model_type`),
    with `overrides` replacing fields; unknown fields are an error."""
    d = _read_config_file(Path(file))
    config_cls = MODELS[d.pop("model_type")][0]
    return config_cls.from_dict({**d, **overrides})


def _write(model: nn.Module, path: Path, config: dict, step: int | None = None) -> None:
    tied = tied_keys(model)
    write_model(path, {k: v for k, v in model.state_dict().items() if k not in tied}, config, step)


def save_hf(model: nn.Module, path: str | Path) -> None:
    """Write `config.json` + `model.safetensors` that transformers' `GPT2LMHeadModel` / `T5ForConditionalGeneration`
    `from_pretrained` loads with no missing or unexpected keys. Tied weights are left out, as Hugging Face does."""
    model = unwrap(model)
    kind = model_type(model)
    if not isinstance(model, MODELS[kind][1]):
        raise InputError(f"save_hf writes {MODELS[kind][1].__name__}, not {type(model).__name__}")
    config = {**model.config.to_hf_config(), "architectures": [MODELS[kind][1].__name__]}
    _write(model, Path(path), config)


def load_hf(path: str | Path, **config_overrides) -> nn.Module:
    """Read a local Hugging Face GPT-2 or T5 directory (chosen by its `model_type`) into the minibert model.
    `config_overrides` set fields such as `attn_impl`."""
    path = Path(path)
    hf_config = _read_config(path)
    model = _build(hf_config["model_type"], hf_config, config_overrides)
    load_checked(model, read_checkpoint_weights(path))
    return model


def save_pretrained(model: nn.Module, directory: str | Path, step: int | None = None) -> None:
    """minibert's own directory: `config.json` with every config field (minibert's switches too) and `model_type`,
    and `model.safetensors` with Hugging Face's keys (`step`, when given, in its metadata); each file written
    atomically by `minibert.files.write_model`, as for BERT."""
    model = unwrap(model)
    _write(model, Path(directory), {"model_type": model_type(model), **model.config.to_dict()}, step)


def load_pretrained(directory: str | Path, **config_overrides) -> nn.Module:
    """The model saved by `save_pretrained`; `config_overrides` replace config fields. Unknown fields are an error."""
    directory = Path(directory)
    config = read_config(directory / CONFIG_NAME, **config_overrides)
    model = MODELS[config_type(config)][1](config)
    load_checked(model, read_checkpoint_weights(directory))
    return model
