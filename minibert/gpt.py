"""GPT-2: a decoder that reads left to right and predicts the next token.

Shapes: B batch, T new tokens, P tokens already in the key-value cache, S = P + T keys, C hidden size (`n_embd`),
H heads, D head size (C = H * D), I feed-forward width (`n_inner`, 4C by default), V vocabulary size, L layers.

Read it beside BERT (`minibert/encoder.py`). The block is the same attention and feed-forward; what differs:

1. **Causal attention.** Token i may look at tokens j <= i only, so that predicting token i + 1 cannot read it:

       Attention(Q, K, V) = softmax(Q K^T / sqrt(D) + M) V,      M_ij = 0 if j <= i else -inf

   With P tokens cached from earlier steps, query i sits at position P + i, so M_ij = 0 if j <= P + i. Padded keys
   get -inf as in BERT. (-inf is the formula; the code writes the dtype's minimum, as `attention.additive_mask`
   does, so that a query whose every key is masked stays finite.)
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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention_math, attention_sdpa
from .errors import InputError
from .feed_forward import ACTIVATIONS, activation
from .heads import IGNORE_INDEX

KeyValue = tuple[torch.Tensor, torch.Tensor]  # one layer's cached (key, value), each (B, H, S, D)

# minibert's fields that Hugging Face's GPT2Config does not have.
MINIBERT_FIELDS = ("attn_impl",)
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
    # --- minibert's own switch ---
    attn_impl: str = "sdpa"                 # "math": the hand-written formula; "sdpa": torch's fused causal kernel

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


# --- the causal mask and the two attention paths ---


def causal_mask(T: int, S: int, attention_mask: torch.Tensor | None, dtype: torch.dtype, device) -> torch.Tensor:
    """M of shape (1 or B, 1, T, S): M_ij = 0 if j <= P + i and key j is a real token, else the dtype's minimum.

    P = S - T tokens come from the cache, so query i is token P + i of the sequence. attention_mask: (B, S) with 1 on
    real tokens and 0 on padding, or None. "Allowed" is computed as booleans and turned into 0 / minimum once, since
    adding two minimums (causal + padding) would overflow to -inf.
    """
    P = S - T
    i = torch.arange(T, device=device)[:, None] + P  # (T, 1): position of each query in the sequence
    j = torch.arange(S, device=device)[None, :]  # (1, S): position of each key
    allowed = (j <= i)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()  # (B, 1, T, S): no padded key either
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)


def causal_attention_math(q, k, v, mask, dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """The readable path: softmax(Q K^T / sqrt(D) + M) V by explicit matmul and softmax (`attention.attention_math`).

    q: (B, H, T, D); k, v: (B, H, S, D); mask: (1 or B, 1, T, S), or None for the plain square causal mask.
    """
    if mask is None:
        mask = causal_mask(q.size(-2), k.size(-2), None, q.dtype, q.device)  # (1, 1, T, T)
    context, _ = attention_math(q, k, v, mask, dropout_p, training)  # (B, H, T, D)
    return context


def causal_attention_sdpa(q, k, v, mask, dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """The fast path: one fused kernel. With no mask given, the kernel applies the square causal mask itself
    (`is_causal=True`) and can skip the blocks above the diagonal; otherwise it takes the combined mask M.

    One exception: torch has no fused CPU kernel that drops out attention probabilities, so training with dropout on
    the CPU falls back to torch's own composite of the readable path's formula, plus a scan for fully masked rows;
    the readable path itself is then taken (about 10% off a GPT training step, benchmarks' `gpt_train`)."""
    if training and dropout_p > 0 and q.device.type == "cpu":
        return causal_attention_math(q, k, v, mask, dropout_p, training)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p if training else 0.0, is_causal=True)
    context, _ = attention_sdpa(q, k, v, mask, dropout_p, training)  # (B, H, T, D)
    return context


CAUSAL_ATTENTION = {"math": causal_attention_math, "sdpa": causal_attention_sdpa}


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
        self.attend = CAUSAL_ATTENTION[config.attn_impl]  # chosen once, here

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)

    def forward(self, x, mask=None, past: KeyValue | None = None, use_cache: bool = False):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=-1)  # (B, T, 3C) -> 3 x (B, T, C)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # (B, H, T, D)
        if past is not None:
            k_past, v_past = past
            k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)  # (B, H, P + T, D) = (B, H, S, D)
        context = self.attend(q, k, v, mask, self.attn_pdrop, self.training)  # (B, H, T, D)
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

    def forward(self, x, mask=None, past: KeyValue | None = None, use_cache: bool = False):
        a, present = self.attn(self.ln_1(x), mask, past, use_cache)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present


@dataclass
class GPT2ModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, C), after the final LayerNorm
    past_key_values: list[KeyValue] | None  # L x (key, value), each (B, H, S, D); with use_cache only


@dataclass
class CausalLMOutput:
    loss: torch.Tensor | None  # scalar: mean next-token cross-entropy over labelled positions
    logits: torch.Tensor  # (B, T, V): logits[:, t] scores the token at t + 1
    past_key_values: list[KeyValue] | None  # L x (key, value), each (B, H, S, D); with use_cache only
    last_hidden_state: torch.Tensor | None = None  # (B, T, C)


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
    """Embeddings -> L pre-LN causal blocks -> final LayerNorm. Hugging Face's `transformer` (`GPT2Model`)."""

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
    ) -> GPT2ModelOutput:
        """input_ids: (B, T), the tokens after the P cached ones; attention_mask: (B, S) over cached and new tokens
        (1 = real, 0 = padding), or None when nothing is padded."""
        B, T = input_ids.shape
        P = past_key_values[0][0].size(2) if past_key_values is not None else 0
        if P + T > self.config.n_positions:
            raise InputError(f"{P + T} tokens is more than n_positions={self.config.n_positions}, "
                             "the longest sequence this model has positions for")
        positions = torch.arange(P, P + T, device=input_ids.device)  # (T,): new tokens continue after the cache
        x = self.drop(self.wte(input_ids) + self.wpe(positions))  # (B, T, C) + (T, C) -> (B, T, C)
        # The fused kernel's own causal mask is the square one (P = 0) without padding; anything else gets M.
        padded = attention_mask is not None and not bool(attention_mask.all())
        mask = causal_mask(T, P + T, attention_mask if padded else None, x.dtype, x.device) if padded or P else None
        presents = [] if use_cache else None
        for i, block in enumerate(self.h):
            x, present = block(x, mask, past_key_values[i] if past_key_values is not None else None, use_cache)
            if use_cache:
                presents.append(present)
        return GPT2ModelOutput(self.ln_f(x), presents)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """loss = -(1/N) Σ_{b, t < T-1: labels_{b,t+1} != -100} log softmax(logits_{b,t})[labels_{b,t+1}]

    The logits at position t score the token at t + 1, so the labels are the inputs themselves, shifted by one
    inside the loss; the last position has nothing to predict. N counts the (b, t) pairs whose next label is not
    -100 (Hugging Face's convention), so ignored positions cannot change the loss.

    The labels move, not the logits: position t gets label t + 1 and the last position gets -100. The sum is the
    same; slicing the (B, T, V) logits instead would copy them, and copy their gradient back into a zeroed
    (B, T, V) tensor, a sixth of a small GPT's training step on the CPU.
    """
    V = logits.size(-1)
    shifted_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T): the tokens at 1 .. T-1, then -100
    return F.cross_entropy(logits.reshape(-1, V), shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX)


class GPT2LMHeadModel(nn.Module):
    """GPT-2 with its language-model head: logits = LN_f(h) · wte^T, the token embedding reused as the output."""

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
    ) -> CausalLMOutput:
        """labels: (B, T), usually input_ids itself (the shift is inside `next_token_loss`). Positions where
        attention_mask is 0 are ignored as labels, so a padded batch needs no -100 of its own; this is the one
        difference from Hugging Face's GPT-2, which counts a padded label unless it is -100."""
        out = self.transformer(input_ids, attention_mask, past_key_values, use_cache)
        logits = self.lm_head(out.last_hidden_state)  # (B, T, C) -> (B, T, V)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask[:, -labels.size(1):] == 0, IGNORE_INDEX)  # (B, T)
            loss = next_token_loss(logits, labels)
        return CausalLMOutput(loss, logits, out.past_key_values, out.last_hidden_state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
