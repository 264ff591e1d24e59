"""BertConfig: every size and switch of the model in one dataclass.

Field names are Hugging Face's (`hidden_size`, `num_attention_heads`, ...), so a `config.json` written by
`transformers` maps one-to-one. minibert's own switches (`attn_impl`, `norm_first`, `sparse_prediction`, `unpad`,
`unpad_attention`, `fused_qkv`) come last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

# minibert's fields that Hugging Face's BertConfig does not have.
MINIBERT_FIELDS = ("attn_impl", "norm_first", "sparse_prediction", "unpad", "unpad_attention", "fused_qkv")
UNPAD_ATTENTION = ("auto", "rows", "repad", "nested")


@dataclass
class BertConfig:
    vocab_size: int = 30522                 # V: rows of the word-embedding matrix W
    hidden_size: int = 768                  # C: width of every token vector
    num_hidden_layers: int = 12             # L: encoder blocks
    num_attention_heads: int = 12           # H: heads; head size D = C / H
    intermediate_size: int = 3072           # I: width of the feed-forward layer (4C in BERT)
    hidden_act: str = "gelu"                # feed-forward activation; "gelu" is the exact erf form, as in BERT
    hidden_dropout_prob: float = 0.1        # dropout after embeddings, attention output and feed-forward
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities
    max_position_embeddings: int = 512      # longest sequence the position table covers
    type_vocab_size: int = 2                # segment ids: 0 for sentence A, 1 for sentence B
    initializer_range: float = 0.02         # std of the normal initialisation of every weight matrix
    layer_norm_eps: float = 1e-12           # BERT's LayerNorm epsilon (PyTorch's default is 1e-5)
    pad_token_id: int = 0                   # id of [PAD]; its word-embedding row starts at zero
    position_embedding_type: str = "absolute"  # "absolute" (learned, BERT), "sinusoidal" (fixed, original
    #                                            Transformer) or "rotary" (RoPE on queries and keys, ModernBERT)
    classifier_dropout: float | None = None  # dropout before the classifier; None means hidden_dropout_prob
    num_labels: int = 2                     # classifier outputs; 1 means regression (MSE loss)
    id2label: dict[int, str] | None = None  # class names, saved with a fine-tuned model
    # --- minibert's own switches ---
    attn_impl: str = "sdpa"                 # "math": the hand-written formula; "sdpa": torch's fused kernel
    norm_first: bool = False                # False: BERT's post-LN blocks; True: pre-LN (plus a final LayerNorm)
    sparse_prediction: bool = False         # MLM: project to the vocabulary only at labelled positions
    unpad: bool = False                     # run per-token work only on real (non-padding) tokens
    unpad_attention: str = "auto"           # how unpadded sdpa attention meets variable lengths: "rows" (one
    #   sequence at a time), "repad" (rows put back for one fused kernel), "nested" (a jagged nested tensor: one
    #   variable-length kernel on CUDA); "auto": rows on the CPU, repad on CUDA
    fused_qkv: bool = False                 # Q, K, V from one (C, 3C) matmul instead of three (C, C); same weights

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_labels"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            p = getattr(self, name)
            if p is not None and not 0.0 <= p < 1.0:
                raise InputError(f"{name} must be in [0, 1), not {p}")
        if not (math.isfinite(self.layer_norm_eps) and self.layer_norm_eps > 0):
            raise InputError(f"layer_norm_eps must be positive, not {self.layer_norm_eps}")
        if self.hidden_size % self.num_attention_heads:
            raise InputError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads ({self.num_attention_heads})"
            )
        if self.attn_impl not in ("math", "sdpa"):
            raise InputError(f"attn_impl must be 'math' or 'sdpa', not {self.attn_impl!r}")
        if self.unpad_attention not in UNPAD_ATTENTION:
            raise InputError(f"unpad_attention must be one of {UNPAD_ATTENTION}, not {self.unpad_attention!r}")
        if self.position_embedding_type not in ("absolute", "sinusoidal", "rotary"):
            raise InputError(
                f"position_embedding_type must be 'absolute', 'sinusoidal' or 'rotary', not {self.position_embedding_type!r}"
            )
        if self.position_embedding_type == "rotary" and self.head_size % 2:
            raise InputError(
                f"rotary positions turn pairs of dimensions, so the head size hidden_size / num_attention_heads must "
                f"be even, not {self.hidden_size} / {self.num_attention_heads} = {self.head_size}; change hidden_size "
                "or num_attention_heads"
            )
        if self.id2label is not None:  # JSON turns int keys into strings
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}

    @property
    def head_size(self) -> int:
        """D = C / H."""
        return self.hidden_size // self.num_attention_heads

    # --- JSON ---
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "BertConfig":
        check_fields(d, source)
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "BertConfig":
        """The config a file describes; fields the file leaves out take the defaults above (BERT-base)."""
        return cls(**read_fields(path))

    # --- Hugging Face ---
    @classmethod
    def from_hf_config(cls, hf: dict) -> "BertConfig":
        """Build from a Hugging Face `config.json` dict (or `transformers.BertConfig.to_dict()`); unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)} - set(MINIBERT_FIELDS)
        d = {k: v for k, v in hf.items() if k in known}
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise InputError(f"position_embedding_type {d['position_embedding_type']!r} is not supported; use 'absolute'")
        if "id2label" in d and d["id2label"] is not None:
            d["num_labels"] = len(d["id2label"])
        return cls(**d)

    def to_hf_config(self) -> dict:
        """A dict that `transformers.BertConfig(**d)` accepts; fails for what Hugging Face's BERT cannot express."""
        if self.norm_first:
            raise InputError("a pre-LN model (norm_first=True) has no Hugging Face BERT equivalent")
        if self.position_embedding_type != "absolute":
            raise InputError(f"{self.position_embedding_type} positions have no Hugging Face BERT equivalent: "
                             "only BERT's learned position table (position_embedding_type='absolute') exports")
        d = {k: v for k, v in self.to_dict().items() if k not in MINIBERT_FIELDS}
        if d["id2label"] is None:
            d["id2label"] = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        d["label2id"] = {v: k for k, v in d["id2label"].items()}
        d["model_type"] = "bert"
        return d


def field_types() -> dict[str, tuple[type, bool]]:
    """Each BertConfig field's type and whether it may be None: {"hidden_size": (int, False), ...}."""
    out = {}
    for name, hint in typing.get_type_hints(BertConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        inner = args[0] if optional else hint
        out[name] = (typing.get_origin(inner) or inner, optional)
    return out


# How a value of each field type is described in messages.
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object"}


def check_fields(d: dict, source: str = "config") -> None:
    """InputError for an unknown field or a value of the wrong JSON type (an int field takes an integer, a float
    field a number, a bool field true or false, a str field a string; an optional field also takes null)."""
    types = field_types()
    unknown = sorted(set(d) - set(types))
    if unknown:
        raise InputError(f"{source}: unknown config field(s) {unknown}; known fields are {sorted(types)}")
    for name, value in d.items():
        base, optional = types[name]
        if value is None:
            ok = optional
        elif base is bool:
            ok = isinstance(value, bool)
        elif base is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif base is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, base)
        if not ok:
            wanted = TYPE_NAMES[base] + (" or null" if optional else "")
            raise InputError(f"{source}: {name} must be {wanted}, not {json.dumps(value)}")


def read_fields(path: str | Path) -> dict:
    """The fields a JSON config file sets, checked by `check_fields`, and only those (no defaults filled in)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a JSON object of config fields, like {{\"num_hidden_layers\": 3}}")
    check_fields(d, str(path))
    return d


# Sizes by name. "base" is BERT-base; "tiny" and "small" are sized for CPUs and tests.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def preset(name: str, **overrides) -> BertConfig:
    """A config by preset name, with any field overridden."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return BertConfig(**{**PRESETS[name], **overrides})
