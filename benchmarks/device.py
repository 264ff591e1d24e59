"""Which device the suite runs on, how to wait for it, and a description of the hardware and software."""

from __future__ import annotations

import os
import platform
import sys

import torch


def resolve_device(choice: str) -> torch.device:
    """"auto": CUDA when a GPU is present, else the CPU; "cuda" without a GPU is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA GPU is visible to torch")
    if choice not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {choice!r}; choose auto, cpu or cuda")
    return torch.device(choice)


def synchronize(device: torch.device) -> None:
    """Wait until all queued work on `device` has finished (a no-op on the CPU, whose ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> dict:
    """Versions, hardware names and thread counts, for results.json."""
    import numpy
    import transformers

    info = {
        "device": device.type,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    if hasattr(os, "getloadavg"):  # other work on the machine slows every variant and blurs the ratios
        info["load_average_1m_at_start"] = round(os.getloadavg()[0], 2)
    try:
        import tokenizers

        info["tokenizers"] = tokenizers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return info
