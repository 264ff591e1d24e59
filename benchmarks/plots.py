"""PNG figures from the results: throughput against sequence length, peak memory, and speed-up over hf-sdpa."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .variants import BASELINE  # noqa: E402


def _grouped(cases: list[dict], key) -> dict:
    groups: dict = {}
    for case in cases:
        if "results" in case:
            groups.setdefault(key(case), []).append(case)
    return groups


def _label(case: dict) -> str:
    return f"{case['size']} T{case['seq_len']} {case['precision']}"


def throughput_by_seq_len(results: dict, path: Path) -> Path | None:
    """Real tokens/s against sequence length, one panel per (workload, size, precision) of the sweep."""
    groups = _grouped([c for c in results["cases"] if c["group"] == "sweep"],
                      lambda c: (c["workload"], c["size"], c["precision"]))
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, ((workload, size, precision), cases) in zip(axes[0], groups.items()):
        cases = sorted(cases, key=lambda c: c["seq_len"])
        for name in cases[0]["results"]:
            xs = [c["seq_len"] for c in cases if name in c["results"]]
            ys = [c["results"][name]["real_tokens_per_s"] for c in cases if name in c["results"]]
            ax.plot(xs, ys, marker="o", label=name, linestyle="--" if name.startswith("hf-") else "-")
        ax.set_xscale("log", base=2)
        ax.set_xticks([c["seq_len"] for c in cases], [str(c["seq_len"]) for c in cases])
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("real tokens / s")
        ax.set_title(f"{workload}, {size}, {precision}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Throughput by sequence length ({results['environment']['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(results: dict, path: Path, metric: str, ylabel: str, title: str, baseline_line: bool = False) -> Path | None:
    groups = _grouped([c for c in results["cases"] if c["group"] in ("main", "compile", "unpad")],
                      lambda c: c["workload"])
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 3.6 * len(groups)), squeeze=False)
    for ax, (workload, cases) in zip(axes[:, 0], groups.items()):
        names = list(dict.fromkeys(n for c in cases for n in c["results"]))
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            xs = [i + j * width for i, c in enumerate(cases) if name in c["results"]]
            ys = [c["results"][name][metric] for c in cases if name in c["results"]]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))],
                      [_label(c) + ("" if c["group"] == "main" else f" {c['group']}") for c in cases], fontsize=8)
        if baseline_line:
            ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{workload}: {cases[0]['description']}")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom for the legend
        ax.legend(fontsize=7, ncol=min(len(names), 5), loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(results: dict, out: Path) -> list[Path]:
    """Every figure the results allow; returns the files written."""
    device = results["environment"]["device"]
    written = [
        throughput_by_seq_len(results, out / "throughput_by_seq_len.png"),
        _bars(results, out / "memory.png", "peak_memory_mib", "peak MiB above start",
              f"Peak memory of one run ({device})"),
        _bars(results, out / "speedup.png", "speedup_vs_baseline", f"× {BASELINE} (tokens/s)",
              f"Speed relative to transformers sdpa on the same batches ({device})", baseline_line=True),
    ]
    return [p for p in written if p is not None]
