"""python -m train.predict RUN_DIR "text" ...: classify texts with a model fine-tuned by `train.finetune`.

    python -m train.predict runs/finetune-20250101-120000 "质量很好，物流也快" "太差了"
    python -m train.predict RUN_DIR --file reviews.txt --json         # one text per line
    python -m train.predict RUN_DIR --export-hf hf-model               # for transformers (below)

A model trained on sentence pairs takes each input as "text<TAB>pair". A GPT-2 or T5 run fine-tuned by
`train.finetune` predicts the same way; only a BERT one exports to Hugging Face. What --export-hf writes depends
on the positions and the pooling, so that transformers computes the same logits:

    learned positions, --pooling pooler           BertForSequenceClassification  (BERT's own classifier)
    learned positions, --pooling cls, mean, last  BertModel + the head           (`minibert.hf.save_hf`)
    rotary positions,  --pooling cls, mean, last  RoFormerModel + the head       (`minibert.hf_roformer`)

The head is `classifier.safetensors` (classifier.weight (K, C), classifier.bias (K,)) and `minibert_head.json`
(the pooling and the label names); the export prints the lines of transformers code that tokenize a list of
texts and give the logits:

    h      = encoder(input_ids, attention_mask, token_type_ids).last_hidden_state    (B, T, C)
    pooled = pool(h, attention_mask)      (B, C)   cls, mean or last, as `minibert.pooling` pools
    logits = pooled W_c^T + b_c           (B, K)   `minibert.heads.SequenceClassificationHead` (dropout off)

Every export also holds the tokenizer: `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`,
which `transformers.AutoTokenizer.from_pretrained(DIR)` opens as a fast tokenizer giving minibert's input_ids,
token_type_ids and attention_mask (pairs, padding, truncation at the fine-tuned max length; how, and the rare
texts where it can differ: `tokenizer.hf_export`), and minibert's own tokenizer files in DIR/tokenizer/. A
tokenizer with no exact transformers form (a SentencePiece "word" model) gets, instead of those three, a
`tokenizer_config.json` on which AutoTokenizer fails rather than make up a tokenizer from config.json, and the
export says to tokenize with DIR/tokenizer/.

DIR is a new or empty directory, or an earlier export: its `.minibert-run` marker lists the files that export
wrote, and a re-export replaces those alone (a file of yours beside them stays). Any other directory is refused
before the model is loaded, with nothing in it changed.

Refused, with the option that prevents it: layer fusion (--strategy layer-fusion; no transformers class mixes
the layers), a pre-LN body (norm_first), sinusoidal positions, and a rotary model with --pooling pooler (BERT's
tanh pooler is not RoFormerForSequenceClassification's head, which applies the encoder's hidden_act).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minibert.errors import InputError
from minibert.hf_roformer import check_roformer, save_roformer
from minibert.rundir import OutDir, RunKind, check_usable, claim, inspect_out
from train import families
from tokenizer.command import build_parser as build_options_parser
from tokenizer.command import opt, parse_options
from train.cli import write_json
from train.corpus_files import iter_file_lines
from train.device import autocast
from train.batches import EncodedSet, collate, encode_texts, load_tokenizer, sorted_batches
from train.ner_encoding import encode_sentences, word_tags
from train.ner_metrics import entities
from train.classifier import FineTuned, SequenceClassifier, load_classifier
from tokenizer.command import command_main
from tokenizer.hf_export import (PLACEHOLDER_FILES, TRANSFORMERS_FILES, save_for_transformers,
                                  save_placeholder, unsupported_reason)


@torch.no_grad()
def predict_logits(classifier: SequenceClassifier, data: EncodedSet, batch_size: int, pad_id: int) -> np.ndarray:
    """(N, K) logits in the order of `data`; batches run sorted by length so short texts pad only to short ones."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    out = np.zeros((len(data), classifier.num_labels), dtype=np.float32)
    for indices in sorted_batches(data.lengths, batch_size):
        batch = {k: v.to(device) for k, v in collate(data, indices, pad_id).items()}
        with autocast(device):
            logits = classifier(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        out[indices] = logits.float().cpu().numpy()
    classifier.train(was_training)
    return out


@torch.no_grad()
def window_logits(classifier: FineTuned, data, batch_size: int, pad_id: int) -> list[np.ndarray]:
    """A token classifier's (T_i, K) logits for every window of `data` (`train.ner_encoding.TokenWindows`), in
    its order; batches run sorted by length, as `predict_logits`'s."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    out: list[np.ndarray] = [np.zeros(0)] * len(data)
    for indices in sorted_batches(data.lengths, batch_size):
        batch = {k: v.to(device) for k, v in collate(data, indices, pad_id).items()}
        with autocast(device):
            logits = classifier(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B, T, K)
        logits = logits.float().cpu().numpy()
        for row, i in enumerate(indices):
            out[i] = logits[row, : len(data.input_ids[i])]  # (T_i, K)
    classifier.train(was_training)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """A fine-tuned run loaded once: `predict(texts)` -> [(label, {label: probability})]."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise InputError(f"{self.run_dir}: no such run directory")
        try:
            self.classifier, self.meta = load_classifier(self.run_dir)
        except (ValueError, KeyError, TypeError) as e:  # a finetune.json cut short or edited by hand
            raise InputError(f"{self.run_dir}/finetune.json cannot be read ({e}); is the run complete? Fine-tune it "
                             "again") from None
        self.tok = load_tokenizer(self.run_dir / "tokenizer")
        id2label = self.classifier.id2label
        self.label_names = [id2label[i] for i in range(self.classifier.num_labels)]
        self.max_length = int(self.meta.get("max_length") or families.max_positions(self.classifier.config) or 512)
        self.text_pair = bool(self.meta.get("text_pair", False))
        self.task = self.meta.get("task", "classification")

    def encode(self, texts: list[str]) -> EncodedSet:
        pairs = None
        if self.text_pair:
            split = [t.split("\t", 1) for t in texts]
            for t, parts in zip(texts, split):
                if len(parts) != 2:
                    raise InputError(f"this model was trained on sentence pairs; give each input as "
                                     f"'text<TAB>pair' (got {t[:40]!r})")
            texts, pairs = [p[0] for p in split], [p[1] for p in split]
        ids, types = encode_texts(self.tok, texts, pairs, self.max_length)
        return EncodedSet(ids, types, np.zeros(len(ids), dtype=np.int64))

    def probabilities(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(N, K) class probabilities."""
        return softmax(predict_logits(self.classifier, self.encode(texts), batch_size, self.tok.pad_token_id))

    def tag(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """A token classifier's (`--task ner`) reading of each text: its words (characters of Chinese text), a tag
        per word, and the entities they make, each with its type, text and [start, end) word positions."""
        joiner = self.meta.get("joiner") or ""
        sentences = [list(text) if joiner == "" else text.split() for text in texts]
        windows = encode_sentences(self.tok, sentences, None, {}, self.max_length, joiner)
        logits = window_logits(self.classifier, windows, batch_size, self.tok.pad_token_id)
        results = []
        for text, words, tags in zip(texts, sentences, word_tags(logits, windows, self.label_names)):
            found = [{"type": kind, "text": joiner.join(words[start:end]), "start": start, "end": end}
                     for kind, start, end in entities(tags)]
            results.append({"text": text, "entities": found, "tags": tags})
        return results

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
        """Each text's label and probabilities, or for a token classifier its entities (`tag`)."""
        if self.task == "ner":
            return self.tag(texts, batch_size)
        probs = self.probabilities(texts, batch_size)
        return [
            {
                "text": text,
                "label": self.label_names[int(p.argmax())],
                "probability": float(p.max()),
                "probabilities": {name: float(q) for name, q in zip(self.label_names, p)},
            }
            for text, p in zip(texts, probs)
        ]

    def export_hf(self, directory: str | Path) -> str:
        """Write the model, its tokenizer and (for an encoder + head) its head for transformers (the module doc)
        into `directory`: new, empty or an earlier export, whose recorded files alone are replaced. Nothing is
        written when the model cannot be exported exactly. Returns what to tell the user: where it went, the
        transformers code that gives the logits of an encoder + head export, and a note when the tokenizer has no
        transformers form."""
        directory = Path(directory)
        out = check_export_dir(directory)
        target = export_target(self.classifier, self.run_dir)
        no_tokenizer = unsupported_reason(self.tok)  # None: AutoTokenizer gives minibert's ids
        if target in TOKEN_CLASSIFIERS:
            no_tokenizer = NER_TOKENIZER_NOTE
        run = claim(out, HF_EXPORT, export_entries(target, no_tokenizer is None))
        try:
            self._write_export(directory, target, no_tokenizer)
        except BaseException:  # a full disk, a signal: no half-written export is left looking complete
            run.release()
            raise
        run.close()
        if target in TOKEN_CLASSIFIERS:
            return (f"exported to {directory}: transformers' AutoModelForTokenClassification.from_pretrained (a "
                    f"{target}); {NER_TOKENIZER_NOTE}: tokenizer.load('{directory / TOKENIZER_DIR}')"
                    f".encode_words(list(text)) gives each character's ids, to be put between [CLS] and [SEP], "
                    f"and a character's tag is read at its first id")
        return export_message(directory, target, self.classifier.pooling, self.text_pair, self.max_length,
                              no_tokenizer)

    def _write_export(self, directory: Path, target: str, no_tokenizer: str | None) -> None:
        from minibert.hf import save_hf

        if target in ("BertForSequenceClassification", "BertForTokenClassification"):
            save_hf(self.classifier.model, directory)
        elif target == "RoFormerForTokenClassification":
            save_roformer(self.classifier.model, directory)
        else:
            (save_hf if target == "BertModel" else save_roformer)(self.classifier.model.bert, directory)
            save_head(self.classifier, directory, target, {"text_pair": self.text_pair,
                                                           "max_length": self.max_length})
        self.tok.save(directory / TOKENIZER_DIR)
        if no_tokenizer is None:
            save_for_transformers(self.tok, directory, self.max_length)
        else:
            save_placeholder(directory, no_tokenizer, f"tokenize with minibert's tokenizer in {TOKENIZER_DIR}/ "
                             "(tokenizer.load)")


# What an export writes. The directory's marker records the names of one export, and a re-export removes those
# alone: a user's file beside them stays, and one with the name of a file the export writes is refused.
HF_EXPORT = RunKind("hf-export", "Hugging Face export")
# A token classifier reads each character (word) tokenized on its own, which a transformers tokenizer of the whole
# text does not reproduce, so its export carries minibert's tokenizer alone.
TOKEN_CLASSIFIERS = ("BertForTokenClassification", "RoFormerForTokenClassification")  # learned or rotary positions
NER_TOKENIZER_NOTE = ("no transformers tokenizer was written: this model reads each character tokenized on its own "
                      "(minibert's Tokenizer.encode_words)")
MODEL_FILES = ("config.json", "model.safetensors")
HEAD_FILES = ("classifier.safetensors", "minibert_head.json")
TOKENIZER_DIR = "tokenizer"  # minibert's own tokenizer files, as `tokenizer.load` reads them
EXPORT_FILES = (*MODEL_FILES, *HEAD_FILES, TOKENIZER_DIR, *TRANSFORMERS_FILES)


def export_entries(target: str, tokenizer_exported: bool) -> list[str]:
    """The top-level names an export to `target` writes (the module doc)."""
    head = [] if target in ("BertForSequenceClassification", *TOKEN_CLASSIFIERS) else list(HEAD_FILES)
    tokenizer = TRANSFORMERS_FILES if tokenizer_exported else PLACEHOLDER_FILES
    return [*MODEL_FILES, *head, TOKENIZER_DIR, *tokenizer]


def export_target(classifier: SequenceClassifier, run_dir: Path) -> str:
    """The transformers class a fine-tuned classifier exports to exactly: "BertForSequenceClassification", or the
    encoder of an encoder + head export, "BertModel" or "RoFormerModel". InputError naming the option that
    prevents an exact export."""
    config = classifier.config
    if classifier.task == "ner":
        if config.position_embedding_type == "rotary":
            check_roformer(config)  # InputError for a pre-LN body (norm_first=True)
            return "RoFormerForTokenClassification"
        config.to_hf_config()  # InputError for what Hugging Face's BERT cannot express (pre-LN, sinusoidal)
        return "BertForTokenClassification"
    if classifier.family != "bert":
        raise InputError(f"{run_dir}: a fine-tuned {families.NAMES[classifier.family]} model has no "
                         "Hugging Face BertForSequenceClassification form; --export-hf is for BERT runs")
    if classifier.layer_fusion:
        raise InputError(
            f"{run_dir}: this model was fine-tuned with layer fusion (--strategy layer-fusion): its head mixes the "
            "outputs of every layer, which no transformers class does; --export-hf needs a model fine-tuned "
            "without layer fusion (--pooling pooler for BertForSequenceClassification, or --pooling cls, mean or "
            "last for the encoder and its head)")
    if config.position_embedding_type == "rotary":
        check_roformer(config)  # InputError for a pre-LN body (norm_first=True)
        if classifier.pooling == "pooler":
            raise InputError(
                f"{run_dir}: rotary positions have no Hugging Face BERT equivalent, and RoFormer's classifier is not "
                f"this one: the model was fine-tuned with --pooling pooler, BERT's tanh(h[:, 0] W_p + b_p), where "
                f"transformers' RoFormerForSequenceClassification applies hidden_act {config.hidden_act!r}; a "
                "rotary model fine-tuned with --pooling mean (the default), cls or last exports as RoFormerModel "
                "and its head")
        return "RoFormerModel"
    config.to_hf_config()  # InputError for what Hugging Face's BERT cannot express (pre-LN, sinusoidal positions)
    return "BertForSequenceClassification" if classifier.pooling == "pooler" else "BertModel"


def save_head(classifier: SequenceClassifier, directory: Path, encoder: str, meta: dict) -> None:
    """`classifier.safetensors` (classifier.weight (K, C), classifier.bias (K,)) and `minibert_head.json`: what
    turns the encoder's last hidden state into the logits (the module doc)."""
    from safetensors.torch import save_file

    head = classifier.model.classifier
    state = {"classifier.weight": head.weight, "classifier.bias": head.bias}
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(directory / HEAD_FILES[0]),
              metadata={"format": "pt"})
    id2label = classifier.id2label
    info = {"format_version": 1, "encoder": encoder, "pooling": classifier.pooling,
            "pooling_formula": POOLING_FORMULAS[classifier.pooling],
            "logits": "pooled @ classifier.weight.T + classifier.bias", "num_labels": classifier.num_labels,
            "id2label": {str(i): id2label[i] for i in range(classifier.num_labels)},
            "label2id": {id2label[i]: i for i in range(classifier.num_labels)}, **meta}
    write_json(directory / HEAD_FILES[1], info)


# `minibert.pooling`'s weightless poolings, as formulas (for minibert_head.json) and as transformers-side code.
POOLING_FORMULAS = {
    "cls": "h[:, 0]",
    "mean": "sum_t mask_t h_t / sum_t mask_t (real tokens only)",
    "last": "h[:, t*], t* = max{t : mask_t = 1} (the last real token)",
}
POOLING_CODE = {
    "cls": ["pooled = h[:, 0]  # (B, C)"],
    "mean": ["m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)",
             "pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, C)"],
    "last": ["last = (attention_mask.long() * torch.arange(h.size(1), device=h.device)).argmax(dim=1)  # (B,)",
             "pooled = h[torch.arange(h.size(0), device=h.device), last]  # (B, C)"],
}


def tokenizer_code(directory: Path, text_pair: bool, max_length: int, no_tokenizer: str | None) -> tuple[list, list]:
    """The lines that load the exported tokenizer, and those that make a padded batch of `texts` (and `pairs`)."""
    args = "texts, pairs" if text_pair else "texts"
    given = "  # texts, pairs: lists of str" if text_pair else "  # texts: a list of str"
    if no_tokenizer is None:
        return ([f"tokenizer = AutoTokenizer.from_pretrained({str(directory)!r})"],
                [f'batch = tokenizer({args}, padding=True, truncation=True, return_tensors="pt"){given}'])
    return ([f"tokenizer = load_minibert_tokenizer({str(directory / TOKENIZER_DIR)!r})"],
            [f"batch = tokenizer.encode_batch({args}, max_length={max_length}){given}"])


def head_code(directory: Path, encoder: str, pooling: str, text_pair: bool = False, max_length: int = 512,
              no_tokenizer: str | None = None) -> str:
    """The transformers code that gives an encoder + head export's logits of a list of texts, as minibert computes
    them: the exported tokenizer (minibert's own where it has no transformers form), the encoder, the pooling of
    `minibert.pooling` and `minibert.heads.SequenceClassificationHead`. `classify(input_ids, attention_mask,
    token_type_ids)` takes (B, T) ids; `logits` is (B, K) for `texts`."""
    load_tokenizer_lines, batch_lines = tokenizer_code(directory, text_pair, max_length, no_tokenizer)
    imports = [f"from transformers import AutoTokenizer, {encoder}"] if no_tokenizer is None else [
        f"from transformers import {encoder}",
        "from tokenizer import load as load_minibert_tokenizer  # minibert's: no transformers tokenizer matches it"]
    lines = [
        "import torch",
        "from safetensors.torch import load_file",
        *imports,
        "",
        *load_tokenizer_lines,
        f"encoder = {encoder}.from_pretrained({str(directory)!r}).eval()",
        f"head = load_file({str(directory / HEAD_FILES[0])!r})",
        "",
        "",
        "@torch.no_grad()",
        "def classify(input_ids, attention_mask, token_type_ids):",
        "    h = encoder(input_ids=input_ids, attention_mask=attention_mask,",
        "                token_type_ids=token_type_ids).last_hidden_state  # (B, T, C)",
        *(f"    {line}" for line in POOLING_CODE[pooling]),
        '    return torch.nn.functional.linear(pooled, head["classifier.weight"], head["classifier.bias"])'
        "  # (B, K)",
        "",
        "",
        *batch_lines,
        "logits = classify(**batch)  # (B, K); the label of column k: encoder.config.id2label[k]",
    ]
    return "\n".join(lines)


def export_message(directory: Path, target: str, pooling: str, text_pair: bool, max_length: int,
                   no_tokenizer: str | None) -> str:
    """What `--export-hf` tells the user: where the export went and how to use it."""
    if target == "BertForSequenceClassification":
        tokenizer = " and AutoTokenizer.from_pretrained" if no_tokenizer is None else ""
        message = f"exported to {directory}: transformers' BertForSequenceClassification.from_pretrained{tokenizer}"
    else:
        code = head_code(directory, target, pooling, text_pair, max_length, no_tokenizer)
        message = f"exported to {directory}: the encoder and the head; these lines give the logits:\n\n{code}\n"
    if no_tokenizer is not None:
        message += (f"\nnote: no transformers tokenizer was written: {no_tokenizer}; tokenize with minibert's "
                    f"tokenizer in {directory / TOKENIZER_DIR} (tokenizer.load(...).encode_batch(texts, "
                    f"max_length={max_length}))")
    return message


def check_export_dir(directory: Path) -> OutDir:
    """What `directory` is to an export (read only); InputError unless it is new, empty or an earlier export,
    or when it cannot be written."""
    out = inspect_out(Path(directory), HF_EXPORT, option="--export-hf")
    check_usable(out)
    return out


def read_text_file(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 file, stripped (InputError names the file and line of bad bytes)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory; give a text file, one text per line" if path.is_dir() else "no such file"
        raise InputError(f"--file {path}: {what}")
    return [s for _, line in iter_file_lines(path) if (s := line.strip())]


DESCRIPTION = ("Classify texts, or find their named entities, with a model fine-tuned by `python -m train.finetune`, "
               "or export it to Hugging Face format.")


@dataclass
class PredictOptions:
    """The options of `python -m train.predict`: RUN_DIR, then the texts; options may come anywhere among them."""

    run_dir: str = opt(None, "a directory written by train.finetune (with finetune.json)", positional=True,
                       metavar="RUN_DIR")
    texts: list[str] = opt((), "texts to classify (for a sentence-pair model: 'a<TAB>b')", positional=True,
                           nargs="*", metavar="TEXT")
    file: str | None = opt(None, "read texts from this UTF-8 file, one per line (blank lines are skipped)")
    json: bool = opt(False, "print a JSON list instead of a table, an object per text: {text, label, probability, "
                     "probabilities}, or for a named-entity model {text, entities: [{type, text, start, end}], tags}",
                     action="store_true")
    jsonl: bool = opt(False, "the same objects as --json, as JSON lines (one object per line, for a file of any "
                      "size)", action="store_true")
    batch_size: int = opt(64, "texts per forward pass")
    export_hf: str | None = opt(None, "write the model for Hugging Face transformers into a new or empty directory, "
                                "or an earlier export (whose own files alone are replaced): config.json and "
                                "model.safetensors; the tokenizer for AutoTokenizer (tokenizer.json, "
                                "tokenizer_config.json, special_tokens_map.json) and minibert's in DIR/tokenizer; "
                                "--pooling pooler with learned positions as BertForSequenceClassification; --pooling "
                                "cls, mean or last as BertModel (learned positions) or RoFormerModel (rotary "
                                "positions) plus the head, classifier.safetensors and minibert_head.json, and the "
                                "code that applies it is printed. Refused for layer fusion, pre-LN and sinusoidal "
                                "models, and rotary with --pooling pooler", metavar="DIR")


def build_parser() -> argparse.ArgumentParser:
    """The parser generated from `PredictOptions` (`tokenizer.command.build_parser`)."""
    return build_options_parser(PredictOptions, DESCRIPTION, "python -m train.predict")


def check_options(args: PredictOptions) -> None:
    """The options' ranges and the run directory's kind, before the model is loaded; InputError names them."""
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if args.json and args.jsonl:
        raise InputError("--json and --jsonl are two forms of the same output: choose one")
    if Path(args.run_dir).is_file():
        raise InputError(f"{args.run_dir} is a file, not a run directory; give the directory train.finetune "
                         "wrote (with finetune.json)")


@command_main
def main(argv: list[str] | None = None) -> int:
    # Options may come anywhere, `RUN_DIR --json "text"` as well as `--json RUN_DIR "text"`.
    args, _ = parse_options(PredictOptions, argv, DESCRIPTION, "python -m train.predict")
    try:
        check_options(args)
        if args.export_hf:
            check_export_dir(Path(args.export_hf))
        texts = list(args.texts) + (read_text_file(args.file) if args.file else [])
        if not texts and not args.export_hf:
            raise InputError("nothing to do: give texts, --file FILE or --export-hf DIR")
        predictor = Predictor(args.run_dir)
        if args.export_hf:
            print(predictor.export_hf(args.export_hf), file=sys.stderr)
        if texts:
            results = predictor.predict(texts, args.batch_size)
            if args.jsonl:
                for r in results:
                    print(json.dumps(r, ensure_ascii=False))
            elif args.json:
                print(json.dumps(results, ensure_ascii=False, indent=2))
            elif predictor.task == "ner":
                for r in results:
                    found = "  ".join(f"{e['type']} {e['text']}" for e in r["entities"]) or "(no entities)"
                    print(f"{r['text']}\t{found}")
            else:
                for r in results:
                    probs = "  ".join(f"{k}={v:.3f}" for k, v in r["probabilities"].items())
                    print(f"{r['label']}\t{r['probability']:.3f}\t{probs}\t{r['text']}")
    except OSError as err:  # an output that cannot be written (read-only, a path through a file, a full disk)
        raise InputError(f"{err.filename or args.export_hf}: {err.strerror or err}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
