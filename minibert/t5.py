"""T5 (v1.0): an encoder that reads the input, a decoder that writes the output, every task as text to text.

Shapes: B batch, S input (encoder) tokens, T output (decoder) tokens, P decoder tokens already in the cache,
K = P + T decoder keys, C model width (`d_model`), H heads, D head size (`d_kv`; H * D need not equal C),
I feed-forward width (`d_ff`), V vocabulary size, N buckets (`relative_attention_num_buckets`).

Read it beside BERT (`minibert/encoder.py`) and GPT (`minibert/gpt.py`). What is T5's own:

1. **Two stacks over one embedding.** The encoder is bidirectional (BERT's mask); the decoder's self-attention is
   causal (GPT's mask, M_ij = 0 if j <= i else -inf) and each decoder block then attends over the encoder's output
   (cross-attention, with the encoder's padding mask). Encoder, decoder and output layer share one (V, C) table.
2. **RMS LayerNorm**, no mean and no bias (`rms_norm`), before each sub-layer (pre-LN), and once after each stack.
3. **No position vectors.** Each head adds a learned scalar to every score, chosen by the bucket of the offset
   j - i (`relative_position_bucket`): bidirectional in the encoder, causal in the decoder. The table belongs to the
   first block; the bias it gives is computed once and added in every block of the stack.
4. **No 1/sqrt(D) scale**: scores are Q K^T + bias, BERT's attention function (minibert/attention.py) with its
   scale set to 1. The scale is folded into the initialisation instead (W_q starts with std (C·D)^-½, W_k with
   C^-½; `init_t5_weights`), so the scores start with the variance the scale would give.
5. **No biases anywhere**, and a ReLU feed-forward: FFN(x) = ReLU(x W_i) W_o.
6. **The tied output is scaled**: logits = (h · C^-½) · E^T, since E's entries start with std 1, not 0.02.
7. **The loss** is on the labels (the target text), -100 ignored; the decoder reads the labels shifted right,
   starting with `decoder_start_token_id` (`shift_right`), so that output token t is predicted from tokens < t.

Fast paths, each chosen once by a config field and tested equal to the readable path (tests/test_fast_paths.py):
`chunked_loss` (the output layer and its loss a few rows at a time, `heads.linear_cross_entropy`), `fused_qkv`
(self-attention's Q, K, V in one matmul; every decoder block's cross-attention K, V in one, `T5Stack.cross_key_values`)
and `unpad` (the encoder on the real tokens alone, each row with its cut of the position bias). The position
buckets are kept per shape whatever the config (`T5Attention.position_bias`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ATTENTION, causal_mask
from .errors import InputError
from .feed_forward import ACTIVATIONS, activation
from .gpt import KeyValue
from .heads import IGNORE_INDEX, linear_cross_entropy
from .trace import T5AttentionTrace, T5BlockTrace, T5Trace
from .unpad import Unpadding, attention_rows, row_biases

MINIBERT_FIELDS = ("attn_impl", "chunked_loss", "fused_qkv", "unpad")
BUCKET_SHAPES_KEPT = 8  # (T, K) shapes whose position buckets a stack keeps (`T5Attention.position_bias`)


@dataclass
class T5Config:
    vocab_size: int = 32128                 # V: rows of the shared embedding
    d_model: int = 512                      # C: width of every token vector
    d_kv: int = 64                          # D: head size
    d_ff: int = 2048                        # I: feed-forward width
    num_layers: int = 6                     # encoder blocks
    num_decoder_layers: int | None = None   # decoder blocks; None means num_layers
    num_heads: int = 8                      # H
    relative_attention_num_buckets: int = 32   # N: distinct relative-position biases per head
    relative_attention_max_distance: int = 128  # offsets this far or farther share the last bucket
    dropout_rate: float = 0.1               # every dropout: embeddings, attention probabilities, sub-layer outputs
    layer_norm_epsilon: float = 1e-6        # epsilon inside the RMS norm
    initializer_factor: float = 1.0         # scales every initial std (Hugging Face's name; 1 for training)
    feed_forward_proj: str = "relu"         # the feed-forward activation; T5 v1.0's is ReLU
    tie_word_embeddings: bool = True        # output layer = shared embedding, scaled by C^-½ (v1.0)
    decoder_start_token_id: int = 0         # first decoder input; T5 uses the pad id
    pad_token_id: int = 0                   # replaces -100 in the shifted labels
    eos_token_id: int = 1                   # generation stops after this token
    # --- minibert's own switches ---
    attn_impl: str = "sdpa"                 # "math": the hand-written formula; "sdpa": torch's fused kernel
    chunked_loss: bool = False              # with labels: the output layer and the loss a few rows at a time, never
    #                                         forming the (B, T, V) logits (then None); `T5ForConditionalGeneration`
    fused_qkv: bool = False                 # self-attention's Q, K, V from one matmul, and every decoder block's
    #                                         cross-attention K, V from one matmul of the encoder's output; same weights
    unpad: bool = False                     # the encoder, on a padded batch: per-token work on the real tokens only,
    #                                         attention one row at a time (minibert/unpad.py); the decoder stays padded

    def __post_init__(self) -> None:
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        if self.attn_impl not in ("math", "sdpa"):
            raise InputError(f"attn_impl must be 'math' or 'sdpa', not {self.attn_impl!r}")
        if self.feed_forward_proj not in ACTIVATIONS:
            raise InputError(f"feed_forward_proj {self.feed_forward_proj!r} is not built (T5 v1.0 is 'relu'; "
                             f"gated feed-forwards are v1.1); choose one of {sorted(ACTIVATIONS)}")
        if not self.tie_word_embeddings:
            raise InputError("tie_word_embeddings=False (T5 v1.1's separate, unscaled head) is not built")
        if self.relative_attention_num_buckets < 4:
            raise InputError("relative_attention_num_buckets must be at least 4 (half for each direction, "
                             "half of those exact)")
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 2:
            raise InputError("relative_attention_max_distance must be more than relative_attention_num_buckets / 2, "
                             "the largest offset with a bucket of its own")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "T5Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown T5Config field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_hf_config(cls, hf: dict) -> "T5Config":
        """From a Hugging Face T5 `config.json` dict; unknown keys are ignored, except one that changes the output:
        transformers 5 reads `tie_word_embeddings=False` as "keep the head tied but do not scale it", which it saves
        as `scale_decoder_outputs: false`; v1.0's head is scaled, so that is refused."""
        if hf.get("scale_decoder_outputs", True) is False:
            raise InputError("scale_decoder_outputs=False (an output layer without the d_model^-0.5 scale) is not "
                             "T5 v1.0 and is not built")
        known = {f.name for f in dataclasses.fields(cls)} - set(MINIBERT_FIELDS)
        d = {k: v for k, v in hf.items() if k in known}
        if isinstance(d.get("eos_token_id"), list):
            raise InputError(f"eos_token_id is a list {d['eos_token_id']}; minibert's T5 takes one id")
        d.setdefault("decoder_start_token_id", hf.get("pad_token_id", 0))  # T5 starts the decoder with the pad id
        return cls(**d)

    def to_hf_config(self) -> dict:
        """A dict that `transformers.T5Config(**d)` accepts."""
        d = {k: v for k, v in self.to_dict().items() if k not in MINIBERT_FIELDS}
        return {**d, "model_type": "t5", "is_encoder_decoder": True}


# --- the pieces ---


def rms_norm(config: T5Config) -> nn.RMSNorm:
    """T5's LayerNorm: RMSNorm(x) = g ⊙ x / sqrt(mean_c(x_c²) + eps).

    BERT's LayerNorm is g ⊙ (x - mean(x)) / sqrt(var(x) + eps) + b; T5 neither subtracts the mean nor adds a bias b,
    which saves work and, measured by its authors, costs nothing. `nn.RMSNorm` computes exactly this, with its
    gain g named `weight`, Hugging Face's key.
    """
    return nn.RMSNorm(config.d_model, eps=config.layer_norm_epsilon)


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """The bucket of each offset n = j - i (key position minus query position), an integer in [0, N).

    Bidirectional (encoder): half the buckets for n > 0, half for n <= 0, by |n|:  N' = N / 2,
        bucket = N' · [n > 0] + b(|n|).
    Causal (decoder): only the past counts, by m = max(-n, 0) = max(i - j, 0) (a future key is masked anyway):
        N' = N,  bucket = b(m).
    Within one direction, with E = N' / 2 exact buckets, offsets below E get one bucket each and larger ones
    share buckets that widen logarithmically up to max_distance:
        b(m) = m                                                              if m < E
        b(m) = min(N' - 1, E + floor(log(m / E) / log(max_distance / E) · (N' - E)))   otherwise
    """
    n = relative_position
    buckets = torch.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (n > 0).long() * num_buckets
        m = n.abs()
    else:
        m = (-n).clamp(min=0)
    exact = num_buckets // 2
    # floats computed in this order, and truncated by .long(), as Mesh TensorFlow and Hugging Face do
    log_ratio = torch.log(m.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(m < exact, m, large)


def padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """M (B, 1, 1, S) from a (B, S) 1/0 mask: 0 on real keys, the dtype's minimum on padding; None for no mask."""
    if attention_mask is None:
        return None
    real = attention_mask[:, None, None, :].bool()  # (B, 1, 1, S)
    return torch.zeros(real.shape, dtype=dtype, device=real.device).masked_fill_(~real, torch.finfo(dtype).min)


class T5Attention(nn.Module):
    """Multi-head attention without biases or scale; the first block of a stack also owns the relative bias table."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False, bidirectional: bool = True):
        super().__init__()
        C, H, D = config.d_model, config.num_heads, config.d_kv
        self.num_heads, self.head_size = H, D
        self.q = nn.Linear(C, H * D, bias=False)
        self.k = nn.Linear(C, H * D, bias=False)
        self.v = nn.Linear(C, H * D, bias=False)
        self.o = nn.Linear(H * D, C, bias=False)
        self.dropout_p = config.dropout_rate
        self.attend = ATTENTION[config.attn_impl]  # chosen once, here (minibert/attention.py)
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.fused_qkv = config.fused_qkv
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(self.num_buckets, H)  # one scalar per (bucket, head)
            self._buckets: dict[tuple, torch.Tensor] = {}  # (T, K, device) -> (T, K) buckets: fixed by the shape

    def position_bias(self, T: int, K: int, device) -> torch.Tensor:
        """(1, H, T, K): the learned scalar of the bucket of each offset j - i. Queries are the last T of K
        positions (the first K - T are cached). The buckets depend on the shape alone, so they are computed once
        per (T, K) and kept; the lookup in the table, which training changes, runs every time."""
        key = (T, K, str(device))
        if key not in self._buckets:
            if len(self._buckets) >= BUCKET_SHAPES_KEPT:  # variable-length batches: keep the latest shapes only
                self._buckets.pop(next(iter(self._buckets)))
            i = torch.arange(K - T, K, device=device)[:, None]  # (T, 1)
            j = torch.arange(K, device=device)[None, :]  # (1, K)
            self._buckets[key] = relative_position_bucket(j - i, self.bidirectional, self.num_buckets,
                                                          self.max_distance)  # (T, K)
        return self.relative_attention_bias(self._buckets[key]).permute(2, 0, 1)[None]  # (T, K, H) -> (1, H, T, K)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_size).transpose(1, 2)  # (B, L, H*D) -> (B, H, L, D)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V of self-attention, each (B, T, H*D). Fused: W_q, W_k, W_v stacked into one (3HD, C) matrix, one
        matmul, then split; the parameters stay three, named as in T5, so checkpoints are unchanged."""
        if not self.fused_qkv:
            return self.q(x), self.k(x), self.v(x)
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight])  # (3HD, C)
        return F.linear(x, weight).chunk(3, dim=-1)  # (B, T, 3HD) -> 3 x (B, T, HD)

    def forward(self, x, bias=None, memory=None, past: KeyValue | None = None, use_cache: bool = False,
                unpadding: Unpadding | None = None):
        """Self-attention when memory is None; otherwise cross-attention over memory (the encoder's output), whose
        keys and values `past` holds when they were computed before (a cache, or `T5Stack.cross_key_values`).
        Unpadded (the encoder's, `config.unpad`): x is (N, C), and `bias` one (1, H, n, n) position bias per row."""
        if unpadding is not None:
            q, k, v = self.project_qkv(x)  # (N, H*D) each
            context = attention_rows(q, k, v, unpadding.lengths, self.num_heads, self.dropout_p, self.training,
                                     scale=1.0, biases=bias)  # (N, H*D)
            return self.o(context), None  # (N, C)
        B, T, _ = x.shape
        if memory is None:  # self-attention: the new keys follow the cached ones
            q, k, v = (self.heads(t) for t in self.project_qkv(x))  # each (B, H, T, D)
            if past is not None:
                k_past, v_past = past
                k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)  # (B, H, K, D)
        elif past is not None:  # cross-attention, keys and values ready: the encoder's output does not change
            q, (k, v) = self.heads(self.q(x)), past  # (B, H, T, D); (B, H, S, D) each
        else:
            q = self.heads(self.q(x))  # (B, H, T, D)
            k, v = self.heads(self.k(memory)), self.heads(self.v(memory))  # (B, S, C) -> (B, H, S, D)
        # softmax(Q K^T + B) V: the shared attention with its scale set to 1, since T5 has none
        context, _ = self.attend(q, k, v, bias, self.dropout_p, self.training, scale=1.0)  # (B, H, T, D)
        context = context.transpose(1, 2).reshape(B, T, -1)  # (B, H, T, D) -> (B, T, H*D)
        return self.o(context), ((k, v) if use_cache else None)  # (B, T, C)


class T5LayerSelfAttention(nn.Module):
    """x = x + Dropout(SelfAttention(RMSNorm(x)))."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, bidirectional: bool):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, bidirectional)
        self.layer_norm = rms_norm(config)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, bias, past=None, use_cache=False, trace: T5AttentionTrace | None = None, unpadding=None):
        h = self.layer_norm(x)  # (B, T, C), or unpadded (N, C)
        a, present = self.SelfAttention(h, bias, past=past, use_cache=use_cache, unpadding=unpadding)
        if trace is not None:
            trace.input, trace.bias, trace.output = h, bias, a
        return x + self.dropout(a), present


class T5LayerCrossAttention(nn.Module):
    """x = x + Dropout(EncDecAttention(RMSNorm(x), encoder output)): queries from the decoder, keys and values
    from the encoder, with the encoder's padding mask and no position bias."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.EncDecAttention = T5Attention(config)
        self.layer_norm = rms_norm(config)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, memory, bias, past=None, use_cache=False, trace: T5AttentionTrace | None = None):
        h = self.layer_norm(x)  # (B, T, C)
        a, present = self.EncDecAttention(h, bias, memory=memory, past=past, use_cache=use_cache)
        if trace is not None:
            trace.input, trace.bias, trace.memory, trace.output = h, bias, memory, a
        return x + self.dropout(a), present


class T5DenseActDense(nn.Module):
    """FFN(x) = ReLU(x W_i) W_o, no biases, dropout on the hidden layer: C -> I -> C."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = activation(config.feed_forward_proj)  # minibert/feed_forward.py's activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(self.act(self.wi(x))))  # (B, T, C) -> (B, T, I) -> (B, T, C)


class T5LayerFF(nn.Module):
    """x = x + Dropout(FFN(RMSNorm(x)))."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseActDense(config)
        self.layer_norm = rms_norm(config)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Block(nn.Module):
    """Encoder: self-attention, feed-forward. Decoder: causal self-attention, cross-attention, feed-forward.
    Hugging Face keeps the sub-layers in a list (`layer.0`, `layer.1`, `layer.2`); so does this."""

    def __init__(self, config: T5Config, is_decoder: bool, has_relative_attention_bias: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, has_relative_attention_bias, not is_decoder)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config))
        self.layer.append(T5LayerFF(config))

    def forward(self, x, bias, memory=None, memory_bias=None, past=None, use_cache=False,
                trace: T5BlockTrace | None = None, unpadding: Unpadding | None = None):
        """past: this block's ((self key, self value), (cross key, cross value)) in the decoder, or None.
        trace: where to keep the block's intermediate tensors (minibert/trace.py), or None. unpadding: the encoder's
        real tokens, x then (N, C) (`config.unpad`)."""
        self_past, cross_past = past if past is not None else (None, None)
        h, self_present = self.layer[0](x, bias, self_past, use_cache,
                                        trace.self_attention if trace is not None else None, unpadding)
        cross_present = None
        if self.is_decoder:
            h, cross_present = self.layer[1](h, memory, memory_bias, cross_past, use_cache,
                                             trace.cross_attention if trace is not None else None)
        out = self.layer[-1](h)
        if trace is not None:
            trace.input, trace.output = x, out
        return out, ((self_present, cross_present) if use_cache else None)


class T5Stack(nn.Module):
    """Embedding lookup -> dropout -> blocks -> final RMSNorm -> dropout: the encoder or the decoder."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.embed_tokens = embed_tokens  # the shared table, registered here too, as in Hugging Face's keys
        n = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(T5Block(config, is_decoder, has_relative_attention_bias=i == 0) for i in range(n))
        self.final_layer_norm = rms_norm(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.fused_qkv = config.fused_qkv
        self.unpad = config.unpad and not is_decoder

    def cross_key_values(self, memory: torch.Tensor) -> list[KeyValue]:
        """Every decoder block's cross-attention keys and values, L x (K, V) each (B, H, S, D): K_l = memory W_k,l,
        V_l = memory W_v,l. The encoder's output is the same for every block, so the 2L projections are one matmul
        with the 2L weight matrices stacked, (B, S, C) @ (C, 2L·H·D), then split (the fast path of `fused_qkv`)."""
        attentions = [block.layer[1].EncDecAttention for block in self.block]
        weight = torch.cat([w for a in attentions for w in (a.k.weight, a.v.weight)])  # (2L·H·D, C)
        kv = F.linear(memory, weight).split(attentions[0].q.out_features, dim=-1)  # 2L x (B, S, H·D)
        heads = attentions[0].heads
        return [(heads(kv[2 * i]), heads(kv[2 * i + 1])) for i in range(len(attentions))]  # each (B, H, S, D)

    def forward(self, input_ids, attention_mask=None, memory=None, memory_mask=None, past_key_values=None,
                use_cache=False, trace: list[T5BlockTrace] | None = None):
        """input_ids: (B, T); attention_mask: (B, K) over cached and new tokens, or None; memory: the encoder's
        output (B, S, C) and memory_mask its (B, S) padding mask (decoder only); trace: one record per block
        (minibert/trace.py), or None."""
        B, T = input_ids.shape
        x = self.dropout(self.embed_tokens(input_ids))  # (B, T) -> (B, T, C)
        P = 0
        if past_key_values is not None:
            (k_past, _), _ = past_key_values[0]  # the first block's cached self-attention keys, (B, H, P, D)
            P = k_past.size(2)
        K = P + T
        # 1) the relative-position bias, computed once from the first block's table, shared by every block
        bias = self.block[0].layer[0].SelfAttention.position_bias(T, K, x.device)  # (1, H, T, K)
        # 2) plus the mask: causal (and padding) in the decoder, padding alone in the encoder
        if self.is_decoder:
            bias = bias + causal_mask(T, K, attention_mask, x.dtype, x.device)  # (1 or B, H, T, K)
        elif attention_mask is not None and self.unpad:  # the real tokens alone, each row with its own bias
            return self.unpadded(x, attention_mask, bias, trace)
        elif attention_mask is not None:
            bias = bias + padding_bias(attention_mask, x.dtype)  # (B, H, T, K)
        memory_bias = padding_bias(memory_mask, x.dtype) if self.is_decoder else None  # (B, 1, 1, S) or None
        if past_key_values is None and self.is_decoder and self.fused_qkv:  # every block's cross K, V at once
            past_key_values = [(None, kv) for kv in self.cross_key_values(memory)]
        presents = [] if use_cache else None
        for i, block in enumerate(self.block):
            past = past_key_values[i] if past_key_values is not None else None
            x, present = block(x, bias, memory, memory_bias, past, use_cache, trace[i] if trace is not None else None)
            if use_cache:
                presents.append(present)
        return self.dropout(self.final_layer_norm(x)), presents

    def unpadded(self, x, attention_mask, bias, trace=None):
        """The encoder on the N real tokens of a padded batch: (B, S, C) -> (N, C) through every block, each row
        attending over its own tokens with its cut of the position bias (`unpad.row_biases`), then back to
        (B, S, C) with zeros at the pads. Returns (output, None) as `forward` does."""
        unpadding = Unpadding.from_mask(attention_mask)
        x = unpadding.unpad(x)  # (B, S, C) -> (N, C)
        biases = row_biases(bias, unpadding)  # B x (1, H, n_b, n_b)
        for i, block in enumerate(self.block):
            x, _ = block(x, biases, trace=trace[i] if trace is not None else None, unpadding=unpadding)
        return unpadding.pad(self.dropout(self.final_layer_norm(x))), None  # (N, C) -> (B, S, C)


def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """The decoder's input: [start, y_0, ..., y_{T-2}], so that position t reads the target tokens before t and
    predicts y_t. An ignored label (-100) becomes the pad id, since it has no embedding."""
    shifted = torch.full_like(labels, decoder_start_token_id)  # (B, T)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


@dataclass
class Seq2SeqLMOutput:
    loss: torch.Tensor | None  # scalar: mean cross-entropy over the labels that are not -100
    logits: torch.Tensor | None  # (B, T, V): logits[:, t] scores output token t; None from the chunked loss
    past_key_values: list | None  # L_dec x ((self key, value), (cross key, value)); with use_cache only
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, C)
    trace: T5Trace | None = None  # with output_trace=True (minibert/trace.py)


def init_t5_weights(module: nn.Module, config: T5Config) -> None:
    """T5's initialisation (Mesh TensorFlow's), f = initializer_factor:
    embedding ~ N(0, f²); W_q ~ N(0, f²/(C·D)) — the 1/sqrt(D) that attention leaves out, folded in — W_k, W_v ~
    N(0, f²/C), W_o ~ N(0, f²/(H·D)); W_i ~ N(0, f²/C), W_o of the feed-forward ~ N(0, f²/I); relative bias table
    ~ N(0, f²/C); RMSNorm gains f."""
    f, C, D, H, I = config.initializer_factor, config.d_model, config.d_kv, config.num_heads, config.d_ff
    if isinstance(module, T5ForConditionalGeneration):
        nn.init.normal_(module.shared.weight, std=f)
    elif isinstance(module, nn.RMSNorm):
        nn.init.constant_(module.weight, f)
    elif isinstance(module, T5DenseActDense):
        nn.init.normal_(module.wi.weight, std=f * C**-0.5)
        nn.init.normal_(module.wo.weight, std=f * I**-0.5)
    elif isinstance(module, T5Attention):
        nn.init.normal_(module.q.weight, std=f * (C * D) ** -0.5)
        nn.init.normal_(module.k.weight, std=f * C**-0.5)
        nn.init.normal_(module.v.weight, std=f * C**-0.5)
        nn.init.normal_(module.o.weight, std=f * (H * D) ** -0.5)
        if hasattr(module, "relative_attention_bias"):
            nn.init.normal_(module.relative_attention_bias.weight, std=f * C**-0.5)


class T5ForConditionalGeneration(nn.Module):
    """T5 with its output layer: logits = (decoder(shift_right(y), encoder(x)) · C^-½) · E^T."""

    # stored once, as shared.weight
    TIED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(lambda m: init_t5_weights(m, config))
        self.lm_head.weight = self.shared.weight  # tie: W_output = E

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               trace: list[T5BlockTrace] | None = None) -> torch.Tensor:
        """The encoder's output, (B, S) -> (B, S, C); generation runs it once."""
        return self.encoder(input_ids, attention_mask, trace=trace)[0]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        past_key_values: list | None = None,
        use_cache: bool = False,
        output_trace: bool = False,
    ) -> Seq2SeqLMOutput:
        """input_ids, attention_mask: (B, S), the input text and its padding; labels: (B, T), the target text,
        -100 where ignored; decoder_input_ids: (B, T), by default shift_right(labels). encoder_hidden_states:
        the encoder's output from an earlier call, to skip running it again. output_trace: keep every block's
        intermediate tensors, returned as `trace` (minibert/trace.py; the encoder's only when it runs).

        loss = -(1/N) Σ_{b, t: y_{b,t} != -100} log softmax(logits_{b,t})[y_{b,t}]
        """
        trace = T5Trace.for_layers(len(self.encoder.block), len(self.decoder.block)) if output_trace else None
        if encoder_hidden_states is None:
            if input_ids is None:
                raise InputError("T5 needs input_ids (or encoder_hidden_states from an earlier call)")
            encoder_hidden_states = self.encode(input_ids, attention_mask,
                                                trace.encoder if trace is not None else None)  # (B, S, C)
        if decoder_input_ids is None:
            if labels is None:
                raise InputError("T5 needs decoder_input_ids or labels to run its decoder")
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        h, presents = self.decoder(decoder_input_ids, decoder_attention_mask, encoder_hidden_states, attention_mask,
                                   past_key_values, use_cache,
                                   trace.decoder if trace is not None else None)  # (B, T) -> (B, T, C)
        if trace is not None:
            trace.decoder_output = h
        h = h * self.config.d_model**-0.5  # (B, T, C): v1.0's scaled output layer
        if labels is not None and self.config.chunked_loss:  # the same loss, the (B, T, V) logits never formed
            loss = linear_cross_entropy(h, self.lm_head.weight, labels)
            return Seq2SeqLMOutput(loss, None, presents, encoder_hidden_states, trace)
        logits = self.lm_head(h)  # (B, T, C) -> (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return Seq2SeqLMOutput(loss, logits, presents, encoder_hidden_states, trace)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
