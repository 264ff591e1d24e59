"""ELECTRA's replaced-token detection (Clark et al., 2020): a small generator fills the masks, the model we keep
learns to tell which tokens were replaced, at every position.

Shapes: B batch, T tokens, C the discriminator's hidden size (also the shared embedding width), C_g the
generator's hidden size, V vocabulary size, M masked positions, N real (non-padding) tokens.

Masked-language modelling learns from the ~15% of tokens it masks. ELECTRA learns from all of them:

    1. mask:        x^mask = x with the positions m_1..m_M replaced by [MASK]
    2. generator:   a small BERT-like MLM reads x^mask and predicts p_G(x_t | x^mask) at each masked position,
                    L_G = -(1/M) Σ_i log p_G(x_{m_i} | x^mask)                       (an ordinary MLM loss)
    3. sample:      x̂_t ~ p_G(· | x^mask) at the masked positions, x̂_t = x_t elsewhere   (no gradient flows back)
    4. label:       r_t = 1 if x̂_t != x_t else 0: a sample that happens to equal the original counts as original
    5. discriminator: a BERT reads x̂ and scores each token, D(x̂)_t = sigmoid(w · GELU(W h_t + b) + b'),
                    L_D = -(1/N) Σ_{t real} [ r_t log D(x̂)_t + (1 - r_t) log(1 - D(x̂)_t) ]
    6. loss:        L = L_G + λ L_D, with λ = 50 (the paper's weight: L_D is a per-token binary loss, much
                    smaller than L_G, and the point of the method is the discriminator)

The generator is small on purpose (a fraction of the discriminator's width): a generator as strong as the
discriminator produces replacements too hard to detect, and costs as much to run. The paper shares the embedding
tables between the two (`share_embeddings=True`: the generator projects the C-wide embeddings down to its width
C_g, and its head projects back up to C to score against the shared word matrix). At minibert's CPU budget that
stalled both models: the discriminator's loss, weighted by 50, drives the shared tables, and in a 1,200-step run on
the default corpus neither the generator's held-out MLM loss (7.39 -> 7.37 from step 500 to 1,000) nor the
discriminator's (0.400, the loss of a constant guess) moved. With tables of its own the generator learns (9.0 ->
6.6 in 3,000 steps on the reviews), so that is the default here; the discriminator still gets barely past a constant
guess at that budget (0.383 against 0.394), which is why ELECTRA is not minibert's default objective.

After pretraining the generator is thrown away; fine-tuning starts from the discriminator's encoder, stored under
BERT's own keys (`bert.embeddings...`, `bert.encoder...`), so every consumer of a BERT checkpoint reads it as one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import additive_mask
from .config import BertConfig
from .embeddings import BertEmbeddings
from .encoder import BertEncoder
from .feed_forward import activation
from .heads import IGNORE_INDEX, mlm_loss
from .model import BertModel, init_bert_weights

DISCRIMINATOR_WEIGHT = 50.0  # λ of the paper
GENERATOR_SIZE = 0.25  # the generator's width as a fraction of the discriminator's (the paper found 1/4 to 1/2 best)


def generator_config(config: BertConfig, size: float) -> BertConfig:
    """The generator's BertConfig: `size` times the discriminator's width, heads and feed-forward width (at least
    one head of the discriminator's head size), the same depth, positions and switches."""
    heads = max(1, round(config.num_attention_heads * size))
    return dataclasses.replace(config, hidden_size=heads * config.head_size, num_attention_heads=heads,
                               intermediate_size=max(1, round(config.intermediate_size * size)), unpad=False)


class ElectraGeneratorPredictions(nn.Module):
    """logits = LayerNorm(GELU(h W_g + b_g)) · W^T + b: from width C_g up to the shared embedding width C, then
    scored against every word vector (W tied to the word embeddings)."""

    def __init__(self, config: BertConfig, embedding_size: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, embedding_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(embedding_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(embedding_size, config.vocab_size)  # weight tied to W by ElectraForPreTraining

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(h))))  # (M, C_g) -> (M, C) -> (M, V)


class ElectraGenerator(nn.Module):
    """A small masked-language model: embeddings, L blocks of width C_g, the head at the masked positions.

    Shared embeddings (the paper's choice): the generator owns no tables; the caller passes the discriminator's
    C-wide embeddings, which it projects to C_g, and its head scores against the shared word matrix. Own
    embeddings: tables of width C_g of its own (`embeddings`), and the head ties to those."""

    def __init__(self, config: BertConfig, shared_width: int | None):
        super().__init__()
        self.config = config
        if shared_width is None:
            self.embeddings = BertEmbeddings(config)
        else:
            self.embeddings_project = nn.Linear(shared_width, config.hidden_size)
        self.encoder = BertEncoder(config)
        self.predictions = ElectraGeneratorPredictions(config, shared_width or config.hidden_size)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))
        if shared_width is None:
            self.predictions.decoder.weight = self.embeddings.word_embeddings.weight  # tie to its own W

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None, keep: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """inputs: (B, T) ids of x^mask (own embeddings) or (B, T, C) the shared embeddings of them; keep: (B, T)
        the masked positions. Returns (M, V)."""
        if hasattr(self, "embeddings"):
            x = self.embeddings(inputs, token_type_ids)  # (B, T) -> (B, T, C_g)
        else:
            x = self.embeddings_project(inputs)  # (B, T, C) -> (B, T, C_g)
        h = self.encoder(x, mask).last  # (B, T, C_g)
        return self.predictions(h[keep])  # (M, C_g) -> (M, V): only where there is something to predict


class ElectraDiscriminatorPredictions(nn.Module):
    """score_t = w · GELU(h_t W + b) + b': one logit per token, "was this token replaced?"."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(h))).squeeze(-1)  # (B, T, C) -> (B, T)


@dataclass
class ElectraOutput:
    loss: torch.Tensor  # L_G + λ L_D
    generator_loss: torch.Tensor  # L_G, mean over the M masked positions
    discriminator_loss: torch.Tensor  # L_D, mean over the N real tokens
    generator_logits: torch.Tensor  # (M, V)
    discriminator_logits: torch.Tensor  # (B, T)
    corrupted_ids: torch.Tensor  # (B, T) x̂
    replaced: torch.Tensor  # (B, T) bool r
    real_tokens: int  # N, the positions L_D averages over


def sample_replacements(logits: torch.Tensor, u: torch.Tensor, never: torch.Tensor | None = None) -> torch.Tensor:
    """x̂ ~ softmax(logits) per row, by inverting the cumulative distribution with one uniform u ~ U(0, 1) per row:
    x̂ = the first id v with Σ_{w <= v} p_w > u. Returns (M,) token ids.

    One number per position, drawn by the caller for the whole batch, makes the samples independent of how the
    batch is split over micro-batches, ranks and devices, and a seeded draw gives the same samples again. Ids in
    `never` (the special tokens) are never drawn: a [MASK] or [SEP] in the discriminator's input would give a
    replacement away without reading any context.
    """
    probs = logits.detach().float().softmax(dim=-1)  # (M, V); sampling passes no gradient back to the generator
    if never is not None:
        probs = probs.index_fill(-1, never.to(probs.device), 0.0)  # (M, V)
    cdf = probs.cumsum(dim=-1)  # (M, V)
    target = u.to(cdf) * cdf[:, -1]  # (M,) scaled to the mass left after removing `never`
    return torch.searchsorted(cdf, target[:, None], right=True).squeeze(-1).clamp_max(logits.size(-1) - 1)  # (M,)


class ElectraForPreTraining(nn.Module):
    """The generator and the discriminator, trained together by L = L_G + λ L_D (the module docstring has the math).

    `bert` is the discriminator's encoder (BERT's key names: it is what fine-tuning starts from), with
    `discriminator_predictions` its per-token head; `generator` shares `bert.embeddings`.
    """

    def __init__(self, config: BertConfig, generator_size: float = GENERATOR_SIZE,
                 discriminator_weight: float = DISCRIMINATOR_WEIGHT, share_embeddings: bool = False):
        super().__init__()
        if not 0 < generator_size <= 1:
            raise ValueError(f"generator_size must be in (0, 1], got {generator_size}")
        self.config = config
        self.discriminator_weight = discriminator_weight
        self.bert = BertModel(config, add_pooling_layer=False)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.discriminator_predictions.apply(lambda m: init_bert_weights(m, config.initializer_range))
        self.share_embeddings = share_embeddings
        self.generator = ElectraGenerator(generator_config(config, generator_size),
                                          config.hidden_size if share_embeddings else None)
        if share_embeddings:
            self.generator.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tie: W

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, sample_u: torch.Tensor | None = None,
                special_ids: torch.Tensor | None = None) -> ElectraOutput:
        """input_ids: (B, T) x^mask; labels: (B, T) the original ids at masked positions, -100 elsewhere;
        sample_u: (B, T) uniforms in [0, 1) that draw the samples (fresh ones if None); `special_ids` are never
        sampled."""
        keep = labels != IGNORE_INDEX  # (B, T) the M masked positions
        # 2. The generator's MLM loss, at the masked positions only.
        inputs = self.bert.embeddings(input_ids, token_type_ids) if self.share_embeddings else input_ids  # (B, T, C)
        dtype = self.bert.embeddings.word_embeddings.weight.dtype
        mask = None if attention_mask is None else additive_mask(attention_mask, dtype)  # (B, 1, 1, T)
        gen_logits = self.generator(inputs, mask, keep, token_type_ids)  # (M, V)
        gen_loss = mlm_loss(gen_logits, labels[keep])
        # 3-4. Sample the replacements; a sample equal to the original is not a replacement.
        u = torch.rand(keep.shape, device=keep.device) if sample_u is None else sample_u  # (B, T)
        original = torch.where(keep, labels, input_ids)  # (B, T) x
        corrupted = original.clone()
        corrupted[keep] = sample_replacements(gen_logits, u[keep], special_ids)  # (B, T) x̂
        replaced = corrupted != original  # (B, T) r
        # 5. The discriminator reads x̂ and scores every token; padding carries no loss.
        h = self.bert(corrupted, attention_mask, token_type_ids).last_hidden_state  # (B, T, C)
        disc_logits = self.discriminator_predictions(h)  # (B, T)
        real = torch.ones_like(keep) if attention_mask is None else attention_mask.bool()  # (B, T)
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[real].float(), replaced[real].float())
        # 6. The weighted sum.
        loss = gen_loss + self.discriminator_weight * disc_loss
        return ElectraOutput(loss, gen_loss, disc_loss, gen_logits, disc_logits, corrupted, replaced, int(real.sum()))
