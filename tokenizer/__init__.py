"""Tokenizers for minibert: train a SentencePiece model with BERT's special tokens, or read a BERT vocab.txt.

    import tokenizer
    tok = tokenizer.train("corpus.txt", vocab_size=8000, out_dir="runs/tok")   # SentencePiece
    tok = tokenizer.load("runs/tok")                    # or a Hugging Face BERT directory with vocab.txt
    batch = tok.encode_batch(["今天天气很好", "hello world"], max_length=128)

Both kinds implement `tokenizer.base.Tokenizer`. The command line is `python -m tokenizer.train --help`.
This package is the lowest part of the project: it imports nothing of the model, and its `InputError` is the one
every command catches.
"""

from .base import Tokenizer
from .encoding import Encoding
from .errors import InputError
from .loader import load
from .spm_tokenizer import SentencePieceTokenizer
from .spm_training import TrainingStats
from .wordpiece import WordPieceTokenizer

train = SentencePieceTokenizer.train
train_with_stats = SentencePieceTokenizer.train_with_stats

__all__ = [
    "Encoding",
    "InputError",
    "SentencePieceTokenizer",
    "Tokenizer",
    "TrainingStats",
    "WordPieceTokenizer",
    "load",
    "train",
    "train_with_stats",
]
