"""T5's span corruption: drop spans of a block, each behind one sentinel, and train T5 to write the spans back.

Shapes: B blocks, T tokens per block, S encoder tokens, U target tokens (both padded to the batch's longest row).

    block    [CLS] 今 天 天 气 很 好 , 我 们 去 公 园 [SEP]
    input    [CLS] 今 天 <s0> 很 好 , 我 们 <s1> 园 [SEP]                 S_b = T - n_b + k_b
    target   <s0> 天 气 <s1> 去 公 [SEP]                                   U_b = n_b + k_b + 1

with n_b noise tokens in k_b spans in block b. The encoder reads the input, the decoder writes the target.

Which tokens are noise (T5's `random_spans_noise_mask`, applied to the L_b non-special tokens of each block taken in
order; special tokens, [CLS] and [SEP] here, are never noise):

    n = round(0.15 L), clipped to [1, L - 1]        noise tokens (none when L < 2)
    k = max(1, round(n / 3))                        spans, so that a span holds 3 tokens on average
    split the n noise tokens into k non-empty runs a_1..a_k, uniformly at random (k - 1 cuts among the n - 1 gaps);
    put the k runs into k distinct gaps of the m = L - n kept tokens, uniformly among the m + 1 gaps (the two ends
    included), which splits the kept tokens into runs b_0 a_1 b_1 a_2 ... a_k b_k with b_0, b_k >= 0, the rest >= 1.

T5's code splits the kept tokens into k non-empty runs and lays out b_1 a_1 ... b_k a_k, so its last token is always
noise (with k = 1, in blocks of under about 50 tokens, the block's last tokens would be the only ones ever dropped);
its `random_roll` option rolls the layout to even that out, and cuts a span in two where the roll wraps. Choosing
the gaps gives every position the same chance of being dropped without a wrap (bar the first and last couple of
tokens, which fewer placements of a span cover); n, k and the run lengths a_j are T5's.

Put back in the block, a span that would cover a special token (a [SEP] between two documents) is cut there into
two spans, each with its own sentinel. So a span never holds or hides a special token, n stays exact, and k grows
by one at each such cut (rare: a block of T tokens holds about 0.05 T spans and a few [SEP]s).

The target ends with [SEP], which plays T5's end-of-sequence token `</s>`: T5's code appends `</s>` after the last
span, and so does this (the paper's example closes the target with one more sentinel instead; either way the decoder
learns where its output ends). [SEP] is what T5's `eos_token_id` is set to (`config_from`), so generation stops there.

Sentinels. The tokenizer has no sentinel pieces, so sentinel k gets the id V_tok + k, just past the tokenizer's
vocabulary V_tok, and the model's vocabulary is V_tok + n_sentinels (T5 keeps 100, `<extra_id_0>` .. `<extra_id_99>`;
T5 counts them down from the end of its vocabulary, here they count up). The first sentinel of every block is k = 0.

Randomness: one uniform draw of shape (B, T) and one of shape (B, T + 1) per batch, whatever the text, so that a
checkpointed generator state gives the same batches on resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from minibert.errors import InputError
from minibert.files import unwrap
from minibert.heads import IGNORE_INDEX
from minibert.t5 import T5Config, T5ForConditionalGeneration, shift_right

NOISE_DENSITY = 0.15  # T5's fraction of tokens dropped
MEAN_SPAN_LENGTH = 3.0  # T5's mean span length
N_SENTINELS = 100  # T5's extra ids


@dataclass
class SpanCorrupted:
    input_ids: torch.Tensor  # (B, S): the block with each span replaced by its sentinel, then padding
    attention_mask: torch.Tensor  # (B, S): 1 on real tokens, 0 on padding
    labels: torch.Tensor  # (B, U): sentinel, span, sentinel, span, ..., [SEP]; then -100
    noise_mask: torch.Tensor  # (B, T): True where the block's token was dropped into a span


def noise_counts(L: torch.Tensor, noise_density: float, mean_span_length: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k) for blocks of L non-special tokens: n = round(d L) clipped to [1, L - 1], k = max(1, round(n / m)),
    both 0 when L < 2. round is half-to-even, as TensorFlow's (and T5's) is."""
    n = torch.round(L.double() * noise_density).long().clamp(min=1)
    n = torch.minimum(n, L - 1).clamp(min=0)  # (B,)
    k = torch.round(n.double() / mean_span_length).long().clamp(min=1)
    k = torch.minimum(k, torch.minimum(n, L - n))  # (B,): 0 when n = 0; never more segments than items
    return n, k


def uniform_subset(u: torch.Tensor, size: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """(B, W) True at a uniformly random `chosen[b]`-subset of the first `size[b]` places of each row: the places
    whose uniform u is among the chosen[b] smallest. u: (B, W) uniforms."""
    place = torch.arange(u.size(1), device=u.device)[None]  # (1, W)
    u = u.masked_fill(place >= size[:, None], 2.0)  # (B, W): places outside the row sort last
    rank = u.argsort(dim=1, stable=True).argsort(dim=1, stable=True)  # (B, W): rank of each place's u in its row
    return rank < chosen[:, None]  # (B, W)


def run_lengths(run: torch.Tensor, inside: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width): how many things of each row fall in run j, from each thing's run index (B, T) and whether it
    exists (B, T)."""
    lengths = torch.zeros(run.size(0), width, dtype=torch.long, device=run.device)
    return lengths.scatter_add_(1, run.clamp(min=0, max=width - 1), inside.long())  # (B, width)


def span_noise_mask(candidate: torch.Tensor, u_noise: torch.Tensor, u_gaps: torch.Tensor,
                    noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH) -> torch.Tensor:
    """(B, T) True at the noise tokens: the layout b_0 a_1 b_1 ... a_k b_k over each row's candidate tokens in order.

    candidate: (B, T) the tokens that may be noise; u_noise: (B, T) uniforms for the cuts between noise runs,
    u_gaps: (B, T + 1) uniforms for the gaps between kept tokens that the runs go into.
    """
    B, T = candidate.shape
    L = candidate.sum(dim=1)  # (B,)
    n, k = noise_counts(L, noise_density, mean_span_length)
    m = L - n  # (B,) kept tokens
    i = torch.arange(T, device=candidate.device).expand(B, T).contiguous()  # (B, T): index of a thing in its row
    # 1) a_1..a_k: noise token i starts a new run after each of the k - 1 cuts chosen among the n - 1 gaps
    cut_before = F.pad(uniform_subset(u_noise[:, : T - 1], n - 1, k - 1), (1, 0), value=False)  # (B, T)
    a = run_lengths(cut_before.long().cumsum(dim=1), i < n[:, None], T)  # (B, T): a_1..a_k at 0..k-1
    # 2) b_0..b_k: kept token i lies in run b_j, j = the chosen gaps at or before it (gap i is just before it)
    gap = uniform_subset(u_gaps, m + 1, k)  # (B, T + 1)
    b = run_lengths(gap[:, :T].long().cumsum(dim=1), i < m[:, None], T)  # (B, T): b_0..b_k at 0..k (k < T)
    # 3) where each run ends, in the order b_0 a_1 b_1 a_2 ...; token p is noise if an odd number end at or before it
    ends = torch.stack([b, a], dim=2).reshape(B, 2 * T).cumsum(dim=1)  # (B, 2T): b_0, b_0 + a_1, ...
    run = torch.searchsorted(ends, i, right=True)  # (B, T)
    noise_among_candidates = (run % 2 == 1) & (i < L[:, None])  # (B, T), indexed by candidate order
    order = (candidate.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T): each token's index among the candidates
    return candidate & noise_among_candidates.gather(1, order)  # (B, T), indexed by block position


def span_corruption(
    blocks: torch.Tensor,
    generator: torch.Generator,
    *,
    special_ids: torch.Tensor,
    sentinel_base: int,
    n_sentinels: int,
    eos_token_id: int,
    pad_token_id: int,
    noise_density: float = NOISE_DENSITY,
    mean_span_length: float = MEAN_SPAN_LENGTH,
) -> SpanCorrupted:
    """T5's span corruption of a batch of blocks (B, T) (the module docstring has the procedure).

    Sentinel j of a block has id sentinel_base + j. Raises InputError if a block would need more than n_sentinels.
    """
    if not 0 < noise_density < 1:
        raise InputError(f"noise_density must be between 0 and 1, not {noise_density}")
    if not mean_span_length >= 1:
        raise InputError(f"mean_span_length must be at least 1, not {mean_span_length}")
    blocks = blocks.long()
    B, T = blocks.shape
    device = blocks.device
    # 1) the draws, of shapes that depend on (B, T) alone
    u_noise = torch.rand((B, T), generator=generator, device=generator.device).to(device)
    u_gaps = torch.rand((B, T + 1), generator=generator, device=generator.device).to(device)
    # 2) which tokens are noise; spans are the runs of noise in the block (a special token ends a run)
    candidate = ~torch.isin(blocks, special_ids.to(device))  # (B, T)
    noise = span_noise_mask(candidate, u_noise, u_gaps, noise_density, mean_span_length)  # (B, T)
    start = noise & ~F.pad(noise[:, :-1], (1, 0), value=False)  # (B, T): first token of a span
    span = start.long().cumsum(dim=1) - 1  # (B, T): the span index j of each noise token
    n_spans = start.sum(dim=1)  # (B,)
    most = int(n_spans.max()) if B else 0
    if most > n_sentinels:
        raise InputError(f"a block of {T} tokens needs {most} sentinels, more than the "
                         f"{n_sentinels} the model has; use shorter blocks or more sentinels")
    sentinel = sentinel_base + span.clamp(min=0)  # (B, T)
    rows = torch.arange(B, device=device)[:, None].expand(B, T)  # (B, T)
    # 3) the encoder's input: kept tokens, and one sentinel where each span starts
    keep = ~noise | start  # (B, T)
    S = int(keep.sum(dim=1).max())
    input_ids = torch.full((B, S), pad_token_id, dtype=torch.long, device=device)
    slot = keep.long().cumsum(dim=1) - 1  # (B, T): where each kept token goes
    input_ids[rows[keep], slot[keep]] = torch.where(start, sentinel, blocks)[keep]  # (B, S)
    attention_mask = (torch.arange(S, device=device)[None] < keep.sum(dim=1)[:, None]).long()  # (B, S)
    # 4) the target: noise token t goes after the t-th noise token's predecessors and the j + 1 sentinels so far,
    #    at q = (noise tokens up to t) + j; span j's sentinel just before its first token, [SEP] after the last
    n_noise = noise.sum(dim=1)  # (B,)
    U = int((n_noise + n_spans).max()) + 1
    labels = torch.full((B, U), IGNORE_INDEX, dtype=torch.long, device=device)
    q = noise.long().cumsum(dim=1) + span  # (B, T)
    labels[rows[noise], q[noise]] = blocks[noise]
    labels[rows[start], q[start] - 1] = sentinel[start]
    labels[torch.arange(B, device=device), n_noise + n_spans] = eos_token_id  # (B, U)
    return SpanCorrupted(input_ids, attention_mask, labels, noise)


@dataclass
class SpanCorruption:
    """T5's span-corruption objective on packed blocks: the encoder reads the block with spans dropped, the decoder
    writes the dropped spans (`span_corruption`). One loss term, "span": the mean cross-entropy over target tokens."""

    vocab_size: int  # the tokenizer's vocabulary V_tok; sentinels take the ids V_tok .. V_tok + n_sentinels - 1
    special_ids: torch.Tensor  # never noise: [PAD] [UNK] [CLS] [SEP] [MASK]
    pad_token_id: int  # pads the encoder's input; starts the decoder (T5 starts it with its pad id)
    eos_token_id: int  # ends every target: [SEP]
    n_sentinels: int = N_SENTINELS
    noise_density: float = NOISE_DENSITY
    mean_span_length: float = MEAN_SPAN_LENGTH
    weights: dict = field(default_factory=lambda: {"span": 1.0})
    family = "t5"  # the model it trains (`train.objectives`)
    order_probe = False  # MLM's shuffled-block probe; the span targets have an order of their own
    eval_loss_name = "span-target loss"
    eval_accuracy_name = "target-token accuracy"

    @classmethod
    def from_tokenizer(cls, tok, **kw) -> "SpanCorruption":
        special = torch.as_tensor(sorted(tok.special_ids), dtype=torch.long)
        return cls(vocab_size=tok.vocab_size, special_ids=special, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.sep_token_id, **kw)

    @property
    def model_vocab_size(self) -> int:
        """V = V_tok + n_sentinels."""
        return self.vocab_size + self.n_sentinels

    def sentinel_id(self, k: int) -> int:
        return self.vocab_size + k

    def config_from(self, preset_fields: dict, vocab_size: int, max_len: int) -> T5Config:
        """A T5 of the size of a minibert preset, as T5-base is the size of BERT-base:
        d_model = hidden_size, num_heads = num_attention_heads, d_kv = hidden_size / num_attention_heads,
        d_ff = intermediate_size, and num_layers = num_decoder_layers = num_hidden_layers (an encoder as deep as
        BERT's and a decoder as deep: about twice BERT's weights, for about BERT's work per block, since the decoder
        reads only the ~0.3 T target tokens). dropout_rate = hidden_dropout_prob (0.1).

        vocab_size is the tokenizer's; the model gets vocab_size + n_sentinels rows. max_len is not needed: T5's
        relative positions have no length limit (offsets beyond 128 share a bucket). The special ids are the
        tokenizer's ([PAD] starts the decoder, [SEP] ends the output). Training takes the chunked loss (the same loss
        within float rounding, without the (B, U, V) logits); the fused projections (fused_qkv) measured level with
        the separate ones on the CPU and stay off unless asked for. Other keys of `preset_fields` that are T5Config fields (attn_impl,
        num_decoder_layers, fused_qkv) are taken as they are; the rest (BERT's own) are ignored.
        """
        del max_len
        C, H = preset_fields["hidden_size"], preset_fields["num_attention_heads"]
        if C % H:
            raise InputError(f"hidden_size ({C}) must be a multiple of num_attention_heads ({H})")
        L = preset_fields["num_hidden_layers"]
        own = {f.name for f in dataclasses.fields(T5Config)}
        fields = {
            "vocab_size": vocab_size + self.n_sentinels, "d_model": C, "num_heads": H, "d_kv": C // H,
            "d_ff": preset_fields["intermediate_size"], "num_layers": L, "num_decoder_layers": L,
            "dropout_rate": preset_fields.get("hidden_dropout_prob", 0.1),
            "pad_token_id": self.pad_token_id, "decoder_start_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id, "chunked_loss": True,
        }
        passed = {k: v for k, v in preset_fields.items() if k in own and k not in ("vocab_size", "pad_token_id")}
        return T5Config(**{**fields, **passed})

    def build(self, config: T5Config) -> nn.Module:
        if config.vocab_size < self.model_vocab_size:
            raise InputError(f"T5 vocab_size {config.vocab_size} has no room for the {self.n_sentinels} sentinels "
                             f"after the tokenizer's {self.vocab_size} ids; it needs {self.model_vocab_size}")
        return T5ForConditionalGeneration(config)

    def corrupt(self, blocks: torch.Tensor, gen: torch.Generator) -> SpanCorrupted:
        return span_corruption(blocks, gen, special_ids=self.special_ids, sentinel_base=self.vocab_size,
                               n_sentinels=self.n_sentinels, eos_token_id=self.eos_token_id,
                               pad_token_id=self.pad_token_id, noise_density=self.noise_density,
                               mean_span_length=self.mean_span_length)

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        out = self.corrupt(blocks, gen)
        return {"input_ids": out.input_ids, "attention_mask": out.attention_mask, "labels": out.labels}

    def counts(self, batch: dict) -> dict[str, int]:
        return {"span": int((batch["labels"] != IGNORE_INDEX).sum())}

    def _forward(self, model: nn.Module, batch: dict):
        return model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])

    def losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return {"span": self._forward(model, batch).loss}

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Held-out sums over the target tokens: cross-entropy, correct argmax predictions, and their count. The
        model is asked for its logits without the labels (the chunked loss would not form them), reading the
        decoder input the labels give."""
        labels = batch["labels"]
        config = unwrap(model).config
        decoder_input_ids = shift_right(labels, config.decoder_start_token_id, config.pad_token_id)  # (B, U)
        out = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids=decoder_input_ids)
        logits = out.logits.float()  # (B, U, V)
        keep = labels != IGNORE_INDEX  # (B, U)
        logits, target = logits[keep], labels[keep]  # (M, V), (M,)
        return {"loss": F.cross_entropy(logits, target, reduction="sum"),
                "correct": (logits.argmax(-1) == target).sum(), "count": keep.sum()}
