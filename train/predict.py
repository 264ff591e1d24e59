"""python -m train.predict RUN_DIR "text" ...: classify texts with a model fine-tuned by `train.finetune`.

    python -m train.predict runs/finetune-20250101-120000 "质量很好，物流也快" "太差了"
    python -m train.predict RUN_DIR --file reviews.txt --json         # one text per line
    python -m train.predict RUN_DIR --export-hf hf-model               # for transformers' BertForSequenceClassification

A model trained on sentence pairs takes each input as "text<TAB>pair". A GPT-2 or T5 run fine-tuned by
`train.finetune` predicts the same way; only a BERT one exports to Hugging Face.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from minibert.errors import InputError
from train import families
from train.corpus import iter_file_lines
from train.finetune_data import EncodedSet, collate, encode_texts, load_tokenizer, sorted_batches
from train.fusion import SequenceClassifier, load_classifier


def autocast(device: torch.device):
    """bfloat16 autocast on CUDA (as in pretraining); a no-op on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


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

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict]:
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

    def export_hf(self, directory: str | Path) -> None:
        """Hugging Face's BertForSequenceClassification format (`minibert.hf.save_hf`), plus the tokenizer files."""
        from minibert.hf import save_hf

        check_export_dir(Path(directory))
        if self.classifier.family != "bert":
            raise InputError(f"{self.run_dir}: a fine-tuned {families.NAMES[self.classifier.family]} model has no "
                             "Hugging Face BertForSequenceClassification form; --export-hf is for BERT runs")
        if not self.classifier.is_plain_bert:
            raise InputError(
                f"{self.run_dir}: only a model fine-tuned with --pooling pooler and without layer fusion is BERT's "
                f"own classifier; this one uses pooling {self.classifier.pooling!r}"
                f"{' with layer fusion' if self.classifier.layer_fusion else ''}, which transformers' "
                "BertForSequenceClassification cannot express"
            )
        save_hf(self.classifier.model, directory)
        self.tok.save(Path(directory) / "tokenizer")


# What an export writes; a directory holding anything else is not overwritten.
EXPORT_FILES = ("config.json", "model.safetensors", "tokenizer")


def check_export_dir(directory: Path) -> None:
    """InputError unless `directory` is new, empty or an earlier export (so nothing else in it is overwritten)."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--export-hf {directory} is a file; give a new or empty directory")
    others = sorted(p.name for p in directory.iterdir() if p.name not in EXPORT_FILES) if directory.is_dir() else []
    if others:
        raise InputError(f"--export-hf {directory} holds files an export does not write ({', '.join(others[:5])}); "
                         "give a new or empty directory (nothing was changed)")


def read_text_file(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 file, stripped (InputError names the file and line of bad bytes)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return [s for _, line in iter_file_lines(path) if (s := line.strip())]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.predict",
        description="Classify texts with a model fine-tuned by `python -m train.finetune`, or export it to "
        "Hugging Face format.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by train.finetune (with finetune.json)")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (for a sentence-pair model: 'a<TAB>b')")
    p.add_argument("--file", help="read texts from this UTF-8 file, one per line (blank lines are skipped)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {text, label, probability, "
                   "probabilities} instead of a table")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--export-hf", metavar="DIR", help="write the model as a Hugging Face BertForSequenceClassification "
                   "directory (config.json, model.safetensors; tokenizer in DIR/tokenizer): a new or empty one, or "
                   "an earlier export; needs a model fine-tuned with --pooling pooler and no layer fusion")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        if args.export_hf:
            check_export_dir(Path(args.export_hf))
        texts = list(args.texts) + (read_text_file(args.file) if args.file else [])
        if not texts and not args.export_hf:
            raise InputError("nothing to do: give texts, --file FILE or --export-hf DIR")
        predictor = Predictor(args.run_dir)
        if args.export_hf:
            predictor.export_hf(args.export_hf)
            print(f"exported to {args.export_hf} (transformers.BertForSequenceClassification.from_pretrained)",
                  file=sys.stderr)
        if texts:
            results = predictor.predict(texts, args.batch_size)
            if args.json:
                print(json.dumps(results, ensure_ascii=False, indent=2))
            else:
                for r in results:
                    probs = "  ".join(f"{k}={v:.3f}" for k, v in r["probabilities"].items())
                    print(f"{r['label']}\t{r['probability']:.3f}\t{probs}\t{r['text']}")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --export-hf cannot be written (read-only, a path through a file, a full disk)
        print(f"error: {err.filename or args.export_hf}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
