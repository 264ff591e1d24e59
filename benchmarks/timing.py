"""Timing: warm-up, then the variants alternated over repeated runs (A B A B ...), then median and spread.

Alternating means a slow spell of a shared machine (another process, clock changes) hits every variant alike
rather than whichever happened to run then. On CUDA a run is timed with CUDA events after synchronising; on the CPU
with `time.perf_counter`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .device import synchronize


@dataclass
class Stats:
    """Seconds per run: median, quartiles (IQR = q3 - q1), extremes and every sample."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    samples: list[float]

    @classmethod
    def of(cls, samples: list[float]) -> "Stats":
        if not samples:
            raise ValueError("no timing samples")
        s = sorted(samples)
        if len(s) >= 2:
            q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
        else:
            q1 = q3 = s[0]
        return cls(statistics.median(s), q1, q3, s[0], s[-1], list(samples))

    def scaled(self, factor: float) -> dict:
        """The summary in other units (e.g. ms per step), samples left out."""
        return {k: getattr(self, k) * factor for k in ("median", "q1", "q3", "min", "max")}


def make_timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """A function that runs `fn` once and returns the seconds it took on `device`."""
    if device.type == "cuda":

        def time_cuda(fn: Callable[[], None]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds

        return time_cuda

    def time_cpu(fn: Callable[[], None]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return time_cpu


def alternate(
    fns: dict[str, Callable[[], None]], warmup: int, repeats: int, timer: Callable[[Callable[[], None]], float]
) -> dict[str, Stats]:
    """Run every function `warmup` times untimed, then `repeats` rounds of one timed run each, in the same order."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timer(fn))
    return {name: Stats.of(s) for name, s in samples.items()}
