"""minibert: a from-scratch, minimal BERT whose every formula sits beside the code that computes it.

Importing minibert never imports `transformers`; only `minibert.hf` does, and only when it needs to.
"""

from .config import PRESETS, BertConfig, preset
from .errors import InputError
from .generate import GenerationConfig, generate
from .gpt import CausalLMOutput, GPT2Config, GPT2LMHeadModel
from .heads import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .model import BertModel, BertModelOutput
from .t5 import Seq2SeqLMOutput, T5Config, T5ForConditionalGeneration

__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertModelOutput",
    "CausalLMOutput",
    "GPT2Config",
    "GPT2LMHeadModel",
    "GenerationConfig",
    "InputError",
    "MaskedLMOutput",
    "PRESETS",
    "Seq2SeqLMOutput",
    "SequenceClassifierOutput",
    "T5Config",
    "T5ForConditionalGeneration",
    "TokenClassifierOutput",
    "generate",
    "preset",
]
