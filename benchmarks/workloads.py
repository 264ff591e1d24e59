"""The workloads: what one timed run does, and which outputs the correctness gate compares.

    infer_fixed  inference (BertModel) on packed full-length batches: no padding
    infer_var    inference (BertModel) on random review batches padded to their longest row
    ner_infer    token classification inference (BertForTokenClassification, 9 labels) on random People's Daily
                 lines (the named-entity task's validation text) padded to their longest row
    mlm_train    one MLM training step per batch: forward, backward, AdamW step; packed full blocks, 15% masked
    cls_train    one classification fine-tuning step per batch on random padded review batches
    gpt_train    one GPT-2 training step per batch: the next-token loss at every position of packed full blocks
    t5_train     one T5 training step per batch: packed blocks span-corrupted (`train.span`), the encoder reading the
                 block with its spans dropped (padded to the longest row), the decoder writing the spans

A timed run goes once through the case's batches (one batch for packed blocks, several for review batches, so
that one run sees several padding patterns). Training runs in train mode (dropout on, as in real training);
the gate runs the same forward (and backward) in eval mode, the only mode in which two implementations can
agree exactly, since dropout draws different random masks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .data import IGNORE_INDEX, Batch
from .variants import BuiltModel

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Workload:
    name: str
    model_kind: str  # a key of variants.MODEL_KINDS
    training: bool
    packed: bool  # full blocks (True) or padded review batches (False)
    description: str


WORKLOADS = {
    w.name: w
    for w in (
        Workload("infer_fixed", "encoder", False, True, "inference, fixed-length packed batches"),
        Workload("infer_var", "encoder", False, False, "inference, variable-length review batches (padded)"),
        Workload("mlm_train", "mlm", True, True, "MLM training step (fwd+bwd+AdamW), packed blocks, 15% masked"),
        Workload("cls_train", "classifier", True, False, "classification fine-tuning step, padded review batches"),
        Workload("ner_infer", "tagger", False, False,
                 "token classification inference, 9 labels, People's Daily lines (padded)"),
        Workload("gpt_train", "gpt", True, True, "GPT-2 training step (fwd+bwd+AdamW), next token, packed blocks"),
        Workload("t5_train", "t5", True, True,
                 "T5 training step (fwd+bwd+AdamW), span corruption (15%, spans of 3) of packed blocks"),
    )
}


def precision_context(device: torch.device, precision: str):
    """bf16: autocast to bfloat16 on `device` (weights stay fp32, as in mixed-precision training); fp32: nothing."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")


def make_optimizer(built: BuiltModel) -> torch.optim.Optimizer:
    """AdamW as BERT fine-tuning uses it; the same settings for every variant: the fused kernel on CUDA (as
    train.pretrain and transformers' Trainer use there), the default elsewhere."""
    on_cuda = next(built.module.parameters()).is_cuda
    return torch.optim.AdamW(built.module.parameters(), lr=1e-5, weight_decay=0.01, fused=on_cuda or None)


def run_inference(built: BuiltModel, batches: list[Batch], device: torch.device, precision: str) -> None:
    """One forward pass per batch, without autograd."""
    built.module.eval()
    with torch.inference_mode(), precision_context(device, precision):
        for batch in batches:
            built.call(**batch.inputs(with_labels=False))


def run_training(
    built: BuiltModel, optimizer: torch.optim.Optimizer, batches: list[Batch], device: torch.device, precision: str
) -> None:
    """One training step per batch: forward (under autocast for bf16), backward, AdamW step."""
    built.module.train()
    for batch in batches:
        with precision_context(device, precision):
            loss = built.call(**batch.inputs(with_labels=True)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def gradient_names(model_kind: str, num_layers: int) -> list[str]:
    """The parameters whose gradients the gate compares: the embeddings, the first and last block, the head
    (GPT-2 and T5: the tied embedding is the head; T5 also the relative-position table and cross-attention)."""
    last = num_layers - 1
    if model_kind == "gpt":
        return ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
                f"transformer.h.{last}.mlp.c_proj.weight", "transformer.ln_f.weight"]
    if model_kind == "t5":
        return ["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                f"decoder.block.{last}.layer.1.EncDecAttention.k.weight",
                f"decoder.block.{last}.layer.2.DenseReluDense.wo.weight"]
    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        f"bert.encoder.layer.{num_layers - 1}.output.dense.weight",
    ]
    if model_kind == "mlm":
        names.append("cls.predictions.transform.dense.weight")
    elif model_kind == "classifier":
        names += ["bert.pooler.dense.weight", "classifier.weight"]
    return names


def logits_without_loss(built: BuiltModel, workload: Workload, batch: Batch, device: torch.device,
                        precision: str) -> torch.Tensor:
    """The logits of a model whose loss never formed them (GPT-2's and T5's chunked loss): the same model asked
    without labels (T5: with the decoder input the labels would give), so the gate still compares them."""
    inputs = batch.inputs(with_labels=False)
    if workload.model_kind == "t5":
        from minibert.t5 import shift_right

        config = built.module.config
        inputs["decoder_input_ids"] = shift_right(batch.labels, config.decoder_start_token_id, config.pad_token_id)
    with torch.no_grad(), precision_context(device, precision):
        return built.call(**inputs).logits


def gate_outputs(
    built: BuiltModel, workload: Workload, batch: Batch, device: torch.device, precision: str, num_layers: int
) -> dict[str, torch.Tensor]:
    """The quantities the gate compares, as fp32 tensors, computed in eval mode (no dropout).

    encoder: the last hidden state at real tokens (padding positions are undefined and differ with unpadding) and
    the pooled output. tagger: the logits at real tokens (zeros at the pads when unpadded). mlm: the loss, the logits
    at labelled positions, named gradients. classifier: the loss, the logits, named gradients. gpt: the loss, the
    logits, named gradients. t5: the loss, the logits at the target's labelled positions, named gradients.
    """
    model = built.module
    model.eval()
    if not workload.training:
        with torch.inference_mode(), precision_context(device, precision):
            out = built.call(**batch.inputs(with_labels=False))
        real = batch.attention_mask.bool()
        if workload.model_kind == "tagger":
            return {"logits[real]": out.logits[real].float()}
        return {"last_hidden_state[real]": out.last_hidden_state[real].float(), "pooler_output": out.pooler_output.float()}
    model.zero_grad(set_to_none=True)
    with precision_context(device, precision):
        out = built.call(**batch.inputs(with_labels=True))
    out.loss.backward()
    logits = out.logits if out.logits is not None else logits_without_loss(built, workload, batch, device, precision)
    if workload.model_kind in ("mlm", "t5") and logits.dim() == 3:  # (B, T, V) -> (M, V) at labelled positions
        logits = logits[batch.labels != IGNORE_INDEX]
    result = {"loss": out.loss.detach().float().reshape(1), "logits": logits.detach().float()}
    params = dict(model.named_parameters())
    for name in gradient_names(workload.model_kind, num_layers):
        if name not in params or params[name].grad is None:
            raise RuntimeError(f"{built.variant.name}: no gradient for parameter {name}")
        result[f"grad {name}"] = params[name].grad.detach().float().clone()
    model.zero_grad(set_to_none=True)
    return result
