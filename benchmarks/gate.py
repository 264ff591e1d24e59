"""The correctness gate: before anything is timed, every variant must reproduce the baseline's outputs.

Each compared quantity (outputs; for training also the loss and named gradients) is scored by its relative error

    rel = ||variant - baseline|| / ||baseline||      (Frobenius norms, in fp32)

and must stay within the tolerance of the precision: fp32 differences come only from the order of floating-point
sums (minibert matches transformers to ~1e-7 per op); bf16 autocast rounds every matmul input to 8 bits of
mantissa, so two correct implementations that sum in a different order differ by about 1e-2.
A variant over the tolerance raises `CorrectnessError`, which stops the whole run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .data import Batch
from .variants import BuiltModel
from .workloads import Workload, gate_outputs

TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}


class CorrectnessError(RuntimeError):
    """Two variants of one comparison disagree beyond the tolerance; `checks` holds every comparison made."""

    def __init__(self, message: str, checks: list["Check"]):
        super().__init__(message)
        self.checks = checks


@dataclass
class Check:
    case: str
    variant: str
    quantity: str
    rel_err: float
    max_abs_diff: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(relative error of `a` against `b`, largest absolute difference)."""
    if a.shape != b.shape:
        return float("inf"), float("inf")
    diff = (a - b).float()
    scale = b.float().norm().item()
    rel = diff.norm().item() / scale if scale > 0 else diff.norm().item()
    return rel, diff.abs().max().item() if diff.numel() else 0.0


def check_case(
    case_id: str,
    models: dict[str, BuiltModel],
    baseline: str,
    workload: Workload,
    batch: Batch,
    device: torch.device,
    precision: str,
    num_layers: int,
) -> list[Check]:
    """Compare every variant with `baseline` on `batch`; raise CorrectnessError naming each failure."""
    tolerance = TOLERANCE[precision]
    reference = gate_outputs(models[baseline], workload, batch, device, precision, num_layers)
    checks: list[Check] = []
    for name, built in models.items():
        if name == baseline:
            continue
        outputs = gate_outputs(built, workload, batch, device, precision, num_layers)
        for quantity, expected in reference.items():
            rel, max_abs = compare(outputs[quantity], expected)
            ok = rel <= tolerance  # NaN fails
            checks.append(Check(case_id, name, quantity, rel, max_abs, tolerance, ok))
    failures = [c for c in checks if not c.passed]
    if failures:
        lines = [
            f"  {c.variant} vs {baseline}: {c.quantity}: relative error {c.rel_err:.3g} > {c.tolerance:g} "
            f"(max abs diff {c.max_abs_diff:.3g})"
            for c in failures
        ]
        raise CorrectnessError(
            f"case {case_id}: outputs differ, nothing was timed\n" + "\n".join(lines), checks
        )
    return checks
