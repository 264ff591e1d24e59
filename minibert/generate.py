"""Generation: write one token at a time, each chosen from the model's scores for the next token.

Shapes: B batch, T prompt tokens, V vocabulary size, N new tokens.

At every step the model gives logits z (B, V) for the next token, and the choice is

    greedy:    v = argmax_v z_v
    sampling:  v ~ softmax(z / τ), restricted to the k largest z_v when top_k = k (the rest get probability 0)

A temperature τ < 1 sharpens the distribution and τ > 1 flattens it; as τ -> 0 sampling becomes greedy.

The key-value cache. In a causal model token i looks only at tokens j <= i, so the keys and values of the tokens
already written never change when one more is added. Each step can then run the model on the newest token alone,
attending over the cached keys and values, instead of running the whole prefix again: the same tokens (a test
checks it) for one token's work per step in place of t tokens'.

GPT continues the prompt. T5 runs its encoder once on the input; its decoder writes the output from
`decoder_start_token_id`, caching its own keys and values and, computed once, those of the encoder's output that
cross-attention reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InputError
from .gpt import GPT2LMHeadModel
from .t5 import T5ForConditionalGeneration


@dataclass
class GenerationConfig:
    max_new_tokens: int = 20                # write at most this many tokens
    do_sample: bool = False                 # False: greedy (argmax); True: sample from softmax(z / temperature)
    temperature: float = 1.0                # τ > 0, divides the logits before sampling
    top_k: int | None = None                # sample among the k most likely tokens only; None: among all
    seed: int | None = None                 # seeds the sampler's own generator (torch's global one is untouched)
    eos_token_id: int | None = None         # a row stops after this token; None: the model config's eos_token_id
    use_cache: bool = True                  # True: reuse keys and values; False: recompute the prefix every step

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be 0 or more, not {self.max_new_tokens}")
        if not self.temperature > 0:
            raise InputError(f"temperature must be more than 0, not {self.temperature} "
                             "(for greedy decoding, leave do_sample off)")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"top_k must be 1 or more (or None for every token), not {self.top_k}")


def choose_next(logits: torch.Tensor, settings: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row, (B, V) -> (B,): argmax z, or a draw from softmax(z / τ) over the top k."""
    if not settings.do_sample:
        return logits.argmax(dim=-1)  # (B,)
    z = logits / settings.temperature  # (B, V)
    if settings.top_k is not None and settings.top_k < z.size(-1):
        kth = z.topk(settings.top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest score of each row
        z = z.masked_fill(z < kth, float("-inf"))  # (B, V): probability 0 outside the top k
    probs = z.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B, 1) -> (B,)


class _Writer:
    """The loop's bookkeeping: the sampler's generator, which rows have finished, what a finished row repeats."""

    def __init__(self, model, settings: GenerationConfig, batch: int, device):
        self.settings = settings
        self.generator = None
        if settings.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.eos = settings.eos_token_id if settings.eos_token_id is not None else model.config.eos_token_id
        pad = model.config.pad_token_id
        self.fill = pad if pad is not None else self.eos  # what a row writes after its end
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)

    def next(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, V) scores of the next token -> (B, 1) tokens; a row that has written eos writes the fill token."""
        token = choose_next(logits, self.settings, self.generator)  # (B,)
        if self.eos is not None:
            token = token.masked_fill(self.finished, self.fill)
            self.finished |= token == self.eos
        return token[:, None]  # (B, 1)

    def done(self) -> bool:
        return self.eos is not None and bool(self.finished.all())


@torch.no_grad()
def generate_causal(model: GPT2LMHeadModel, input_ids: torch.Tensor, settings: GenerationConfig) -> torch.Tensor:
    """Continue each prompt: (B, T) -> (B, T + N), N <= max_new_tokens. Prompts in a batch have equal length."""
    B, T = input_ids.shape
    if T == 0:
        raise InputError("the prompt is empty; GPT needs at least one token to continue")
    limit = model.config.n_positions
    if T + settings.max_new_tokens > limit:
        raise InputError(f"{T} prompt tokens + max_new_tokens {settings.max_new_tokens} is more than the model's "
                         f"n_positions={limit}; ask for at most {max(limit - T, 0)} new tokens")
    writer = _Writer(model, settings, B, input_ids.device)
    tokens, past = input_ids, None
    for _ in range(settings.max_new_tokens):
        if settings.use_cache:  # the whole prompt first, then one token at a time
            step_input = tokens if past is None else tokens[:, -1:]  # (B, T) then (B, 1)
            out = model(step_input, past_key_values=past, use_cache=True)
            past = out.past_key_values
        else:
            out = model(tokens)  # the whole prefix, every step
        tokens = torch.cat([tokens, writer.next(out.logits[:, -1])], dim=1)  # (B, t) -> (B, t + 1)
        if writer.done():
            break
    return tokens


@torch.no_grad()
def generate_seq2seq(model: T5ForConditionalGeneration, input_ids: torch.Tensor, settings: GenerationConfig,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Write the output for each input: (B, S) -> (B, 1 + N), starting with decoder_start_token_id."""
    B = input_ids.size(0)
    memory = model.encode(input_ids, attention_mask)  # (B, S, C), once
    writer = _Writer(model, settings, B, input_ids.device)
    tokens = torch.full((B, 1), model.config.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
    past = None
    for _ in range(settings.max_new_tokens):
        step_input = tokens[:, -1:] if settings.use_cache else tokens  # (B, 1), or the whole (B, t)
        out = model(attention_mask=attention_mask, decoder_input_ids=step_input, encoder_hidden_states=memory,
                    past_key_values=past, use_cache=settings.use_cache)
        past = out.past_key_values
        tokens = torch.cat([tokens, writer.next(out.logits[:, -1])], dim=1)  # (B, t) -> (B, t + 1)
        if writer.done():
            break
    return tokens


def generate(model, input_ids: torch.Tensor, settings: GenerationConfig | None = None,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """GPT: the prompt and its continuation. T5: the decoder's output for the input (attention_mask: its padding).
    The model is run in eval mode (no dropout) and left in the mode it was in."""
    settings = settings or GenerationConfig()
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, T5ForConditionalGeneration):
            return generate_seq2seq(model, input_ids, settings, attention_mask)
        if isinstance(model, GPT2LMHeadModel):
            if attention_mask is not None and not bool(attention_mask.all()):
                raise InputError("GPT generation takes unpadded prompts of one length; generate them one at a time")
            return generate_causal(model, input_ids, settings)
        raise InputError(f"generate runs GPT2LMHeadModel or T5ForConditionalGeneration, not {type(model).__name__}")
    finally:
        model.train(was_training)


def answer_spans(output_ids: Sequence[int], sentinel_ids: Sequence[int], eos_token_id: int | None = None
                 ) -> dict[int, list[int]]:
    """T5's answer as {sentinel: the tokens that follow it, up to the next sentinel or eos}."""
    sentinels = set(sentinel_ids)
    spans: dict[int, list[int]] = {}
    current = None
    for token in output_ids:
        if token == eos_token_id:
            break
        if token in sentinels:
            current = token
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    return spans


def fill_spans(input_ids: Sequence[int], output_ids: Sequence[int], sentinel_ids: Sequence[int],
               eos_token_id: int | None = None, keep_unfilled: bool = False) -> list[int]:
    """Put T5's answer back into its question: each sentinel in the input is replaced by the tokens that follow the
    same sentinel in the output, up to the next sentinel (or eos). A sentinel the output leaves unfilled is dropped
    (kept, with `keep_unfilled`, to show the gap).

    input  "The <s0> walks in <s1> park",  output "<s0> cute dog <s1> the <s2>"  ->  "The cute dog walks in the park"
    """
    sentinels = set(sentinel_ids)
    spans = answer_spans(output_ids, sentinels, eos_token_id)
    filled: list[int] = []
    for token in input_ids:
        unfilled = [token] if keep_unfilled else []
        filled.extend(spans.get(token, unfilled) if token in sentinels else [token])
    return filled
