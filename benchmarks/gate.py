"""The correctness gate: before anything is timed, every variant must reproduce the baseline's outputs.

Each compared quantity (outputs; for training also the loss and named gradients) is scored by its relative error

    rel(a, b) = ||a - b|| / ||b||      (Frobenius norms, in fp32)

fp32: every variant against the baseline (hf-sdpa) in fp32, at most 1e-4. The only legitimate differences are
the order of floating-point sums (minibert matches transformers to ~1e-7 per op).

bf16 autocast rounds every matmul input to 8 bits of mantissa, so two correct implementations that merely sum in
a different order can differ by several percent in a small gradient, and a fixed tolerance is either too loose
or too tight. The yardstick is the baseline's own rounding error instead: the reference is the baseline in fp32,
and each variant's bf16 error against it may be at most 3 x the baseline's bf16 error (or 5e-2, whichever is
larger). The factor leaves room for attention that legitimately rounds more than the baseline's: an eager/math
path stores scores and probabilities in bf16 where a fused kernel keeps them in fp32. This check catches faults
specific to low precision (overflow, NaN, a step left outside autocast) and gross errors; the exact check of the
same code is the fp32 one, which every grid with bf16 cases also runs.

A variant over its tolerance raises `CorrectnessError`, which stops the whole run. A variant that cannot run at all
in a case (an error, not a wrong number: say a kernel this device or precision lacks) is left out of that case and
named with its error in `unavailable`, so one missing kernel does not cost the rest of a GPU run; the baseline
failing still stops it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .data import Batch
from .variants import BuiltModel
from .workloads import Workload, gate_outputs

FP32_TOLERANCE = 1e-4
LOW_PRECISION_FLOOR = 5e-2  # bf16: always accept this much relative error
LOW_PRECISION_FACTOR = 3.0  # bf16: or this multiple of the baseline's own error


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
    rel_err: float  # against the reference
    max_abs_diff: float
    tolerance: float
    passed: bool
    reference: str  # what rel_err is measured against
    baseline_rel_err: float | None = None  # bf16: the baseline's own error against the same reference

    def to_dict(self) -> dict:
        return asdict(self)


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(relative error of `a` against `b`, largest absolute difference); infinite if the shapes differ."""
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
    unavailable: dict[str, str] | None = None,
) -> list[Check]:
    """Compare every variant with `baseline` on `batch`; raise CorrectnessError naming each failure.

    With `unavailable` (a dict), a variant whose run raises is recorded there (name -> error) instead of stopping
    the run; the caller leaves it out of the case."""
    truth = gate_outputs(models[baseline], workload, batch, device, "fp32", num_layers)
    reference_name = f"{baseline} fp32"
    if precision == "fp32":
        tolerances = {q: (FP32_TOLERANCE, None) for q in truth}
    else:
        own = gate_outputs(models[baseline], workload, batch, device, precision, num_layers)
        base_err = {q: compare(own[q], truth[q])[0] for q in truth}
        tolerances = {q: (max(LOW_PRECISION_FLOOR, LOW_PRECISION_FACTOR * e), e) for q, e in base_err.items()}
    checks: list[Check] = []
    for name, built in models.items():
        if name == baseline:
            continue
        try:
            outputs = gate_outputs(built, workload, batch, device, precision, num_layers)
        except Exception as err:  # noqa: BLE001 - any failure to run; a wrong result is judged below
            if unavailable is None:
                raise
            unavailable[name] = f"{type(err).__name__}: {err}"[:600]
            continue
        for quantity, expected in truth.items():
            rel, max_abs = compare(outputs[quantity], expected)
            tol, base = tolerances[quantity]
            ok = rel <= tol  # NaN fails
            checks.append(Check(case_id, name, quantity, rel, max_abs, tol, ok, reference_name, base))
    failures = [c for c in checks if not c.passed]
    if failures:
        lines = [
            f"  {c.variant} vs {c.reference}: {c.quantity}: relative error {c.rel_err:.3g} > tolerance {c.tolerance:.3g} "
            f"(max abs diff {c.max_abs_diff:.3g})"
            for c in failures
        ]
        raise CorrectnessError(f"case {case_id} ({precision}): outputs differ, nothing was timed\n" + "\n".join(lines),
                               checks)
    return checks
