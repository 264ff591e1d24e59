"""minibert: a from-scratch, minimal BERT whose every formula sits beside the code that computes it.

Importing minibert never imports `transformers`; only `minibert.hf` does, and only when it needs to.
"""

from .config import PRESETS, BertConfig, preset
from .errors import InputError
from .heads import BertForMaskedLM, BertForSequenceClassification, MaskedLMOutput, SequenceClassifierOutput
from .model import BertModel, BertModelOutput

__all__ = [
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertModel",
    "BertModelOutput",
    "InputError",
    "MaskedLMOutput",
    "PRESETS",
    "SequenceClassifierOutput",
    "preset",
]
