"""A rotary BERT out to Hugging Face's RoFormer (`transformers.RoFormerModel`): the same encoder, exactly.

Shapes: P positions (max_position_embeddings), D head size.

RoFormer (Su et al., 2021) is BERT with rotary positions on the queries and keys, which is what minibert builds
with `position_embedding_type="rotary"` (`minibert/rotary.py`). Convention by convention:

    positions     minibert: rope(x, t)_{2i}   = x_{2i} cos(t theta_i) - x_{2i+1} sin(t theta_i)
                            rope(x, t)_{2i+1} = x_{2i} sin(t theta_i) + x_{2i+1} cos(t theta_i)
                  RoFormer: x cos_pos + rotate_every_two(x) sin_pos, rotate_every_two(x) = (-x_1, x_0, -x_3, x_2, ...)
                            and cos_pos = (cos theta_0 t, cos theta_0 t, cos theta_1 t, ...): the same interleaved
                            pairs (x_{2i}, x_{2i+1}), turned the same way, so W_q and W_k need no permutation
    theta_i       10000^(-2i/D) in both, D the head size; applied per head after the Q and K projections, values
                  not rotated (RoFormer's rotary_value=False), positions 0..T-1 of each row
    embeddings    LayerNorm(W[ids] + S[types]) in both (no position table); embedding_size = hidden_size, so
                  RoFormer has no `embeddings_project`
    blocks        post-LN, LayerNorm(x + sublayer(x)), as BERT; a pre-LN model (norm_first=True) has no RoFormer
                  form and is refused
    LayerNorm eps, activation, sizes, dropout      copied field by field (minibert's hidden_act names are
                  transformers' ACT2FN names: "gelu" is the exact erf GELU in both)
    state_dict    BERT's names in both (`embeddings.`, `encoder.layer.N.attention.self.query`, ...), with the
                  `bert.` prefix stripped; BERT's pooler and the classifier are not RoFormerModel's

RoFormer keeps its sin and cos factors as a weight, `encoder.embed_positions.weight` (P, D), the rows
[sin(t theta_0) .. sin(t theta_{D/2-1}) | cos(t theta_0) .. cos(t theta_{D/2-1})]. transformers fills it in
float64 and rounds; the export writes instead the float32 values minibert computes at run time
(`rotary.rotation_angles`), so the exported model turns each query and key by the very same numbers, and loading
keeps them (a loaded weight is not re-initialised). The two tables differ only by the float32 rounding of
t theta_i (about 2e-5 at t = 511 for D = 64); with minibert's own the rotation is the same to the last bit.

transformers' RoFormerForSequenceClassification is not the target of a fine-tuned classifier: its head,
out_proj(act(dense(h[:, 0]))), applies the encoder's hidden_act where BERT's pooler applies tanh, and minibert's
other poolings have no dense layer. A classifier exports as RoFormerModel plus its head (`train/predict.py`). A
token classifier (BertForTokenClassification) is RoFormerForTokenClassification exactly: Dropout(h) W + b on every
token, its body under `roformer.` and its `classifier` as it is.

Nothing here imports `transformers`: the export is `config.json` + `model.safetensors`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .config import MINIBERT_FIELDS, BertConfig
from .errors import InputError
from .rotary import rotation_angles
from .state_dict import HEAD_PREFIXES, TIED_KEYS, normalise_keys

POSITIONS_KEY = "encoder.embed_positions.weight"
# BertConfig fields RoFormerConfig does not have: positions are rotary by construction, the classifier is not its.
NOT_ROFORMER_FIELDS = ("position_embedding_type", "classifier_dropout")


def check_roformer(config: BertConfig) -> None:
    """InputError unless the encoder `config` describes is a RoFormer: rotary positions and post-LN blocks."""
    if config.position_embedding_type != "rotary":
        raise InputError(f"RoFormer is BERT with rotary positions; this model has position_embedding_type "
                         f"{config.position_embedding_type!r}")
    if config.norm_first:
        raise InputError("a pre-LN model (norm_first=True) has no RoFormer equivalent: RoFormer's blocks are post-LN, "
                         "LayerNorm(x + sublayer(x)), as BERT's")


def rotary_table(num_positions: int, head_size: int) -> torch.Tensor:
    """RoFormer's `embed_positions` weight, [sin(t theta_i) | cos(t theta_i)] for t < P, i < D/2: (P, D), the
    float32 angles of `minibert.rotary` (the module doc says why not transformers' float64 ones)."""
    angles = rotation_angles(torch.arange(num_positions), head_size)  # (P, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (P, D/2) x 2 -> (P, D)


def to_roformer_config(config: BertConfig) -> dict:
    """A dict `transformers.RoFormerConfig(**d)` accepts, for the encoder `config` describes (InputError if it is
    no RoFormer); labels as in `BertConfig.to_hf_config`."""
    check_roformer(config)
    d = {k: v for k, v in config.to_dict().items() if k not in MINIBERT_FIELDS + NOT_ROFORMER_FIELDS}
    if d["id2label"] is None:
        d["id2label"] = {i: f"LABEL_{i}" for i in range(config.num_labels)}
    d["label2id"] = {v: k for k, v in d["id2label"].items()}
    d.update(model_type="roformer", embedding_size=config.hidden_size, rotary_value=False)
    return d


def to_roformer_state_dict(state: dict[str, torch.Tensor], config: BertConfig) -> dict[str, torch.Tensor]:
    """RoFormerModel's state_dict from a minibert BertModel's or BertForSequenceClassification's: the `bert.`
    prefix stripped (`state_dict.normalise_keys`), heads (pooler, classifier, MLM) left out, and the rotary table
    added. InputError for a key RoFormerModel has no place for (a position table, a final LayerNorm)."""
    check_roformer(config)
    body = normalise_keys(state, wants_prefix=False)
    out, stray = {}, []
    for key, value in body.items():
        if key.startswith(HEAD_PREFIXES) or key in TIED_KEYS:
            continue
        if not key.startswith(("embeddings.", "encoder.layer.")) or "position_embeddings" in key:
            stray.append(key)
        out[key] = value.detach().contiguous().cpu()
    if stray:
        raise InputError("these weights have no place in RoFormerModel: " + ", ".join(stray))
    out[POSITIONS_KEY] = rotary_table(config.max_position_embeddings, config.head_size)  # (P, D)
    return out


def save_roformer(model: nn.Module, path: str | Path) -> None:
    """Write `config.json` + `model.safetensors` that `transformers.RoFormerModel.from_pretrained` loads with no
    missing or unexpected keys. `model`: a minibert BertModel or BertForSequenceClassification with rotary
    positions (its pooler and classifier are not written); or a BertForTokenClassification, written whole as
    RoFormerForTokenClassification (which `AutoModelForTokenClassification` loads)."""
    from safetensors.torch import save_file

    d = to_roformer_config(model.config)
    token_classifier = type(model).__name__ == "BertForTokenClassification"
    d["architectures"] = ["RoFormerForTokenClassification" if token_classifier else "RoFormerModel"]
    state = to_roformer_state_dict(model.state_dict(), model.config)
    if token_classifier:
        state = {f"roformer.{k}": v for k, v in state.items()}
        state.update({k: v.detach().contiguous().cpu() for k, v in model.classifier.state_dict(prefix="classifier.").items()})
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
