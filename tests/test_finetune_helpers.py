"""Shared helpers for the fine-tuning tests (no tests here): a tiny fake pretraining run and small labelled files.

The fake run is what `python -m train.pretrain` writes (config.json, model.safetensors, tokenizer/), with a tiny
BertForMaskedLM and a character-level WordPiece vocabulary, so every test runs in well under a second of compute.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import torch

from minibert import BertConfig, BertForMaskedLM
from minibert.checkpoint import save_pretrained

REPO = Path(__file__).resolve().parents[1]

POSITIVE_CHARS = "好很满意喜欢快便宜棒赞优秀舒服漂亮"
NEGATIVE_CHARS = "差不失望慢贵烂糟坏破旧难退错"
NEUTRAL_CHARS = "的是了我这个东西质量物流价格服务态度"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(POSITIVE_CHARS + NEGATIVE_CHARS + NEUTRAL_CHARS)]


def tiny_config(**overrides) -> BertConfig:
    return BertConfig(**{
        "vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 64, **overrides,
    })


def make_pretrain_run(runs_dir: Path, name: str = "pretrain-20240101-000000", seed: int = 0, **overrides) -> Path:
    """A fake pretraining run directory with a tiny random BertForMaskedLM and a character vocabulary."""
    run = Path(runs_dir) / name
    torch.manual_seed(seed)
    save_pretrained(BertForMaskedLM(tiny_config(**overrides)), run)
    (run / "tokenizer").mkdir(parents=True, exist_ok=True)
    (run / "tokenizer" / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
    return run


def news_corpus(root: Path, lines: int = 150) -> tuple[Path, Path]:
    """A pretraining corpus of `lines` People's Daily lines (root/corpus.txt) and a character SentencePiece
    tokenizer trained on it (root/tok), for runs that train no tokenizer of their own."""
    from tokenizer import SentencePieceTokenizer
    from train.builtin_data import people_daily_lines

    corpus = Path(root) / "corpus.txt"
    corpus.write_text("\n".join(people_daily_lines()[:lines]) + "\n", encoding="utf-8")
    SentencePieceTokenizer.train(corpus, 2000, Path(root) / "tok", model_type="char", verbose=False)
    return corpus, Path(root) / "tok"


def review_rows(n: int, seed: int = 0, labels=("negative", "positive")) -> list[dict]:
    """n distinct short 'reviews': a positive one has positive characters, a negative one negative characters."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = labels[len(rows) % len(labels)]
        chars = POSITIVE_CHARS if label == labels[-1] else NEGATIVE_CHARS
        text = "".join(rng.choice(chars + NEUTRAL_CHARS) for _ in range(rng.randint(2, 6))) + rng.choice(chars)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


def write_rows(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows as a CSV, TSV or JSONL file, chosen by the suffix."""
    path = Path(path)
    columns = columns or list(rows[0])
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, columns, delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def cli_env() -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # tiny models: one thread is fastest and leaves the other cores alone
    return env


def run_cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=300)
