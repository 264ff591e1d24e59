"""GPT-2: a decoder that reads left to right and predicts the next token.

Shapes: B batch, T new tokens, P tokens already in the key-value cache, S = P + T keys, C hidden size (`n_embd`),
H heads, D head size (C = H * D), I feed-forward width (`n_inner`, 4C by default), V vocabulary size, L layers.

Read it beside BERT (`minibert/encoder.py`). The block is the same attention and feed-forward; what differs:

1. **Causal attention.** Token i may look at tokens j <= i only, so that predicting token i + 1 cannot read it:

       Attention(Q, K, V) = softmax(Q K^T / sqrt(D) + M) V,      M_ij = 0 if j <= i else -inf

   With P tokens cached from earlier steps, query i sits at position P + i, so M_ij = 0 if j <= P + i. Padded keys
   get -inf as in BERT. (-inf is the formula; the code writes the dtype's minimum, as `attention.additive_mask`
   does, so that a query whose every key is masked stays finite.) The mask is `attention.causal_mask`, and the
   attention BERT's own function (minibert/attention.py).
2. **Pre-LN blocks and a final LayerNorm** (BERT is post-LN):

       x = x + Dropout(Attention(LN_1(x)))
       x = x + Dropout(MLP(LN_2(x)))          ... L times, then h = LN_f(x)

3. **Embeddings**: x = wte[id] + wpe[t], summed and dropped out; no segment table and no LayerNorm on them.
4. **GELU's tanh approximation**, `½x(1 + tanh(sqrt(2/π)(x + 0.044715x³)))` ("gelu_new").
5. **The output is the token embedding itself**, with no transform and no bias: logits = h · wte^T.
6. **The next-token loss**: position t predicts token t + 1 (see `next_token_loss`).

Weight layout. GPT-2's `Conv1D` is a linear layer whose weight is stored (in, out), so that y = x W + b, where
`nn.Linear` stores (out, in) and computes x W^T + b. minibert keeps GPT-2's layout (`Conv1D` below) rather than an
`nn.Linear` plus a transpose at conversion: then a minibert GPT checkpoint *is* a Hugging Face GPT-2 checkpoint,
converting is a check of names and shapes with no tensor rewritten (as for BERT), and the code reads as the
formula x W + b. Weight decay by rank (rank >= 2 decays) treats both layouts alike.

Fast paths, each chosen once by a config field and tested equal to the readable path (tests/test_fast_paths.py):
`chunked_loss` (the output layer and the next-token loss a few rows at a time, `heads.linear_cross_entropy`) and
`unpad` (a padded batch's real tokens alone through the blocks, attention one row at a time, as BERT's `unpad`).
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
from .heads import IGNORE_INDEX, linear_cross_entropy
from .trace import GPT2BlockTrace, GPT2Trace
from .unpad import Unpadding, attention_rows

KeyValue = tuple[torch.Tensor, torch.Tensor]  # one layer's cached (key, value), each (B, H, S, D)

# minibert's fields that Hugging Face's GPT2Config does not have.
MINIBERT_FIELDS = ("attn_impl", "chunked_loss", "unpad")
# Hugging Face options that change the network, with the one value minibert builds.
HF_FIXED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}


@dataclass
class GPT2Config:
    vocab_size: int = 50257                 # V: rows of the token embedding wte
    n_positions: int = 1024                 # longest sequence (prompt + generated) the position table wpe covers
    n_embd: int = 768                       # C: width of every token vector
    n_layer: int = 12                       # L: blocks
    n_head: int = 12                        # H: heads; head size D = C / H
    n_inner: int | None = None              # I: feed-forward width; None means 4C
    activation_function: str = "gelu_new"   # GPT-2's tanh-approximated GELU
    resid_pdrop: float = 0.1                # dropout on the two residual branches of each block
    embd_pdrop: float = 0.1                 # dropout on the summed embeddings
    attn_pdrop: float = 0.1                 # dropout on the attention probabilities
    layer_norm_epsilon: float = 1e-5        # GPT-2's LayerNorm epsilon (PyTorch's default)
    initializer_range: float = 0.02         # std of the normal initialisation of every weight matrix
    bos_token_id: int | None = 50256        # GPT-2 starts and ends a text with the same token, <|endoftext|>
    eos_token_id: int | None = 50256        # generation stops after this token
    pad_token_id: int | None = None         # GPT-2 has none; batches are padded with any id and an attention mask
    tie_word_embeddings: bool = True        # the LM head is wte (the only layout built here)
    # --- minibert's own switches ---
    attn_impl: str = "sdpa"                 # "math": the hand-written formula; "sdpa": torch's fused causal kernel
    chunked_loss: bool = False              # with labels: the output layer and the loss a few rows at a time, never
    #                                         forming the (B, T, V) logits (then None); see `GPT2LMHeadModel`
    unpad: bool = False                     # a padded batch without a cache (fine-tuning): per-token work on the
    #                                         real tokens only, attention one row at a time (minibert/unpad.py)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise InputError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.attn_impl not in ("math", "sdpa"):
            raise InputError(f"attn_impl must be 'math' or 'sdpa', not {self.attn_impl!r}")
        if not self.tie_word_embeddings:
            raise InputError("tie_word_embeddings=False (an LM head apart from wte) is not built; GPT-2 ties them")
        if self.activation_function not in ACTIVATIONS:
            raise InputError(f"activation_function {self.activation_function!r} is not supported; "
                             f"choose one of {sorted(ACTIVATIONS)}")

    @property
    def head_size(self) -> int:
        """D = C / H."""
        return self.n_embd // self.n_head

    @property
    def inner_size(self) -> int:
        """I: n_inner, or 4C when it is None."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPT2Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown GPT2Config field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_hf_config(cls, hf: dict) -> "GPT2Config":
        """From a Hugging Face GPT-2 `config.json` dict; refuses options that would build a different network."""
        for key, value in HF_FIXED.items():
            if hf.get(key, value) != value:
                raise InputError(f"Hugging Face GPT-2 option {key}={hf[key]!r} is not supported (only {value!r})")
        known = {f.name for f in dataclasses.fields(cls)} - set(MINIBERT_FIELDS)
        d = {k: v for k, v in hf.items() if k in known}
        for key in ("bos_token_id", "eos_token_id"):
            if isinstance(d.get(key), list):
                raise InputError(f"{key} is a list {d[key]}; minibert's GPT takes one id")
        return cls(**d)

    def to_hf_config(self) -> dict:
        """A dict that `transformers.GPT2Config(**d)` accepts."""
        d = {k: v for k, v in self.to_dict().items() if k not in MINIBERT_FIELDS}
        return {**d, **HF_FIXED, "model_type": "gpt2"}


# --- the network ---


class Conv1D(nn.Module):
    """y = x W + b with W stored (in, out), GPT-2's layout (the transpose of `nn.Linear`'s)."""

    def __init__(self, n_out: int, n_in: int):  # Hugging Face's argument order
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)  # (B*T, in) @ (in, out) + b -> (B*T, out)
        return y.view(*x.shape[:-1], -1)  # (B, T, out)


class GPT2Attention(nn.Module):
    """Causal multi-head self-attention: Q, K, V from one (C, 3C) projection `c_attn`, attend, merge, `c_proj`."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        C = config.n_embd
        self.num_heads = config.n_head
        self.c_attn = Conv1D(3 * C, C)  # [W_q | W_k | W_v] side by side
        self.c_proj = Conv1D(C, C)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.attend = ATTENTION[config.attn_impl]  # chosen once, here (minibert/attention.py)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)

    def forward(self, x, mask=None, past: KeyValue | None = None, use_cache: bool = False,
                unpadding: Unpadding | None = None):
        """(B, T, C) -> (B, T, C); unpadded, (N, C) -> (N, C), each row's real tokens attending causally among
        themselves (no cache then)."""
        if unpadding is not None:
            q, k, v = self.c_attn(x).split(x.size(-1), dim=-1)  # (N, 3C) -> 3 x (N, C)
            context = attention_rows(q, k, v, unpadding.lengths, self.num_heads, self.attn_pdrop, self.training,
                                     is_causal=True)  # (N, C)
            return self.resid_dropout(self.c_proj(context)), None
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=-1)  # (B, T, 3C) -> 3 x (B, T, C)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, H, T, D)
        if past is not None:
            k_past, v_past = past
            k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)  # (B, H, P + T, D) = (B, H, S, D)
        # no mask means the square causal one, which the fused kernel applies itself (and skips the blocks above
        # the diagonal); the model builds M for anything else: a cache, or padding
        context, _ = self.attend(q, k, v, mask, self.attn_pdrop, self.training, is_causal=mask is None)  # (B, H, T, D)
        context = context.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, C): heads concatenated
        return self.resid_dropout(self.c_proj(context)), ((k, v) if use_cache else None)


class GPT2MLP(nn.Module):
    """MLP(x) = Dropout(GELU_tanh(x W_fc + b_fc) W_proj + b_proj): widen C -> I, narrow I -> C."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(config.inner_size, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.inner_size)
        self.act = activation(config.activation_function)  # minibert/feed_forward.py's activations
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C) -> (B, T, I) -> (B, T, C)


class GPT2Block(nn.Module):
    """x = x + Attention(LN_1(x)); x = x + MLP(LN_2(x))  (pre-LN)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x, mask=None, past: KeyValue | None = None, use_cache: bool = False,
                trace: GPT2BlockTrace | None = None, unpadding: Unpadding | None = None):
        """(B, T, C) -> (B, T, C), or unpadded (N, C) -> (N, C). `trace`: where to keep the block's intermediate
        tensors (minibert/trace.py)."""
        h = self.ln_1(x)  # (B, T, C)
        a, present = self.attn(h, mask, past, use_cache, unpadding)
        x1 = x + a
        x2 = x1 + self.mlp(self.ln_2(x1))
        if trace is not None:
            trace.input, trace.attention_input, trace.attention_output, trace.after_attention = x, h, a, x1
            trace.output = x2
        return x2, present


@dataclass
class GPT2ModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, C), after the final LayerNorm
    past_key_values: list[KeyValue] | None  # L x (key, value), each (B, H, S, D); with use_cache only
    trace: GPT2Trace | None = None  # every block's intermediate tensors (minibert/trace.py), with output_trace


@dataclass
class CausalLMOutput:
    loss: torch.Tensor | None  # scalar: mean next-token cross-entropy over labelled positions
    logits: torch.Tensor | None  # (B, T, V): logits[:, t] scores the token at t + 1; None from the chunked loss
    past_key_values: list[KeyValue] | None  # L x (key, value), each (B, H, S, D); with use_cache only
    last_hidden_state: torch.Tensor | None = None  # (B, T, C)
    trace: GPT2Trace | None = None  # with output_trace=True (minibert/trace.py)


def init_gpt2_weights(module: nn.Module, config: GPT2Config) -> None:
    """GPT-2's initialisation: weights ~ N(0, 0.02²), biases 0, LayerNorm 1 / 0; the two projections that write into
    the residual stream (`c_proj`) get std 0.02 / sqrt(2L), so that the 2L residual additions keep its variance."""
    std = config.initializer_range
    if isinstance(module, (nn.Linear, nn.Embedding, Conv1D)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, (GPT2Attention, GPT2MLP)):
        nn.init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * config.n_layer))


class GPT2Model(nn.Module):
    """Embeddings -> L pre-LN causal blocks -> final LayerNorm. Hugging Face's `transformer` (`GPT2Model`).

    With `config.unpad`, a padded batch without a cache (fine-tuning's) runs its blocks on the N real tokens,
    (B, T, C) -> (N, C), each row attending causally over its own tokens; the output is padded back with zeros at
    the pads. The real tokens' outputs are the padded path's; a pad's is 0 (so with padding in front of a row, the
    loss term that a pad position would predict the row's first token from changes: fine-tuning reads real tokens).
    """

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: list[KeyValue] | None = None,
        use_cache: bool = False,
        output_trace: bool = False,
    ) -> GPT2ModelOutput:
        """input_ids: (B, T), the tokens after the P cached ones; attention_mask: (B, S) over cached and new tokens
        (1 = real, 0 = padding), or None when nothing is padded. output_trace: keep every block's intermediate
        tensors, returned as `trace` (minibert/trace.py)."""
        B, T = input_ids.shape
        P = past_key_values[0][0].size(2) if past_key_values is not None else 0
        if P + T > self.config.n_positions:
            raise InputError(f"{P + T} tokens is more than n_positions={self.config.n_positions}, "
                             "the longest sequence this model has positions for")
        positions = torch.arange(P, P + T, device=input_ids.device)  # (T,): new tokens continue after the cache
        x = self.drop(self.wte(input_ids) + self.wpe(positions))  # (B, T, C) + (T, C) -> (B, T, C)
        # The fused kernel's own causal mask is the square one (P = 0) without padding; anything else gets M.
        padded = attention_mask is not None and not bool(attention_mask.all())
        # Unpadded (`config.unpad`, a padded batch and no cache): the N real tokens alone, (B, T, C) -> (N, C).
        unpadding = Unpadding.from_mask(attention_mask) if self.config.unpad and padded and not (P or use_cache) \
            else None
        if unpadding is not None:
            x, padded = unpadding.unpad(x), False  # (N, C): each row's attention sees its own tokens only
        mask = causal_mask(T, P + T, attention_mask if padded else None, x.dtype, x.device) if padded or P else None
        trace = GPT2Trace.for_layers(len(self.h)) if output_trace else None
        presents = [] if use_cache else None
        for i, block in enumerate(self.h):
            x, present = block(x, mask, past_key_values[i] if past_key_values is not None else None, use_cache,
                               trace.blocks[i] if trace is not None else None, unpadding)
            if use_cache:
                presents.append(present)
        h = self.ln_f(x)  # (B, T, C), or (N, C)
        return GPT2ModelOutput(unpadding.pad(h) if unpadding is not None else h, presents, trace)


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): the label of position t is the token at t + 1; the last position gets -100.

    The labels move, not the logits: slicing the (B, T, V) logits instead would copy them, and copy their gradient
    back into a zeroed (B, T, V) tensor, a sixth of a small GPT's training step on the CPU.
    """
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # the tokens at 1 .. T-1, then -100


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """loss = -(1/N) Σ_{b, t < T-1: labels_{b,t+1} != -100} log softmax(logits_{b,t})[labels_{b,t+1}]

    The logits at position t score the token at t + 1, so the labels are the inputs themselves, shifted by one
    inside the loss (`next_token_labels`); the last position has nothing to predict. N counts the (b, t) pairs whose
    next label is not -100 (Hugging Face's convention), so ignored positions cannot change the loss.
    """
    V = logits.size(-1)
    return F.cross_entropy(logits.reshape(-1, V), next_token_labels(labels).reshape(-1), ignore_index=IGNORE_INDEX)


class GPT2LMHeadModel(nn.Module):
    """GPT-2 with its language-model head: logits = LN_f(h) · wte^T, the token embedding reused as the output.

    For a small model the output layer is a large part of a training step (V = 8,000 against C = 256: as much
    arithmetic as two blocks), and its (B, T, V) logits, their log-softmax and their gradient are the largest
    tensors of the step. With `config.chunked_loss` and labels, the loss is `heads.linear_cross_entropy`: the same
    next-token loss, a few rows at a time, the logits of a chunk turned into their gradient at once; `logits` is
    then None (ask without labels for them).
    """

    TIED_KEYS = ("lm_head.weight",)  # stored once, as transformer.wte.weight

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(lambda m: init_gpt2_weights(m, config))
        self.lm_head.weight = self.transformer.wte.weight  # tie: W_output = wte

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: list[KeyValue] | None = None,
        use_cache: bool = False,
        output_trace: bool = False,
    ) -> CausalLMOutput:
        """labels: (B, T), usually input_ids itself (the shift is inside `next_token_loss`). Positions where
        attention_mask is 0 are ignored as labels, so a padded batch needs no -100 of its own; this is the one
        difference from Hugging Face's GPT-2, which counts a padded label unless it is -100."""
        out = self.transformer(input_ids, attention_mask, past_key_values, use_cache, output_trace)
        h = out.last_hidden_state  # (B, T, C)
        if labels is not None and attention_mask is not None:
            labels = labels.masked_fill(attention_mask[:, -labels.size(1):] == 0, IGNORE_INDEX)  # (B, T)
        if labels is not None and self.config.chunked_loss:  # the same loss, the (B, T, V) logits never formed
            loss = linear_cross_entropy(h, self.lm_head.weight, next_token_labels(labels))
            return CausalLMOutput(loss, None, out.past_key_values, h, out.trace)
        logits = self.lm_head(h)  # (B, T, C) -> (B, T, V)
        loss = next_token_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(loss, logits, out.past_key_values, h, out.trace)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
