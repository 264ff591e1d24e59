"""The command line: `python -m benchmarks [options]`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .grid import GROUPS
from .workloads import PRECISIONS, WORKLOADS

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _csv(kind=str):
    def parse(text: str) -> list:
        items = [s.strip() for s in text.split(",") if s.strip()]
        try:
            return [kind(s) for s in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Benchmark minibert against Hugging Face transformers (BERT, GPT-2, T5) on the same weights and "
            "inputs. Every case "
            "checks that all variants agree (outputs; for training also loss and gradients) before timing them "
            "alternately, then reports ms per step, real tokens/s, sequences/s, the ratio to transformers with "
            "sdpa attention, peak memory and model FLOPs utilisation. Writes results.json, results.md and PNG plots."
        ),
        epilog=(
            "Workloads: " + "; ".join(f"{w.name}: {w.description}" for w in WORKLOADS.values()) + ". "
            "Variants: hf-eager, hf-sdpa (transformers, the baseline), mb-math, mb-sdpa (minibert), with the "
            "minibert switches +unpad (or +unpad=rows|repad|nested, how attention meets the variable lengths), "
            "+sparse, +fusedqkv and +compile (e.g. mb-sdpa+sparse+compile); GPT-2 and T5 take +compile alone. "
            "Exit status: 0 done, 1 the correctness check failed (nothing further is timed), 2 bad options."
        ),
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where models run; auto picks CUDA when a GPU is visible, else the CPU (default: auto)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run of a few seconds: tiny model, 32 tokens, every workload and variant, 2 timed runs")
    p.add_argument("--grid", choices=("auto", "quick", "cpu", "cuda"), default="auto",
                   help="which set of cases: auto is the CUDA grid on a GPU and the reduced CPU grid otherwise; "
                        "--quick means --grid quick (default: auto)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory for results.json, results.md and the plots "
                        "(default: benchmarks/results/<device>, or benchmarks/results/quick-<device> with --quick)")
    p.add_argument("--workloads", type=_csv(), default=[], metavar="LIST",
                   help=f"only these workloads, comma-separated, from {','.join(WORKLOADS)}")
    p.add_argument("--sizes", type=_csv(), default=[], metavar="LIST", help="only these presets: tiny,small,base")
    p.add_argument("--seq-lens", type=_csv(int), default=[], metavar="LIST",
                   help="only cases at these sequence lengths (block length, or longest review), e.g. 128,512")
    p.add_argument("--precisions", type=_csv(), default=[], metavar="LIST",
                   help=f"only these precisions, from {','.join(PRECISIONS)} (bf16 = autocast to bfloat16)")
    p.add_argument("--variants", type=_csv(), default=[], metavar="LIST",
                   help="only these variants (the baseline hf-sdpa is always kept)")
    p.add_argument("--groups", type=_csv(), default=[], metavar="LIST",
                   help=f"only these case groups, from {','.join(GROUPS)} (sweep: the sequence-length sweep; "
                        "unpad: the unpadded-attention comparison)")
    compile_group = p.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None,
                               help="include the torch.compile variants: the CUDA grid's compile group (the default on a "
                                    "GPU), or with --quick a tiny compile group that checks torch.compile works on "
                                    "any device; the CPU grid has none")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false",
                               help="leave out every torch.compile variant")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per variant before timing (default: grid's)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default: grid's)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads, also given to both tokenizers (default: torch's own choice); "
                        "applies to every variant alike")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the review split and the batches")
    p.add_argument("--vocab-size", type=int, default=21128,
                   help="model vocabulary size (default: 21128, Chinese BERT's)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop starting new cases after this many seconds; the rest are listed as skipped")
    p.add_argument("--check-only", action="store_true",
                   help="run only the correctness check of every case, no timing (a fast pre-flight)")
    p.add_argument("--no-tokenizers", dest="tokenizers", action="store_false",
                   help="skip the tokenizer throughput comparison")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="write no PNG figures")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: rewrite results.md and the plots from the results.json in --out "
                        "(e.g. after a run was cut short)")
    return p


def write_outputs(results: dict, out: Path, plots: bool) -> list[Path]:
    """results.json (with the targets evaluated), results.md and, unless `plots` is False, the PNG figures."""
    from .plots import write_plots
    from .report import evaluate_targets, write_json, write_markdown

    results["targets"] = evaluate_targets(results)
    written = [write_json(results, out), write_markdown(results, out)]
    if plots and any("results" in c for c in results["cases"]):
        written += write_plots(results, out)
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        # The tokenizers library reads this once, when its thread pool starts: set it before anything imports it.
        os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    from .gate import CorrectnessError
    from .runner import Settings, run

    import torch

    # torch's CPU path for the nested-tensor variants converts to its older layout and warns once; it is expected
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")
    grid = "quick" if args.quick else args.grid
    device_name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    out = args.out or RESULTS_DIR / (f"quick-{device_name}" if args.quick else device_name)
    if args.report_only:
        path = out / "results.json"
        if not path.is_file():
            print(f"benchmarks: --report-only: no {path}", file=sys.stderr)
            return 2
        results = json.loads(path.read_text(encoding="utf-8"))
        written = write_outputs(results, out, args.plots)
        print("benchmarks: wrote " + ", ".join(str(p) for p in written))
        return 0
    settings = Settings(
        device=args.device, grid=grid, out=out, seed=args.seed, vocab_size=args.vocab_size, threads=args.threads,
        warmup=args.warmup, repeats=args.repeats, compile=args.compile, time_budget=args.time_budget,
        check_only=args.check_only, tokenizers=args.tokenizers, workloads=args.workloads, sizes=args.sizes,
        seq_lens=args.seq_lens, precisions=args.precisions, variants=args.variants, groups=args.groups,
    )
    try:
        results = run(settings)
    except CorrectnessError as err:
        print(f"benchmarks: correctness check failed, run stopped:\n{err}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as err:
        print(f"benchmarks: {err}", file=sys.stderr)
        return 2
    written = write_outputs(results, out, args.plots and not args.check_only)
    print(f"benchmarks: {results['status']} in {results['elapsed_s']:.0f} s; wrote " + ", ".join(str(p) for p in written))
    for t in results["targets"]:
        print(f"  target {t['target']} [{t['case']}]: {t['variant']} x{t['ratio']:.2f} (goal {t['goal']}) "
              f"{'met' if t['met'] else 'NOT met'}")
    return 0
