"""The toy model of the walk-through: small enough that every vector fits on a line, and the same on every machine.

C = 8 numbers per token, 2 heads of D = 4, 2 layers, a vocabulary of 16 ids (0 [PAD], 15 [MASK]). The weights are
drawn with std 0.5 instead of BERT's 0.02: with 0.02 every attention row of an untrained model is uniform (all 1/T)
and every prediction 1/V, and the example would show nothing.
"""

from __future__ import annotations

import torch

from ..config import preset
from ..heads import BertForMaskedLM

TOY_CONFIG = dict(
    vocab_size=16,
    hidden_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=16,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    initializer_range=0.5,
    attn_impl="math",
)
TOY_MASK_ID = 15
DOCUMENT_IDS = list(range(1, 11))  # the ten word indices of the example of 《预训练与微调的详细方法》 (section 4.3)


def toy_model(seed: int = 0, **overrides) -> BertForMaskedLM:
    """The toy BertForMaskedLM: TOY_CONFIG (with any field overridden), weights from BERT's own initialisation
    under `seed`, in float64.

    float64 (not BERT's float32) so that a 4-decimal rounding never depends on the CPU's summation order; the
    random draws use a forked RNG, so building the toy leaves the global seed untouched.
    """
    config = preset("tiny", **{**TOY_CONFIG, **overrides})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # parameters are created (and initialised) in float64
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForMaskedLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()
