"""The implementations under comparison, built with identical weights.

A variant is named by its family and switches:

    hf-eager, hf-sdpa            transformers' model with attn_implementation="eager" / "sdpa"
    ort-sdpa                     BERT inference only: the hf-sdpa model exported to ONNX (torch.onnx, dynamo
                                 exporter) and run by ONNX Runtime with every graph optimisation, on as many threads
                                 as torch has (needs the onnx, onnxscript and onnxruntime packages; without them
                                 the variant is reported as unavailable and the case goes on)
    mb-math, mb-sdpa             minibert's with attn_impl="math" / "sdpa"
    ...+unpad                    minibert with unpad=True (per-token work on real tokens only)
    ...+unpad=rows|repad|nested  the same, with that unpad_attention (how attention meets the variable lengths)
    ...+sparse                   minibert with sparse_prediction=True (MLM head at labelled positions only)
    ...+fusedqkv                 minibert with fused_qkv=True (Q, K, V from one matmul)
    ...+chunked                  GPT-2 and T5: chunked_loss=True (the output layer and its loss a few rows at a
                                 time, the (B, T, V) logits never formed)
    ...+compile                  the same model wrapped in torch.compile (`minibert.compiled.compile_model`, which
                                 only widens what dynamo traces in one graph; transformers' models get it too)

The model kinds: BERT's encoder, MLM model, classifier and token classifier ("tagger") (`minibert.hf`), GPT-2 and
T5 (`minibert.gpt_t5_checkpoint`, which take attn_impl, chunked and, for T5, unpad and fusedqkv). GPT-2 and T5 are
sized from a minibert preset as the causal and span objectives size them (`train.causal`, `train.span`: T5 with as
many encoder and as many decoder blocks as the preset has).

`ModelSet` holds the models of one model kind and size. Its reference is a freshly initialised transformers model
(hf-sdpa); every other transformers variant loads its state dict, and every minibert variant is made from it by
`minibert.hf.from_hf_model` (or `minibert.gpt_t5_checkpoint.from_hf_model`). `prepare` puts the reference weights back into
every model before each comparison, so a training case never starts from weights another case has updated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

import minibert
from minibert import gpt_t5_checkpoint
from minibert.compiled import compile_model
from minibert.config import PRESETS
from minibert.hf import from_hf_model
from minibert.state_dict import load_state_dict_checked

FAMILIES = {"hf": "transformers", "mb": "minibert", "ort": "onnxruntime"}
ATTENTION = {"hf": ("eager", "sdpa"), "mb": ("math", "sdpa"), "ort": ("sdpa",)}
SWITCHES = ("unpad", "sparse", "fusedqkv", "chunked", "compile")
UNPAD_ATTENTION = ("rows", "repad", "nested")  # the explicit choices of minibert's unpad_attention
BASELINE = "hf-sdpa"

# kind -> (minibert class, transformers auto-class name, transformers config class name)
MODEL_KINDS = {
    "encoder": (minibert.BertModel, "AutoModel", "BertConfig"),
    "mlm": (minibert.BertForMaskedLM, "AutoModelForMaskedLM", "BertConfig"),
    "classifier": (minibert.BertForSequenceClassification, "AutoModelForSequenceClassification", "BertConfig"),
    "tagger": (minibert.BertForTokenClassification, "AutoModelForTokenClassification", "BertConfig"),
    "gpt": (minibert.GPT2LMHeadModel, "AutoModelForCausalLM", "GPT2Config"),
    "t5": (minibert.T5ForConditionalGeneration, "AutoModelForSeq2SeqLM", "T5Config"),
}
BERT_KINDS = ("encoder", "mlm", "classifier", "tagger")
TAGGER_LABELS = 9  # the token classifier's outputs: O and B-/I- of four entity types, as CoNLL-2003's tag set
GPT_POSITIONS = 1024  # GPT-2's position table: longer than any block of the grids
N_SENTINELS = 100  # T5's sentinel ids, after the vocabulary (train.span)
SPECIAL_IDS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK], as in benchmarks.data


def model_config(kind: str, size: str, vocab_size: int):
    """The minibert config of one kind at a preset's size: a BertConfig, or the GPT2Config / T5Config that the
    causal and span objectives map the preset onto (T5's vocabulary gets the sentinels)."""
    if kind == "tagger":
        return minibert.preset(size, vocab_size=vocab_size, num_labels=TAGGER_LABELS)
    if kind in BERT_KINDS:
        return minibert.preset(size, vocab_size=vocab_size)
    if size not in PRESETS:
        raise ValueError(f"unknown preset {size!r}; choose one of {sorted(PRESETS)}")
    special = torch.tensor(SPECIAL_IDS)
    if kind == "gpt":
        from train.causal import CausalLM

        objective = CausalLM(vocab_size, special, bos_token_id=2, eos_token_id=3, pad_token_id=0)
        return objective.config_from(PRESETS[size], vocab_size, GPT_POSITIONS)
    if kind == "t5":
        from train.span import SpanCorruption

        objective = SpanCorruption(vocab_size, special, pad_token_id=0, eos_token_id=3, n_sentinels=N_SENTINELS)
        return objective.config_from(PRESETS[size], vocab_size, 0)
    raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(MODEL_KINDS)}")


def num_layers(config) -> int:
    """L of any of the three configs (T5: the encoder's, which the grids give the decoder too)."""
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, name):
            return getattr(config, name)
    raise TypeError(f"no layer count in {type(config).__name__}")


@dataclass(frozen=True)
class Variant:
    name: str
    family: str  # "hf" or "mb"
    attention: str  # hf: "eager" | "sdpa"; mb: "math" | "sdpa"
    unpad: bool = False
    sparse: bool = False
    compile: bool = False
    unpad_attention: str = "auto"
    fused_qkv: bool = False
    chunked: bool = False

    @property
    def library(self) -> str:
        return FAMILIES[self.family]

    @property
    def uncompiled_name(self) -> str:
        return self.name.replace("+compile", "")

    def minibert_switches(self) -> dict:
        """BERT's config switches (chunked is GPT-2's and T5's)."""
        if self.chunked:
            raise ValueError(f"variant {self.name!r}: chunked is a switch of minibert's GPT-2 and T5, not its BERT")
        return {"attn_impl": self.attention, "unpad": self.unpad, "sparse_prediction": self.sparse,
                "unpad_attention": self.unpad_attention, "fused_qkv": self.fused_qkv}

    def decoder_switches(self, kind: str) -> dict:
        """GPT-2's (kind "gpt") and T5's ("t5") config switches: the attention path and the chunked loss; T5 also
        unpad and fusedqkv (sparse is BERT's alone, and GPT-2's Q, K, V are one matmul already)."""
        if self.sparse or (kind == "gpt" and (self.unpad or self.fused_qkv)):
            raise ValueError(f"variant {self.name!r}: sparse is a switch of minibert's BERT, unpad and fusedqkv of "
                             "its BERT and T5")
        switches = {"attn_impl": self.attention, "chunked_loss": self.chunked}
        if kind == "t5":
            switches.update(unpad=self.unpad, fused_qkv=self.fused_qkv)
        return switches


def parse_variant(name: str) -> Variant:
    """`hf-sdpa+compile` -> Variant(family="hf", attention="sdpa", compile=True); raises ValueError if unknown.

    `+unpad=nested` is `+unpad` with unpad_attention="nested"."""
    head, *switches = name.split("+")
    how = [s.partition("=")[2] for s in switches if s.startswith("unpad=")]
    if any(h not in UNPAD_ATTENTION for h in how):
        raise ValueError(f"variant {name!r}: unpad= takes one of {list(UNPAD_ATTENTION)}")
    switches = ["unpad" if s.startswith("unpad=") else s for s in switches]
    family, _, attention = head.partition("-")
    if family not in FAMILIES or attention not in ATTENTION[family]:
        choices = [f"{f}-{a}" for f, atts in ATTENTION.items() for a in atts]
        raise ValueError(f"unknown variant {name!r}: it must start with one of {choices}")
    unknown = [s for s in switches if s not in SWITCHES]
    if unknown or len(set(switches)) != len(switches):
        raise ValueError(f"variant {name!r}: switches must be distinct, from {list(SWITCHES)}")
    if family != "mb" and {"unpad", "sparse", "fusedqkv", "chunked"} & set(switches):
        raise ValueError(f"variant {name!r}: unpad, sparse, fusedqkv and chunked are minibert switches")
    if family == "ort" and switches:
        raise ValueError(f"variant {name!r}: ort-sdpa takes no switch")
    return Variant(name, family, attention, "unpad" in switches, "sparse" in switches, "compile" in switches,
                   how[0] if how else "auto", "fusedqkv" in switches, "chunked" in switches)


@dataclass
class BuiltModel:
    variant: Variant
    module: nn.Module  # the model itself: parameters, train()/eval()
    call: nn.Module  # what a step calls: the module, or its torch.compile wrapper


def minibert_from_hf(hf_model: nn.Module, cls: type[nn.Module], switches: dict) -> tuple[nn.Module, list[str]]:
    """A minibert `cls` with `hf_model`'s weights (through `minibert.hf.from_hf_model`) and the given config switches.

    Returns the model and the switches that `from_hf_model` did not apply. Such switches are then applied by
    building the model again from the converted config and copying the converted weights, so a benchmark never
    labels one implementation with another's name.
    """
    model = from_hf_model(hf_model, cls, **switches)
    dropped = sorted(k for k, v in switches.items() if getattr(model.config, k) != v)
    if dropped:
        fixed = cls(dataclasses.replace(model.config, **switches))
        fixed.load_state_dict(model.state_dict())
        model = fixed
    wrong = [k for k, v in switches.items() if getattr(model.config, k) != v]
    if wrong:
        raise RuntimeError(f"minibert model config does not have the requested switches {wrong}")
    return model, dropped


class OnnxRuntimeModel(nn.Module):
    """A transformers BertModel exported to ONNX and run by ONNX Runtime (all graph optimisations, torch's thread
    count), called like the model: (input_ids, attention_mask) -> last_hidden_state, pooler_output as torch tensors.
    If the packages are missing, `export` still returns one, whose every call raises that ImportError: the gate then
    reports the variant as unavailable and the case runs without it."""

    def __init__(self, session=None, error: str | None = None):
        super().__init__()
        self.session, self.error = session, error

    @classmethod
    def export(cls, hf_model: nn.Module) -> "OnnxRuntimeModel":
        import contextlib
        import io
        import logging
        import tempfile
        from pathlib import Path

        try:
            import onnxruntime
        except ImportError as err:
            return cls(error=f"{err}; pip install onnx onnxscript onnxruntime for the ort-sdpa variant")

        class Graph(nn.Module):  # positional inputs and tuple outputs, as the exporter wants them
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                return out.last_hidden_state, out.pooler_output

        device = next(hf_model.parameters()).device
        ids = torch.randint(5, 100, (2, 16), device=device)
        batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("length", min=2, max=4096)
        quiet = logging.getLogger("torch.onnx")  # the exporter's warnings about operators BERT does not use
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):  # and its progress log
            path = Path(tmp) / "model.onnx"
            torch.onnx.export(Graph(hf_model.eval()), (ids, torch.ones_like(ids)), str(path), dynamo=True,
                              input_names=["input_ids", "attention_mask"],
                              dynamic_shapes=({0: batch, 1: length}, {0: batch, 1: length}), verbose=False)
            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        quiet.setLevel(level)
        return cls(session)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        from types import SimpleNamespace

        if self.session is None:
            raise ImportError(self.error)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        last, pooled = self.session.run(None, {"input_ids": input_ids.cpu().numpy(),
                                               "attention_mask": mask.cpu().numpy()})
        return SimpleNamespace(last_hidden_state=torch.from_numpy(last), pooler_output=torch.from_numpy(pooled))


class ModelSet:
    """All variants of one model kind and config, sharing the reference weights."""

    def __init__(self, kind: str, config, device: torch.device, seed: int):
        import transformers

        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(MODEL_KINDS)}")
        self.kind = kind
        self.config = config  # minibert's BertConfig, GPT2Config or T5Config
        self.device = device
        self.minibert_class, auto_name, config_name = MODEL_KINDS[kind]
        self.auto_class = getattr(transformers, auto_name)
        hf_fields = {k: v for k, v in config.to_hf_config().items() if k != "model_type"}
        self.hf_config = getattr(transformers, config_name)(**hf_fields)
        torch.manual_seed(seed)
        reference = self._hf_model("sdpa")
        self.reference_state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
        self.models: dict[str, BuiltModel] = {BASELINE: BuiltModel(parse_variant(BASELINE), reference, reference)}
        self.notes: list[str] = []  # anything the set had to work around, for the report

    def _hf_model(self, attention: str) -> nn.Module:
        with torch.device(self.device):
            model = self.auto_class.from_config(self.hf_config, attn_implementation=attention)
        return model.to(self.device)

    def _build(self, variant: Variant) -> nn.Module:
        if variant.family == "ort":
            if self.kind != "encoder":
                raise ValueError(f"variant {variant.name!r} runs BERT inference only, not the {self.kind} model")
            return OnnxRuntimeModel.export(self.models[BASELINE].module)
        if variant.family == "hf":
            model = self._hf_model(variant.attention)
            model.load_state_dict(self.reference_state)
            return model
        reference = self.models[BASELINE].module  # holds the reference weights: prepare() reset it first
        if self.kind not in BERT_KINDS:
            with torch.device(self.device):
                model = gpt_t5_checkpoint.from_hf_model(reference, **variant.decoder_switches(self.kind))
            return model.to(self.device)
        with torch.device(self.device):
            model, dropped = minibert_from_hf(reference, self.minibert_class, variant.minibert_switches())
        if dropped:
            note = (f"minibert.hf.from_hf_model ignored the config override(s) {dropped}; the {variant.name} model "
                    "was rebuilt from the converted config with them set, and the converted weights copied in")
            if note not in self.notes:
                self.notes.append(note)
        return model.to(self.device)

    def prepare(self, names: list[str]) -> dict[str, BuiltModel]:
        """The named variants, each holding exactly the reference weights (built on first use)."""
        for built in self.models.values():
            if built.variant.family == "ort":  # inference only: its exported weights are the reference's, fixed
                continue
            if built.variant.family == "hf":
                built.module.load_state_dict(self.reference_state)
            elif self.kind in BERT_KINDS:
                load_state_dict_checked(built.module, self.reference_state)
            else:
                gpt_t5_checkpoint.load_checked(built.module, self.reference_state)
            built.module.zero_grad(set_to_none=True)
        out = {}
        for name in names:
            if name not in self.models:
                variant = parse_variant(name)
                module = self._build(variant)
                # A compiled variant gets a model of its own, so that no two variants share parameters.
                self.models[name] = BuiltModel(variant, module, compile_model(module) if variant.compile else module)
            out[name] = self.models[name]
        return out
