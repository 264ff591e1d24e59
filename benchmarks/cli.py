"""The command line: `python -m benchmarks [options]`.

Where results go: `--out DIR`, by default a new directory `runs/bench-YYYYmmdd-HHMMSS` under the working directory
(never the installed package: the committed results in benchmarks/results/ are rewritten only when named, e.g.
`--out benchmarks/results/cpu`). The directory is claimed through `minibert.rundir` as a benchmark run: a new or
empty directory, or an earlier benchmark run's (whose files are replaced), never one holding anything else, so a
user's own results.md is never overwritten. Every option is checked, and the directory too, before anything is
measured: a bad one is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from minibert.config import PRESETS
from minibert.errors import InputError
from minibert.rundir import OutState, RunKind, check_usable, claim, inspect_out
from tokenizer.command import build_parser as build_options_parser
from tokenizer.command import command_main, opt, parse_options

from .data import SPECIAL_TOKENS
from .grid import GROUPS
from .workloads import PRECISIONS, WORKLOADS

RUNS_DIR = "runs"  # the default --out goes here, under the working directory, as the training commands' runs
BENCH_RUN = RunKind("bench", "benchmark run")
# What a benchmark run writes into --out (results.json goes through a temporary file first), and what
# benchmarks/gpu.sh moves in beside it (the logs, the correctness check's own run): the manifest of the run
# directory, so that a later run replaces exactly these and nothing of anyone else's.
FIGURES = ("throughput_by_seq_len.png", "memory.png", "speedup.png")
ENTRIES = ("results.json", "results.json.tmp", "results.md", *FIGURES, "log.txt", "check")


def _csv(kind=str):
    def parse(text: str) -> list:
        items = [s.strip() for s in text.split(",") if s.strip()]
        try:
            return [kind(s) for s in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")

    return parse


DESCRIPTION = (
    "Benchmark minibert against Hugging Face transformers (BERT, GPT-2, T5) on the same weights and inputs. Every "
    "case checks that all variants agree (outputs; for training also loss and gradients) before timing them "
    "alternately, then reports ms per step, real tokens/s, sequences/s, the ratio to transformers with sdpa "
    "attention, peak memory and model FLOPs utilisation. Writes results.json, results.md and PNG plots."
)


def epilog() -> str:
    return (
        "Workloads: " + "; ".join(f"{w.name}: {w.description}" for w in WORKLOADS.values()) + ". "
        "Variants: hf-eager, hf-sdpa (transformers, the baseline), mb-math, mb-sdpa (minibert), with the "
        "minibert switches +unpad (or +unpad=rows|repad|nested, how attention meets the variable lengths), "
        "+sparse, +fusedqkv and +compile (e.g. mb-sdpa+sparse+compile); GPT-2 and T5 take +compile alone. "
        "Exit status: 0 done, 1 the correctness check failed (nothing further is timed), 2 bad options (one "
        "line on stderr, nothing measured), 130 / 143 stopped by SIGINT / SIGTERM (what was measured is kept "
        "in results.json; --report-only writes its report)."
    )


@dataclass
class BenchOptions:
    """The options of `python -m benchmarks`."""

    device: str = opt("auto", "where models run; auto picks CUDA when a GPU is visible, else the CPU",
                      choices=("auto", "cpu", "cuda"))
    quick: bool = opt(False, "smoke run of a few seconds: tiny model, 32 tokens, every workload and variant, 2 "
                      "timed runs", action="store_true")
    grid: str = opt("auto", "which set of cases: auto is the CUDA grid on a GPU and the reduced CPU grid otherwise; "
                    "--quick means --grid quick", choices=("auto", "quick", "cpu", "cuda"))
    out: Path | None = opt(None, "output directory for results.json, results.md and the plots: a new or empty "
                           "directory, or an earlier benchmark run's, whose files are replaced; none: a new "
                           f"{RUNS_DIR}/bench-YYYYmmdd-HHMMSS under the working directory. The committed results "
                           "are rewritten only when named: --out benchmarks/results/cpu")
    workloads: list[str] = opt((), f"only these workloads, comma-separated, from {','.join(WORKLOADS)}",
                               type=_csv(), metavar="LIST")
    sizes: list[str] = opt((), "only these presets: tiny,small,base", type=_csv(), metavar="LIST")
    seq_lens: list[int] = opt((), "only cases at these sequence lengths (block length, or longest review), e.g. "
                              "128,512", type=_csv(int), metavar="LIST")
    precisions: list[str] = opt((), f"only these precisions, from {','.join(PRECISIONS)} (bf16 = autocast to "
                                "bfloat16)", type=_csv(), metavar="LIST")
    variants: list[str] = opt((), "only these variants (the baseline hf-sdpa is always kept)", type=_csv(),
                              metavar="LIST")
    groups: list[str] = opt((), f"only these case groups, from {','.join(GROUPS)} (sweep: the sequence-length "
                            "sweep; unpad: the unpadded-attention comparison)", type=_csv(), metavar="LIST")
    compile: bool | None = opt(None, "--compile: include the torch.compile variants: the CUDA grid's compile group "
                               "(the default on a GPU), or with --quick a tiny compile group that checks "
                               "torch.compile works on any device; the CPU grid has none. --no-compile: leave out "
                               "every torch.compile variant. none: the grid's own choice")
    warmup: int | None = opt(None, "untimed runs per variant before timing; none: the grid's")
    repeats: int | None = opt(None, "timed runs per variant; none: the grid's")
    threads: int | None = opt(None, "torch intra-op threads, also given to both tokenizers; none: torch's own "
                              "choice. Applies to every variant alike")
    seed: int = opt(0, "seed of the weights, the review split and the batches")
    vocab_size: int = opt(21128, "model vocabulary size (the default is Chinese BERT's)")
    time_budget: float | None = opt(None, "stop starting new cases after this many seconds; the rest are listed as "
                                    "skipped", metavar="SECONDS")
    check_only: bool = opt(False, "run only the correctness check of every case, no timing (a fast pre-flight)",
                           action="store_true")
    tokenizers: bool = opt(True, "skip the tokenizer throughput comparison", flags=["--no-tokenizers"],
                           action="store_false")
    plots: bool = opt(True, "write no PNG figures", flags=["--no-plots"], action="store_false")
    report_only: bool = opt(False, "measure nothing: rewrite results.md and the plots from the results.json in --out "
                            "(e.g. after a run was cut short)", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The parser generated from `BenchOptions` (`tokenizer.command.build_parser`)."""
    return build_options_parser(BenchOptions, DESCRIPTION, "python -m benchmarks", epilog())


def write_outputs(results: dict, out: Path, plots: bool) -> list[Path]:
    """results.json (with the targets evaluated), results.md and, unless `plots` is False, the PNG figures."""
    from .plots import write_plots
    from .report import evaluate_targets, write_json, write_markdown

    results["targets"] = evaluate_targets(results)
    written = [write_json(results, out), write_markdown(results, out)]
    if plots and any("results" in c for c in results["cases"]):
        written += write_plots(results, out)
    return written


def _one_of(option: str, given: list, valid) -> None:
    unknown = [v for v in given if v not in valid]
    if unknown:
        raise InputError(f"{option} {','.join(map(str, unknown))}: not one of {', '.join(map(str, valid))}")


def check_options(args: BenchOptions) -> None:
    """Every option's range and every filter's names, before anything is imported or measured; InputError names
    the option and the valid choices."""
    from .variants import parse_variant

    _one_of("--workloads", args.workloads, WORKLOADS)
    _one_of("--sizes", args.sizes, PRESETS)
    _one_of("--precisions", args.precisions, PRECISIONS)
    _one_of("--groups", args.groups, GROUPS)
    for name in args.variants:
        try:
            parse_variant(name)
        except ValueError as err:
            raise InputError(f"--variants: {err}") from None
    bad = [n for n in args.seq_lens if n < 1]
    if bad:
        raise InputError(f"--seq-lens {','.join(map(str, bad))}: a sequence length is a number of tokens, at least 1")
    checks = [
        (args.warmup is None or args.warmup >= 0, "--warmup must be 0 or more"),
        (args.repeats is None or args.repeats >= 1, "--repeats must be at least 1 (timed runs per variant)"),
        (args.threads is None or args.threads >= 1, "--threads must be at least 1 (leave it out for torch's choice)"),
        (0 <= args.seed < 2**32, "--seed must be between 0 and 2**32 - 1"),
        (args.vocab_size > len(SPECIAL_TOKENS),
         f"--vocab-size must exceed the {len(SPECIAL_TOKENS)} special tokens (default: 21128, Chinese BERT's)"),
        (args.time_budget is None or math.isfinite(args.time_budget), "--time-budget must be a finite number"),
        (args.time_budget is None or args.time_budget > 0, "--time-budget must be a positive number of seconds"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def check_selection(args: BenchOptions, grid_name: str, device_type: str) -> None:
    """InputError when a filter names something the chosen grid does not have, or the filters leave no case."""
    from .grid import filter_cases, select_grid

    grid = select_grid(grid_name, device_type, args.compile)
    compile_on = any(c.group == "compile" for c in grid.cases)
    where = f"the {grid.name} grid"
    filters = (("--workloads", args.workloads, "workload"), ("--sizes", args.sizes, "size"),
               ("--seq-lens", args.seq_lens, "seq_len"), ("--precisions", args.precisions, "precision"),
               ("--groups", args.groups, "group"))
    for option, given, attr in filters:
        have = sorted({getattr(c, attr) for c in grid.cases})
        missing = [v for v in given if v not in have]
        if missing:
            raise InputError(f"{option} {','.join(map(str, missing))}: {where} has no such case; it has "
                             f"{', '.join(map(str, have))} (--grid chooses another grid)")
    variants = sorted({v for c in grid.cases for v in c.variants})
    missing = [v for v in args.variants if v not in variants]
    if missing:
        raise InputError(f"--variants {','.join(missing)}: {where} has no such variant; it has {', '.join(variants)}")
    cases = filter_cases(grid.cases, args.workloads, args.sizes, args.seq_lens, args.precisions, args.variants,
                         args.groups, compile=compile_on)
    if not cases:
        raise InputError(f"no case of {where} matches all of the filters given (--workloads, --sizes, --seq-lens, "
                         "--precisions, --variants, --groups) together; loosen one of them")


def default_out() -> Path:
    return Path(RUNS_DIR) / f"bench-{datetime.now():%Y%m%d-%H%M%S}"


def report_only(args: BenchOptions) -> int:
    """Rewrite results.md and the plots from the results.json of an earlier run in --out."""
    if args.out is None:
        raise InputError("--report-only rewrites the report of an earlier run: give its directory with --out")
    out = inspect_out(args.out, BENCH_RUN)
    if out.state is not OutState.RUN or not (args.out / "results.json").is_file():
        why = out.why if out.state is OutState.FOREIGN else f"{out.state.value}, or holds no results.json"
        raise InputError(f"--report-only: --out {args.out} {why}; give the directory of an earlier benchmark run")
    with claim(out, BENCH_RUN, ENTRIES, clear=False):
        results = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
        written = write_outputs(results, args.out, args.plots)
    print("benchmarks: wrote " + ", ".join(str(p) for p in written))
    return 0


@command_main
def main(argv: list[str] | None = None) -> int:
    args, _ = parse_options(BenchOptions, argv, DESCRIPTION, "python -m benchmarks", epilog())
    check_options(args)
    if args.report_only:
        return report_only(args)
    out = inspect_out(args.out or default_out(), BENCH_RUN)
    check_usable(out)
    if args.threads:
        # The tokenizers library reads this once, when its thread pool starts: set it before anything imports it.
        os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    from .device import resolve_device
    from .gate import CorrectnessError
    from .runner import Settings, run

    # torch's CPU path for the nested-tensor variants converts to its older layout and warns once; it is expected
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")
    grid = "quick" if args.quick else args.grid
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as err:
        raise InputError(str(err)) from None
    check_selection(args, grid, device.type)
    settings = Settings(
        device=args.device, grid=grid, out=out.path, seed=args.seed, vocab_size=args.vocab_size,
        threads=args.threads, warmup=args.warmup, repeats=args.repeats, compile=args.compile,
        time_budget=args.time_budget, check_only=args.check_only, tokenizers=args.tokenizers,
        workloads=args.workloads, sizes=args.sizes, seq_lens=args.seq_lens, precisions=args.precisions,
        variants=args.variants, groups=args.groups,
    )
    run_dir = claim(out, BENCH_RUN, ENTRIES)
    try:
        results = run(settings)
        written = write_outputs(results, out.path, args.plots and not args.check_only)
    except CorrectnessError as err:  # results.json says which check failed: kept
        run_dir.close()
        print(f"benchmarks: correctness check failed, run stopped:\n{err}", file=sys.stderr)
        return 1
    except BaseException:
        # A run stopped (or failed) before its first case was written leaves nothing; one that measured
        # something keeps its results.json (rewritten after every case), and --report-only can finish it.
        if (out.path / "results.json").is_file():
            run_dir.close()
        else:
            run_dir.release()
        raise
    run_dir.close()
    print(f"benchmarks: {results['status']} in {results['elapsed_s']:.0f} s; wrote " + ", ".join(str(p) for p in written))
    for t in results["targets"]:
        print(f"  target {t['target']} [{t['case']}]: {t['variant']} x{t['ratio']:.2f} (goal {t['goal']}) "
              f"{'met' if t['met'] else 'NOT met'}")
    return 0
