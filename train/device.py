"""Where a command runs: the device, the ranks of a distributed run, and the mixed-precision context.

Every command takes `--device auto|cpu|cuda|cuda:N` and resolves it here, so a wrong choice gets the same message
everywhere. Pretraining may also run under `torchrun`, whose environment (RANK, WORLD_SIZE, LOCAL_RANK) says which
of several processes this is; each process then drives the GPU of its local rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minibert.errors import InputError


@dataclass(frozen=True)
class Dist:
    """This process's place in a distributed run: rank of world (1 without torchrun), and its rank on this host."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when a GPU is present, else the CPU; cpu, cuda, cuda:N as named. InputError for a device this
    machine does not have, or a name that is none of these."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def setup_distributed(name: str) -> tuple[Dist, torch.device]:
    """The ranks from torchrun's environment (one rank without it) and this rank's device; with several ranks,
    the process group is joined (NCCL on GPUs, gloo on CPUs) and each rank takes the GPU of its local rank."""
    d = Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None and d.world > 1:
        device = torch.device(f"cuda:{d.local_rank}")
    if d.world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return d, device


def autocast(device: torch.device):
    """bfloat16 autocast on CUDA (the matrix products in bf16, reductions and the loss in fp32); a no-op on the
    CPU, where fp32 is as fast at these sizes and exact."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
