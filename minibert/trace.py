"""The seam between the models and what reads them: the intermediate tensors of one forward pass, on request.

    out = model(input_ids, labels=labels, output_trace=True)
    out.trace.layers[1].query       # (B, T, C): x W_q + b_q in BERT's block 1, the tensor the model computed

Each model's outer `forward` takes `output_trace` (BertModel and its heads, GPT2LMHeadModel, T5ForConditionalGeneration)
and returns the records below as `out.trace`. Inside, every module that fills a record is handed it (or None) as
its `trace` argument and writes into it the tensors it computed, as it computed them; nothing else reads them on
the way. Asked for nothing (the default), each such module is handed None and pays one `if trace is not None`:
no copy, no hook, no extra operation, and nothing more for torch.compile to trace.

The walk-throughs (`minibert/explain/`) read the model through these records, plus parameters by their checkpoint
names (fixed by Hugging Face's checkpoints), never through the paths of the modules in between: the fields here are
the interface, and a refactor of the model keeps them filled (tests/test_trace.py checks each one).

Shapes: B batch, T tokens, C hidden size, I feed-forward size, M labelled positions; S encoder and T decoder tokens
for T5, K keys. An unpadded BERT (`unpad=True`) keeps its blocks' tensors as (N, ·), the N real tokens, in place of
(B, T, ·). Tensors stay attached to the autograd graph when the pass builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

# --- BERT (minibert/embeddings.py, attention.py, encoder.py, heads.py) ---


@dataclass
class EmbeddingsTrace:
    """BertEmbeddings: x = LayerNorm(W[input_ids] + S[token_type_ids] + P[t])."""

    token_type_ids: Tensor | None = None  # (B, T) the segment ids read (zeros when none were given)
    word: Tensor | None = None  # (B, T, C) W[input_ids]
    segment: Tensor | None = None  # (B, T, C) S[token_type_ids]
    position: Tensor | None = None  # (T, C) P[0..T-1]; None with rotary positions, which add no vector
    sum: Tensor | None = None  # (B, T, C) word + segment (+ position): LayerNorm's input
    normalised: Tensor | None = None  # (B, T, C) LayerNorm(sum), before dropout


@dataclass
class LayerTrace:
    """BertLayer: the attention sub-layer, then the feed-forward one (post-LN or pre-LN, minibert/encoder.py)."""

    input: Tensor | None = None  # (B, T, C) x, the residual stream entering the block
    attention_input: Tensor | None = None  # (B, T, C) what Q, K, V are computed from: x (post-LN), LN_1(x) (pre-LN)
    query: Tensor | None = None  # (B, T, C) attention_input W_q + b_q, before any rotary turn
    key: Tensor | None = None  # (B, T, C) attention_input W_k + b_k, likewise
    value: Tensor | None = None  # (B, T, C) attention_input W_v + b_v
    context: Tensor | None = None  # (B, T, C) the H heads' softmax(Q K^T / sqrt(D) + M) V, side by side
    after_attention: Tensor | None = None  # (B, T, C) x1 = LN_1(x + a) (post-LN) or x + a (pre-LN)
    ffn_input: Tensor | None = None  # (B, T, C) x1 (post-LN) or LN_2(x1) (pre-LN)
    ffn_hidden: Tensor | None = None  # (B, T, I) activation(ffn_input W_1 + b_1)
    output: Tensor | None = None  # (B, T, C) the block's output x2


@dataclass
class BertTrace:
    """One pass through BertModel, and through the MLM head when there is one."""

    embeddings: EmbeddingsTrace = field(default_factory=EmbeddingsTrace)
    layers: list[LayerTrace] = field(default_factory=list)  # L records, block 0 first
    mlm_transform: Tensor | None = None  # (B, T, C), or (M, C) sparse: LayerNorm(GELU(h W_t + b_t)), the MLM head's

    @classmethod
    def for_layers(cls, num_layers: int) -> "BertTrace":
        return cls(layers=[LayerTrace() for _ in range(num_layers)])


# --- GPT-2 (minibert/gpt.py) ---


@dataclass
class GPT2BlockTrace:
    """GPT2Block: x1 = x + Attention(LN_1(x)); x2 = x1 + MLP(LN_2(x1))."""

    input: Tensor | None = None  # (B, T, C) x, the residual stream entering the block
    attention_input: Tensor | None = None  # (B, T, C) LN_1(x)
    attention_output: Tensor | None = None  # (B, T, C) Dropout(c_proj(context)), what the residual adds
    after_attention: Tensor | None = None  # (B, T, C) x1
    output: Tensor | None = None  # (B, T, C) x2


@dataclass
class GPT2Trace:
    blocks: list[GPT2BlockTrace] = field(default_factory=list)  # L records, block 0 first

    @classmethod
    def for_layers(cls, num_layers: int) -> "GPT2Trace":
        return cls(blocks=[GPT2BlockTrace() for _ in range(num_layers)])


# --- T5 (minibert/t5.py) ---


@dataclass
class T5AttentionTrace:
    """An attention sub-layer of a T5 block: x + Dropout(Attention(RMSNorm(x), ...))."""

    input: Tensor | None = None  # (B, T, C) RMSNorm(x): the queries' source (and the keys' in self-attention)
    bias: Tensor | None = None  # (1 or B, H, T, K) what the scores add: position bias and mask; None if nothing
    memory: Tensor | None = None  # (B, S, C) cross-attention: the encoder's output, the keys' and values' source
    output: Tensor | None = None  # (B, T, C) the attention's output W_o(context), before dropout and residual


@dataclass
class T5BlockTrace:
    input: Tensor | None = None  # (B, T, C) x, the residual stream entering the block
    self_attention: T5AttentionTrace = field(default_factory=T5AttentionTrace)
    cross_attention: T5AttentionTrace | None = None  # the decoder's only
    output: Tensor | None = None  # (B, T, C) after the feed-forward sub-layer


@dataclass
class T5Trace:
    encoder: list[T5BlockTrace] = field(default_factory=list)  # one record per encoder block
    decoder: list[T5BlockTrace] = field(default_factory=list)  # one per decoder block
    decoder_output: Tensor | None = None  # (B, T, C) the decoder stack's output, which the output layer reads

    @classmethod
    def for_layers(cls, encoder_layers: int, decoder_layers: int) -> "T5Trace":
        return cls(encoder=[T5BlockTrace() for _ in range(encoder_layers)],
                   decoder=[T5BlockTrace(cross_attention=T5AttentionTrace()) for _ in range(decoder_layers)])
