"""Running the suite: for each case build the variants, gate them, time them, measure memory, derive the figures.

`run(settings)` returns the results dict that `report` writes; it rewrites results.json after every case, so an
interrupted run (time budget, failure) still leaves everything measured so far. A correctness failure is
recorded, written, and raised as `CorrectnessError`.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import minibert

from . import flops
from .data import (CharVocab, for_next_token, line_batches, load_reviews, load_tagged_lines, mask_for_mlm,
                   packed_blocks, review_batches, span_corrupt, token_stream)
from .device import describe, resolve_device
from .gate import CorrectnessError, check_case
from .grid import Case, Grid, filter_cases, select_grid
from .memory import measure_peak
from .report import write_json
from .timing import alternate, make_timer
from .variants import BASELINE, N_SENTINELS, ModelSet, model_config, num_layers
from .workloads import WORKLOADS, make_optimizer, run_inference, run_training

MIB = 2**20


@dataclass
class Settings:
    device: str = "auto"
    grid: str = "auto"  # auto, quick, cpu, cuda
    out: Path | None = None
    seed: int = 0
    vocab_size: int = 21128  # Chinese BERT's vocabulary size
    threads: int | None = None
    warmup: int | None = None  # None: the grid's
    repeats: int | None = None
    compile: bool | None = None  # None: the grid's (on only in the CUDA grid)
    time_budget: float | None = None  # seconds; cases beyond it are skipped and listed
    check_only: bool = False
    tokenizers: bool = True
    workloads: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    precisions: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


class Data:
    """The reviews, their character vocabulary and the packed token stream; the People's Daily lines of the token
    classification cases and their own vocabulary, read when a case first needs them."""

    def __init__(self, seed: int, vocab_size: int):
        self.seed = seed
        self.reviews, self.source = load_reviews(seed)
        self.vocab = CharVocab([r.text for r in self.reviews], vocab_size)
        self.stream = token_stream(self.vocab, self.reviews)
        self._lines: tuple[list[str], CharVocab, str] | None = None

    @property
    def lines(self) -> tuple[list[str], CharVocab, str]:
        """People's Daily lines (`load_tagged_lines`), a CharVocab of their characters, and their source."""
        if self._lines is None:
            texts, source = load_tagged_lines(self.seed)
            self._lines = texts, CharVocab(texts, self.vocab.vocab_size), source
        return self._lines

    def batches(self, case: Case, seed: int) -> list:
        """The case's batches; the same for every variant, and the same in every run with this seed."""
        generator = torch.Generator().manual_seed(seed + zlib.crc32(case.id.encode()))
        workload = WORKLOADS[case.workload]
        if workload.packed:
            batch = packed_blocks(self.stream, case.batch_size, case.seq_len, generator)
            if workload.model_kind == "mlm":
                batch = mask_for_mlm(batch, self.vocab.vocab_size, generator)
            elif workload.model_kind == "gpt":
                batch = for_next_token(batch)
            elif workload.model_kind == "t5":
                batch = span_corrupt(batch, self.vocab.vocab_size, generator, N_SENTINELS)
            return [batch]
        if workload.model_kind == "tagger":
            texts, vocab, _ = self.lines
            return line_batches(vocab, texts, case.n_batches, case.batch_size, case.seq_len, generator)
        return review_batches(self.vocab, self.reviews, case.n_batches, case.batch_size, case.seq_len, generator)


class ModelCache:
    """Keeps the ModelSets of the last few (kind, size) pairs, so cases of one model reuse its variants."""

    def __init__(self, device: torch.device, seed: int, vocab_size: int, capacity: int):
        self.device, self.seed, self.vocab_size, self.capacity = device, seed, vocab_size, capacity
        self.sets: dict[tuple[str, str], ModelSet] = {}

    def get(self, kind: str, size: str) -> ModelSet:
        key = (kind, size)
        if key not in self.sets:
            while len(self.sets) >= self.capacity:
                self.sets.pop(next(iter(self.sets)))
            config = model_config(kind, size, self.vocab_size)
            self.sets[key] = ModelSet(kind, config, self.device, self.seed)
        self.sets[key] = self.sets.pop(key)  # most recently used last
        return self.sets[key]

    def notes(self) -> list[str]:
        return sorted({n for s in self.sets.values() for n in s.notes})


def measure_peaks(device: torch.device, matmul_size: int, timer) -> dict:
    """Measured matmul FLOP/s: bf16 (and fp32) on CUDA, fp32 on the CPU. `mfu_reference` is what MFU divides by."""
    if device.type == "cuda":
        bf16 = flops.measure_matmul_peak(device, torch.bfloat16, matmul_size, 20, timer)
        fp32 = flops.measure_matmul_peak(device, torch.float32, matmul_size // 2, 10, timer)
        return {"bf16_flops_per_s": bf16, "fp32_flops_per_s": fp32, "matmul_size": matmul_size,
                "mfu_reference": "bf16", "mfu_reference_flops_per_s": bf16}
    matmul_size = min(matmul_size, 1024)  # a CPU reaches its matmul rate well below the GPU's 8192
    fp32 = flops.measure_matmul_peak(device, torch.float32, matmul_size, 4, timer)
    return {"fp32_flops_per_s": fp32, "matmul_size": matmul_size, "mfu_reference": "fp32",
            "mfu_reference_flops_per_s": fp32}


def sizing(config) -> dict:
    """The fields that size a model, under its own config's names."""
    if isinstance(config, minibert.GPT2Config):
        names = ("n_embd", "n_layer", "n_head", "n_inner", "vocab_size")
    elif isinstance(config, minibert.T5Config):
        names = ("d_model", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "d_ff", "vocab_size")
    else:
        names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    return {k: getattr(config, k) for k in names}


def case_figures(case: Case, config, batches: list, stats: dict, memory: dict, peak: float) -> dict:
    """Per variant: ms per step, tokens/s, sequences/s, ratio to the baseline, peak memory, MFU."""
    workload = WORKLOADS[case.workload]
    real = sum(b.real_tokens for b in batches)
    seqs = sum(b.sequences for b in batches)
    model_flops = sum(flops.batch_flops(config, b, workload.training) for b in batches)
    base = stats[BASELINE].median
    out = {}
    for name, s in stats.items():
        out[name] = {
            "ms_per_step": s.scaled(1e3 / len(batches)),
            "seconds_per_run": s.samples,
            "real_tokens_per_s": real / s.median,
            "sequences_per_s": seqs / s.median,
            "speedup_vs_baseline": base / s.median,
            "peak_memory_mib": memory[name].peak_bytes / MIB,
            "memory_method": memory[name].method,
            "model_tflops_per_s": model_flops / s.median / 1e12,
            "mfu": flops.mfu(model_flops, s.median, peak),
        }
    return out


def run_case(case: Case, grid: Grid, settings: Settings, device, data: Data, cache: ModelCache, timer, peak: float) -> dict:
    workload = WORKLOADS[case.workload]
    model_set = cache.get(workload.model_kind, case.size)
    config = model_set.config
    models = model_set.prepare(list(case.variants))
    batches = [b.to(device) for b in data.batches(case, settings.seed)]
    record = {
        "id": case.id, "group": case.group, "workload": case.workload, "description": workload.description,
        "size": case.size, "seq_len": case.seq_len, "batch_size": case.batch_size, "n_batches": len(batches),
        "precision": case.precision, "variants": list(case.variants), "baseline": BASELINE,
        "config": sizing(config),
        "real_tokens_per_run": sum(b.real_tokens for b in batches),
        "padded_tokens_per_run": sum(b.padded_tokens for b in batches),
        "sequences_per_run": sum(b.sequences for b in batches),
    }
    record["padding_fraction"] = 1 - record["real_tokens_per_run"] / record["padded_tokens_per_run"]
    if workload.model_kind == "tagger":
        record["data_source"] = data.lines[2]  # not the reviews of results["data"]
    unavailable: dict[str, str] = {}
    checks = check_case(case.id, models, BASELINE, workload, batches[0], device, case.precision,
                        num_layers(config), unavailable)
    record["gate"] = [c.to_dict() for c in checks]
    if unavailable:
        record["unavailable"] = unavailable
        models = {name: built for name, built in models.items() if name not in unavailable}
    if settings.check_only:
        return record
    if workload.training:
        optimizers = {name: make_optimizer(built) for name, built in models.items()}
        fns = {name: (lambda b=built, o=optimizers[name]: run_training(b, o, batches, device, case.precision))
               for name, built in models.items()}
    else:
        fns = {name: (lambda b=built: run_inference(b, batches, device, case.precision)) for name, built in models.items()}
    warmup = settings.warmup if settings.warmup is not None else grid.warmup
    repeats = settings.repeats if settings.repeats is not None else grid.repeats
    stats = alternate(fns, warmup, repeats, timer)
    memory = {name: measure_peak(fn, device) for name, fn in fns.items()}
    record["model_flops_per_run"] = sum(flops.batch_flops(config, b, workload.training) for b in batches)
    record["results"] = case_figures(case, config, batches, stats, memory, peak)
    return record


def run(settings: Settings, log=print) -> dict:
    """Run the selected grid and return the results (also written to settings.out/results.json)."""
    started = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    grid = select_grid(settings.grid, device.type, settings.compile)
    compile_on = any(c.group == "compile" for c in grid.cases)
    cases = filter_cases(grid.cases, settings.workloads, settings.sizes, settings.seq_lens, settings.precisions,
                         settings.variants, settings.groups, compile=compile_on)
    out = Path(settings.out)
    timer = make_timer(device)
    results = {
        "status": "running",
        "environment": describe(device),
        "settings": {**settings.to_dict(), "grid": grid.name, "compile": compile_on, "cases": [c.id for c in cases],
                     "warmup": settings.warmup if settings.warmup is not None else grid.warmup,
                     "repeats": settings.repeats if settings.repeats is not None else grid.repeats,
                     "alternation": "each round runs every variant once, in the listed order (A B C A B C ...)",
                     "training_mode": "timed steps in train mode (dropout 0.1); the gate runs in eval mode",
                     "optimizer": "torch.optim.AdamW(lr=1e-5, weight_decay=0.01), defaults otherwise"},
        "correctness": {"passed": None, "checks": 0, "failures": []},
        "cases": [],
        "skipped": [],
        "failed_cases": [],
        "notes": list(grid.notes),
    }
    log(f"benchmarks: {len(cases)} cases on {device.type} ({grid.name} grid) -> {out}")
    data = Data(settings.seed, settings.vocab_size)
    results["data"] = {"reviews": len(data.reviews), "source": data.source, "distinct_chars": data.vocab.n_chars,
                       "vocab_size": settings.vocab_size, "stream_tokens": len(data.stream),
                       "tokenization": "one id per character (Chinese BERT style), [CLS] first, [SEP] last"}
    results["peak"] = measure_peaks(device, grid.matmul_size, timer)
    peak = results["peak"]["mfu_reference_flops_per_s"]
    cache = ModelCache(device, settings.seed, settings.vocab_size, capacity=16 if device.type == "cuda" else 1)
    n_checks = 0
    for i, case in enumerate(cases):
        if settings.time_budget is not None and time.perf_counter() - started > settings.time_budget:
            results["skipped"] = [c.id for c in cases[i:]]
            log(f"  time budget of {settings.time_budget:.0f} s spent: {len(cases) - i} cases skipped")
            break
        t0 = time.perf_counter()
        try:
            record = run_case(case, grid, settings, device, data, cache, timer, peak)
        except CorrectnessError as err:
            results["status"] = "failed: correctness"
            results["correctness"].update(passed=False, checks=n_checks + len(err.checks),
                                          failures=[c.to_dict() for c in err.checks if not c.passed],
                                          error=str(err))
            results["notes"] = sorted(set(results["notes"]) | set(cache.notes()))
            write_json(results, out)
            raise
        except Exception as err:  # noqa: BLE001 - a case that cannot run (say out of memory): record it, go on
            if device.type == "cuda":
                torch.cuda.empty_cache()
            results["failed_cases"].append({"id": case.id, "error": f"{type(err).__name__}: {err}"[:600]})
            write_json(results, out)
            log(f"  [{i + 1}/{len(cases)}] {case.id}: FAILED to run: {type(err).__name__}: {str(err)[:200]}")
            continue
        n_checks += len(record["gate"])
        results["cases"].append(record)
        results["correctness"].update(passed=True, checks=n_checks)
        results["notes"] = sorted(set(results["notes"]) | set(cache.notes()))
        write_json(results, out)
        log(f"  [{i + 1}/{len(cases)}] {case.id}: {_summary(record)} ({time.perf_counter() - t0:.1f} s)")
    if settings.tokenizers and grid.tokenizer_texts and not settings.check_only:
        from .tokenizer_speed import benchmark

        texts = [r.text for r in data.reviews[: grid.tokenizer_texts]]
        results["tokenizers"] = benchmark(texts, grid.tokenizer_vocab, grid.tokenizer_repeats,
                                          torch.get_num_threads(), 128, make_timer(torch.device("cpu")))
        log("  tokenizers: " + ", ".join(
            f"{mode} x{rows['minibert-sentencepiece']['speed_vs_tokenizers']:.2f}"
            for mode, rows in results["tokenizers"]["comparisons"].items()))
    n_failed = len(results["failed_cases"])
    problems = [f"{n_failed} case{'s' if n_failed > 1 else ''} failed to run"] if n_failed else []
    problems += ["time budget"] if results["skipped"] else []
    results["status"] = f"partial ({', '.join(problems)})" if problems else "complete"
    results["elapsed_s"] = time.perf_counter() - started
    write_json(results, out)
    return results


def _summary(record: dict) -> str:
    missing = "".join(f"; {name} could not run ({err.splitlines()[0][:120]})"
                      for name, err in record.get("unavailable", {}).items())
    if "results" not in record:
        return f"gate passed ({len(record['gate'])} checks)" + missing
    parts = [f"{name} x{r['speedup_vs_baseline']:.2f}" for name, r in record["results"].items() if name != BASELINE]
    return "vs hf-sdpa: " + ", ".join(parts) + missing
