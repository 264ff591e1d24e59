"""Model FLOPs, the device's measured matmul peak, and model FLOPs utilisation (MFU).

Model FLOPs count the arithmetic the model needs on the *real* tokens, whatever an implementation actually
computes (padding, or a vocabulary projection at unlabelled positions, is extra work and earns no credit):

    N = L (4 C^2 + 2 C I)        weights of the encoder's matmuls (Q, K, V, output; two feed-forward layers);
                                 embeddings, pooler and task heads are not counted
    per row of n real tokens, each token attends to n keys:
        inference:  2 N n + 4 L H Q n^2      (Q K^T and P V: 2 n Q multiply-adds per head and token, x2 FLOPs)
        training:   6 N n + 12 L H Q n^2     (backward costs twice the forward)

For a full block of T tokens this is 6N + 12 L H Q T FLOPs per token for training (and 2N + 4 L H Q T for
inference), with H heads of size Q (H Q = C). GPT-2 is counted alike (its causal attention as if every key were
read, the usual convention), with its LM head left out as BERT's heads are. T5, per row of S encoder and U target
tokens, with H Q = A (T5's d_kv need not be C / H):

    inference:  2 N_e S + 4 L_e A S^2                                 the encoder, N_e = L_e (4 C A + 2 C I)
              + 2 N_d U + 4 L_d C A S + 4 L_d A (U^2 + U S)            the decoder, N_d = L_d (6 C A + 2 C I)
    training:   3 x inference

N_d holds each decoder block's self-attention Q K V O, cross-attention Q O and feed-forward; cross-attention's K and
V are computed on the S encoder tokens (4 L_d C A S), and its scores are U x S.

MFU = model FLOPs / time / peak, where the peak is measured in the same run by a large matmul in bf16 (on CUDA; the
figure the utilisation is quoted against) or fp32 (on the CPU, where it is the attainable matmul throughput of the
threads the run uses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from minibert import BertConfig, GPT2Config, T5Config


def matmul_params(config: BertConfig) -> int:
    """N: the weights of the encoder's matrix multiplications."""
    C, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return L * (4 * C * C + 2 * C * I)


def model_flops(config: BertConfig, row_lengths: Iterable[int], training: bool) -> float:
    """Model FLOPs of one pass over a batch whose rows hold `row_lengths` real tokens."""
    N = matmul_params(config)
    L, H, Q = config.num_hidden_layers, config.num_attention_heads, config.head_size
    lengths = list(row_lengths)
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    if training:
        return 6.0 * N * tokens + 12.0 * L * H * Q * squares
    return 2.0 * N * tokens + 4.0 * L * H * Q * squares


def t5_flops(config: T5Config, encoder_lengths: Iterable[int], target_lengths: Iterable[int], training: bool) -> float:
    """Model FLOPs of one T5 pass over rows of S encoder and U target tokens (the formulas above)."""
    C, A, I = config.d_model, config.num_heads * config.d_kv, config.d_ff
    Le, Ld = config.num_layers, config.num_decoder_layers
    forward = 0.0
    for S, U in zip(encoder_lengths, target_lengths, strict=True):
        encoder = Le * (4 * C * A + 2 * C * I) * S + 2 * Le * A * S * S  # multiply-adds
        decoder = Ld * (6 * C * A + 2 * C * I) * U + Ld * 2 * C * A * S + 2 * Ld * A * (U * U + U * S)
        forward += 2.0 * (encoder + decoder)
    return 3.0 * forward if training else forward


def batch_flops(config, batch, training: bool) -> float:
    """Model FLOPs of one pass over a `benchmarks.data.Batch`, for a BertConfig, GPT2Config or T5Config."""
    if isinstance(config, T5Config):
        targets = (batch.labels != -100).sum(dim=1).tolist()
        return t5_flops(config, batch.row_lengths, targets, training)
    if isinstance(config, GPT2Config):
        config = BertConfig(hidden_size=config.n_embd, num_hidden_layers=config.n_layer,
                            num_attention_heads=config.n_head, intermediate_size=config.inner_size)
    return model_flops(config, batch.row_lengths, training)


def flops_per_token(config: BertConfig, seq_len: int, training: bool) -> float:
    """The per-token formula for a full block of `seq_len` tokens: 6N + 12LHQT (training) or 2N + 4LHQT."""
    return model_flops(config, [seq_len], training) / seq_len


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak."""
    if seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError("mfu needs positive seconds and peak")
    return flops / seconds / peak_flops_per_s


def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype, size: int, iters: int, timer: Callable[[Callable[[], None]], float]
) -> float:
    """FLOP/s of `iters` square (size x size) matmuls in `dtype`: the best of three timed batches, after a warm-up."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def work() -> None:
        for _ in range(iters):
            torch.mm(a, b, out=out)

    work()
    best = min(timer(work) for _ in range(3))
    return 2.0 * size**3 * iters / best
