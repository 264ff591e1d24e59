"""GPT's causal language modelling on packed blocks: every token predicts the next one; nothing is masked.

Shapes: B blocks, T tokens per block, V vocabulary size.

    block    [CLS] 今 天 天 气 [SEP] 我 们 ...
    input    [CLS] 今 天 天 气 [SEP] 我 ...         positions 0 .. T-2 read everything up to themselves
    target     今  天 天 气 [SEP] 我 们 ...         positions 1 .. T-1

    L = -(1 / (B (T-1))) Σ_b Σ_{t < T-1} log softmax(logits_{b,t})[x_{b,t+1}]      (`minibert.gpt.next_token_loss`)

Where BERT hides 15% of the tokens and predicts those, GPT predicts every token from the ones before it; the causal
mask in its attention is what stops a position from reading the token it must predict. So every position of a
packed block (which has no padding) is a target except the first: B (T-1) predictions per batch, against about
0.15 B T for MLM. [SEP] is predicted like any token: it is the end of a document, so a trained model learns where a
text ends, and generation stops there (`eos_token_id`). [CLS] starts every block and is GPT's start token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from minibert.errors import InputError
from minibert.gpt import GPT2Config, GPT2LMHeadModel


@dataclass
class CausalLM:
    """Next-token prediction on packed blocks; one loss term, "causal"."""

    vocab_size: int  # the tokenizer's vocabulary, the model's too
    special_ids: torch.Tensor  # kept for the same shape as the other objectives; no token is left out of the loss
    bos_token_id: int  # [CLS], the first token of every block
    eos_token_id: int  # [SEP], the end of a document
    pad_token_id: int  # [PAD]; packed blocks have none
    weights: dict = field(default_factory=lambda: {"causal": 1.0})
    family = "gpt2"  # the model it trains (`train.objectives`)
    order_probe = False  # shuffling a block would shuffle the targets too: no bag-of-words baseline to compare with
    eval_loss_name = "next-token loss"
    eval_accuracy_name = "next-token accuracy"

    @property
    def model_vocab_size(self) -> int:
        """V = the tokenizer's vocabulary: GPT needs no token of its own ([CLS] starts, [SEP] ends a text)."""
        return self.vocab_size

    @classmethod
    def from_tokenizer(cls, tok, **kw) -> "CausalLM":
        special = torch.as_tensor(sorted(tok.special_ids), dtype=torch.long)
        return cls(vocab_size=tok.vocab_size, special_ids=special, bos_token_id=tok.cls_token_id,
                   eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, **kw)

    def config_from(self, preset_fields: dict, vocab_size: int, max_len: int) -> GPT2Config:
        """A GPT-2 of the size of a minibert preset, field for field: n_embd = hidden_size, n_layer =
        num_hidden_layers, n_head = num_attention_heads, n_inner = intermediate_size, n_positions = max_len (the
        block length; generation can go no further). The same weights as BERT's encoder, give or take the
        segment table, pooler and MLM transform that GPT does not have. Dropouts from hidden_dropout_prob
        (embeddings and residual branches) and attention_probs_dropout_prob, 0.1 each by default. The special ids
        are the tokenizer's. Training takes the chunked loss (`chunked_loss`: the same loss within float rounding,
        without the (B, T, V) logits). Other keys of `preset_fields` that are GPT2Config fields (attn_impl,
        initializer_range, n_positions excepted) are taken as they are; the rest (BERT's own) are ignored."""
        C, H = preset_fields["hidden_size"], preset_fields["num_attention_heads"]
        if C % H:
            raise InputError(f"hidden_size ({C}) must be a multiple of num_attention_heads ({H})")
        hidden_dropout = preset_fields.get("hidden_dropout_prob", 0.1)
        own = {f.name for f in dataclasses.fields(GPT2Config)}
        fields = {
            "vocab_size": vocab_size, "n_positions": max_len, "n_embd": C,
            "n_layer": preset_fields["num_hidden_layers"], "n_head": H, "n_inner": preset_fields["intermediate_size"],
            "resid_pdrop": hidden_dropout, "embd_pdrop": hidden_dropout,
            "attn_pdrop": preset_fields.get("attention_probs_dropout_prob", 0.1),
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
            "chunked_loss": True,
        }
        passed = {k: v for k, v in preset_fields.items() if k in own and k not in fields}
        return GPT2Config(**{**fields, **passed})

    def build(self, config: GPT2Config) -> nn.Module:
        return GPT2LMHeadModel(config)

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The block itself is the input and the labels (shifted inside the loss); no random draw, gen untouched."""
        return {"input_ids": blocks.long()}  # (B, T)

    def counts(self, batch: dict) -> dict[str, int]:
        B, T = batch["input_ids"].shape
        return {"causal": B * (T - 1)}

    def losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        return {"causal": model(ids, labels=ids).loss}

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Held-out sums over the B (T-1) next-token predictions: cross-entropy, correct argmax, count."""
        ids = batch["input_ids"]
        logits = model(ids).logits[:, :-1].float()  # (B, T-1, V): positions 0 .. T-2
        target = ids[:, 1:]  # (B, T-1)
        logits, target = logits.reshape(-1, logits.size(-1)), target.reshape(-1)  # (B(T-1), V), (B(T-1),)
        return {"loss": F.cross_entropy(logits, target, reduction="sum"),
                "correct": (logits.argmax(-1) == target).sum(), "count": torch.tensor(target.numel())}
