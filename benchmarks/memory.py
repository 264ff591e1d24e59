"""Peak memory of one run, above what was allocated just before it.

CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus `memory_allocated` before: the
tensors the run created at its high point (activations, gradients, optimizer temporaries, workspace), exactly,
as the caching allocator counts them. Weights and optimizer state that exist before the run are not included.

CPU: the growth of the process's resident set. Linux lets a process reset its peak (VmHWM) by writing "5" to
/proc/self/clear_refs; the figure is VmHWM after the run minus VmRSS before it, after returning freed heap memory
to the system (`malloc_trim`). It counts every page touched, including allocator slack and memory the run reused
from earlier runs, so it is an estimate, good to tens of percent; it never includes memory that was resident
before. Without a resettable peak (not Linux), `ru_maxrss` growth is used: 0 unless the run sets a new lifetime peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .device import synchronize

CLEAR_REFS = "/proc/self/clear_refs"
STATUS = "/proc/self/status"


@dataclass
class MemoryReading:
    peak_bytes: int  # growth above the state before the run
    method: str


def _status_kib(field: str) -> int | None:
    try:
        with open(STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        with open(CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak(fn: Callable[[], None], device: torch.device) -> MemoryReading:
    """Run `fn` once and return its peak memory above the state before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return MemoryReading(torch.cuda.max_memory_allocated(device) - before, "torch.cuda.max_memory_allocated growth")
    _malloc_trim()
    if _reset_peak_rss() and (before := _status_kib("VmRSS")) is not None:
        fn()
        peak = _status_kib("VmHWM") or before
        return MemoryReading(max(0, peak - before) * 1024, "VmHWM - VmRSS before (clear_refs reset)")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return MemoryReading(max(0, after - before) * 1024, "ru_maxrss growth (lifetime peak)")
