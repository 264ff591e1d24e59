"""What fine-tuning needs of each pretrained model family: the body that reads a text, its parts, how it pools.

Shapes: B batch, T tokens, C hidden size, L blocks, K classes.

`python -m train.finetune` classifies with any of the three models `train.pretrain` trains. Each reads the text
into token vectors h (B, T, C); one vector per text is pooled from them (`minibert/pooling.py`), and logits =
Dropout(pooled) W + b (B, K) with the loss, the head every classifier shares (`minibert/heads.py`,
`SequenceClassificationHead`); `train/classifier.py` wires them together. What differs is the body kept from
pretraining and what its vectors have read:

    family  pretrained by                the body kept               h_t has read       poolings
    bert    --objective mlm or electra   BertModel                   every token        mean, cls, pooler, last
    gpt2    --objective causal           GPT2Model (no LM head)      tokens 0..t only   mean, last
    t5      --objective span             T5's encoder (no decoder)   every token        mean, cls, last

A GPT vector has read only the tokens before it: its [CLS] (position 0) has read nothing but itself, so a text is
the mean of its vectors or its last real token, the one vector that has read all of it (GPT-1's way, and Hugging
Face's GPT2ForSequenceClassification's). T5 keeps its encoder alone, which reads the text both ways as BERT's
does; the decoder, which writes text, has no part in choosing a class (T5's own paper writes the class name as
text instead, with the decoder). Mean is the default for every family, so that the objectives are compared under
the same fine-tuning. BERT's pooler and layer fusion (a mix of the L+1 layer outputs its encoder returns) are
BERT's alone.

BERT keeps `BertForSequenceClassification` (it exports to Hugging Face). GPT-2 and T5 get the classifiers below,
their modules named as in the language models (`transformer.`, `shared.` + `encoder.`), so that fine-tuning starts
from a pretraining run by copying the tensors of the same names, as it does for BERT; only `classifier.` is new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from minibert import BertConfig, BertForSequenceClassification, BertForTokenClassification, GPT2Config, T5Config
from minibert.checkpoint import family, load_checked, load_pretrained, read_config
from minibert.files import CONFIG_NAME, WEIGHTS_NAME, read_weights
from minibert.errors import InputError
from minibert.gpt import GPT2Model, init_gpt2_weights
from minibert.heads import SequenceClassificationHead
from minibert.t5 import T5Stack, init_t5_weights

NAMES = {"bert": "BERT", "gpt2": "GPT-2", "t5": "T5"}
POOLINGS = {"bert": ("mean", "cls", "pooler", "last"), "gpt2": ("mean", "last"), "t5": ("mean", "cls", "last")}


class GPT2ForClassification(nn.Module):
    """GPT-2's body and the classification head: h = GPT2Model(ids) (B, T, C), logits = Dropout(pooled h) W + b
    (B, K), `classifier` a `minibert.heads.SequenceClassificationHead`."""

    def __init__(self, config: GPT2Config, label_names: list[str]):
        super().__init__()
        self.config = config
        self.id2label = dict(enumerate(label_names))
        self.transformer = GPT2Model(config)
        self.classifier = SequenceClassificationHead(config.n_embd, len(label_names), config.resid_pdrop)
        self.apply(lambda m: init_gpt2_weights(m, config))  # the classifier too: N(0, 0.02²), bias 0

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> (B, T, C): each position's vector after the final LayerNorm, causal attention."""
        return self.transformer(input_ids, attention_mask).last_hidden_state


class T5EncoderForClassification(nn.Module):
    """T5's encoder and the classification head: h = encoder(shared[ids]) (B, T, C), logits = Dropout(pooled h)
    W + b (B, K), `classifier` a `minibert.heads.SequenceClassificationHead`."""

    def __init__(self, config: T5Config, label_names: list[str]):
        super().__init__()
        self.config = config
        self.id2label = dict(enumerate(label_names))
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.classifier = SequenceClassificationHead(config.d_model, len(label_names), config.dropout_rate)
        self.apply(lambda m: init_t5_weights(m, config))
        f = config.initializer_factor
        nn.init.normal_(self.shared.weight, std=f)  # T5's embedding std, as T5ForConditionalGeneration's
        nn.init.normal_(self.classifier.weight, std=f * config.d_model**-0.5)  # as T5's dense layers from C
        nn.init.zeros_(self.classifier.bias)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> (B, T, C): the encoder's output, bidirectional attention over the real tokens."""
        h, _ = self.encoder(input_ids, attention_mask)
        return h


CLASSIFIERS = {"gpt2": GPT2ForClassification, "t5": T5EncoderForClassification}


BERT_HEADS = (BertForSequenceClassification, BertForTokenClassification)  # BertModel as `bert`, a head beside it


def classifier_model(config, label_names: list[str], task: str = "classification") -> nn.Module:
    """A fresh classifier of the family of `config`, with K = len(label_names) outputs: for BERT its
    BertForSequenceClassification, or for task "ner" its BertForTokenClassification (num_labels and id2label in
    its config, which exports them)."""
    kind = family(config)
    if task == "ner" and kind != "bert":
        raise InputError(f"--task ner fine-tunes a BERT body; this is a {NAMES[kind]} model (pretrain one with "
                         "--objective mlm or electra)")
    if kind == "bert":
        config = BertConfig.from_dict({**config.to_dict(), "num_labels": len(label_names),
                                       "id2label": dict(enumerate(label_names))})
        return BertForTokenClassification(config) if task == "ner" else BertForSequenceClassification(config)
    return CLASSIFIERS[kind](config, label_names)


def copy_pretrained(model: nn.Module, pretrained: nn.Module, fresh: list[str]) -> None:
    """Start `model` from the weights of `pretrained` (BERT: the BertModel, fresh naming the weights its checkpoint
    lacked; GPT-2, T5: the language model, whose tensors of the same names are the body's). Only the head, and
    for BERT the `fresh` weights, keep their initialisation."""
    if isinstance(model, BERT_HEADS):
        target = model.bert.state_dict()  # a token classifier's BERT has no pooler
        state = {k: v for k, v in pretrained.state_dict().items() if k not in fresh and k in target}
        missing, unexpected = model.bert.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) <= set(fresh), (missing, unexpected)
        return
    target = model.state_dict()
    state = {k: v for k, v in pretrained.state_dict().items() if k in target}  # not T5's decoder, nor an LM head
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)


def config_overrides(kind: str, overrides: dict) -> dict:
    """train.finetune's switches, named as BERT's config fields, as the fields of a `kind` config: the dropouts
    (GPT-2: resid_pdrop and embd_pdrop from hidden_dropout_prob, attn_pdrop from attention_probs_dropout_prob;
    T5: its one dropout_rate from hidden_dropout_prob). The classifier's own dropout is the body's hidden one.
    unpad (the real tokens alone) reaches GPT-2's blocks and T5's encoder too; unpad_attention is BERT's alone."""
    if kind == "bert":
        return dict(overrides)
    out = {}
    if "hidden_dropout_prob" in overrides:
        p = overrides["hidden_dropout_prob"]
        out.update({"resid_pdrop": p, "embd_pdrop": p} if kind == "gpt2" else {"dropout_rate": p})
    if kind == "gpt2" and "attention_probs_dropout_prob" in overrides:
        out["attn_pdrop"] = overrides["attention_probs_dropout_prob"]
    if "unpad" in overrides:
        out["unpad"] = overrides["unpad"]
    return out


LAYERS_FIELD = {"bert": "num_hidden_layers", "gpt2": "n_layer", "t5": "num_layers"}  # L, the encoder's for T5
POSITIONS_FIELD = {"bert": "max_position_embeddings", "gpt2": "n_positions"}  # T5's relative positions: no limit


def num_layers(config) -> int:
    """L, the blocks of the body: BERT's encoder layers, GPT-2's blocks, T5's encoder blocks."""
    return getattr(config, LAYERS_FIELD[family(config)])


def max_positions(config) -> int | None:
    """The longest text the body has positions for (BERT's and GPT-2's learned tables), or None (T5)."""
    name = POSITIONS_FIELD.get(family(config))
    return getattr(config, name) if name else None


def check_choices(kind: str, pooling: str, strategy: str) -> None:
    """InputError unless --pooling and --strategy are ones a `kind` body has."""
    if pooling not in POOLINGS[kind]:
        raise InputError(f"--pooling {pooling} is not for a {NAMES[kind]} model; choose "
                         f"{', '.join(POOLINGS[kind])} (train/families.py says why)")
    if strategy == "layer-fusion" and kind != "bert":
        raise InputError(f"--strategy layer-fusion mixes the layer outputs of BERT's encoder; a {NAMES[kind]} "
                         "model fine-tunes with full, linear-probe or freeze-bottom-k")


@dataclass
class Parts:
    """A body's modules by depth, for freezing and layer-wise learning rates: embeddings (depth 0), blocks
    (1..L), the final norm after the last block (L), if any; everything else is the head (L + 1)."""

    embeddings: list[nn.Module]
    blocks: list[nn.Module]
    final_norm: nn.Module | None


def parts(model: nn.Module) -> Parts:
    if isinstance(model, BERT_HEADS):
        bert = model.bert
        return Parts([bert.embeddings], list(bert.encoder.layer), bert.encoder.final_layer_norm)
    if isinstance(model, GPT2ForClassification):
        body = model.transformer
        return Parts([body.wte, body.wpe, body.drop], list(body.h), body.ln_f)
    if isinstance(model, T5EncoderForClassification):
        return Parts([model.shared], list(model.encoder.block), model.encoder.final_layer_norm)
    raise InputError(f"no fine-tuning parts for {type(model).__name__}")


def depths(model: nn.Module) -> dict[int, int]:
    """id(parameter) -> its depth (`Parts`), for every parameter of `model`."""
    p = parts(model)
    L = len(p.blocks)
    out = {id(w): L + 1 for w in model.parameters()}
    for module, depth in [*((m, 0) for m in p.embeddings), *((b, i + 1) for i, b in enumerate(p.blocks)),
                          *(((p.final_norm, L),) if p.final_norm is not None else ())]:
        for w in module.parameters():
            out[id(w)] = depth
    return out


def load_classifier_model(directory: Path, labels_path: Path, task: str = "classification") -> nn.Module:
    """The classifier saved in a fine-tuned run directory: BERT's from its config (which holds the labels), a
    GPT-2 or T5 one from its config, the labels file (`train.classifier`'s labels.json) and its weights, checked key by
    key."""
    config = read_config(directory / CONFIG_NAME)
    if family(config) == "bert":
        model, _ = load_pretrained(directory, BertForTokenClassification if task == "ner"
                                   else BertForSequenceClassification)
        return model
    try:
        id2label = json.loads(labels_path.read_text(encoding="utf-8"))["id2label"]
        label_names = [id2label[str(i)] for i in range(len(id2label))]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{labels_path}: cannot be read ({e}); is the run complete? Fine-tune it again") from None
    model = classifier_model(config, label_names)
    load_checked(model, read_weights(directory / WEIGHTS_NAME))
    return model
