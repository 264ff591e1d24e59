"""The naming rules of BERT checkpoints, and loading a state_dict by them: a check of names and shapes.

minibert's module names produce Hugging Face BERT's state_dict keys, so one set of rules serves minibert's own run
directories (`minibert.checkpoint`) and Hugging Face's (`minibert.hf`): add or strip the `bert.` prefix, rename the
TensorFlow-era `gamma`/`beta`, store a tied tensor once, and let only a task head's weights start fresh. A key the
encoder needs that the checkpoint lacks, or a tensor of the wrong shape, is an error that lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import InputError

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


def normalise_keys(state: dict[str, torch.Tensor], wants_prefix: bool) -> dict[str, torch.Tensor]:
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
    state = normalise_keys(state, wants_prefix=any(k.startswith("bert.") for k in target))
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
