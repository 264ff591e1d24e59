"""Which comparisons run: the cases of the quick, CPU and CUDA grids, and filters over them.

A case is one workload at one size, sequence length, batch size and precision, with the variants compared in it.
For packed workloads `seq_len` is the block length; for review workloads it is the longest a review may be (each
batch is padded to its own longest row), and for `ner_infer` the longest a People's Daily line may be, alike. Every
case includes the baseline, transformers with sdpa attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .variants import BASELINE

ATTENTION = ("hf-eager", "hf-sdpa", "mb-math", "mb-sdpa")
INFER_FIXED = ATTENTION + ("mb-sdpa+fusedqkv",)
INFER_VAR = ATTENTION + ("mb-sdpa+unpad",)
MLM_TRAIN = ATTENTION + ("mb-sdpa+sparse", "mb-sdpa+sparse+fusedqkv")
CLS_TRAIN = ATTENTION + ("mb-sdpa+unpad",)
NER_INFER = ATTENTION + ("mb-sdpa+unpad",)
# GPT-2 and T5: minibert's two attention paths against transformers' two, and minibert's fast paths
GPT_TRAIN = ATTENTION + ("mb-sdpa+chunked",)
T5_TRAIN = ATTENTION + ("mb-sdpa+chunked", "mb-sdpa+chunked+fusedqkv")
GPT_COMPILE = ("hf-sdpa", "hf-sdpa+compile", "mb-sdpa+chunked", "mb-sdpa+chunked+compile")
T5_COMPILE = ("hf-sdpa", "hf-sdpa+compile", "mb-sdpa+chunked+fusedqkv", "mb-sdpa+chunked+fusedqkv+compile")
VARIANTS = {"infer_fixed": INFER_FIXED, "infer_var": INFER_VAR, "mlm_train": MLM_TRAIN, "cls_train": CLS_TRAIN,
            "ner_infer": NER_INFER, "gpt_train": GPT_TRAIN, "t5_train": T5_TRAIN}
PACKED = ("infer_fixed", "mlm_train", "gpt_train", "t5_train")  # one batch of full blocks per run
# Which way of attending over unpadded rows wins: one sequence at a time, rows put back for one fused kernel, or a
# jagged nested tensor (one variable-length kernel on CUDA). minibert's unpad_attention="auto" follows the CPU result.
UNPAD = ("hf-sdpa", "mb-sdpa", "mb-sdpa+unpad=rows", "mb-sdpa+unpad=repad", "mb-sdpa+unpad=nested")
# The anchors: the rows that set the project's CPU aims, at the small size with batches of 32 (run with
# --vocab-size 8000 and --threads 1, then 2, for the aims' own setting): each system's fastest minibert path
# against transformers (and, for inference, ONNX Runtime) on the same weights and batches.
ANCHORS = (("mlm_train", ("hf-sdpa", "mb-sdpa+sparse")),
           ("infer_var", ("hf-sdpa", "mb-sdpa+unpad", "ort-sdpa")),
           ("ner_infer", ("hf-sdpa", "mb-sdpa+unpad")),
           ("gpt_train", ("hf-sdpa", "mb-sdpa", "mb-sdpa+chunked")),
           ("t5_train", ("hf-sdpa", "mb-sdpa", "mb-sdpa+chunked", "mb-sdpa+chunked+fusedqkv")))
GROUPS = ("main", "sweep", "compile", "unpad", "anchor")


@dataclass(frozen=True)
class Case:
    workload: str
    size: str  # a minibert preset: tiny, small, base
    seq_len: int
    batch_size: int
    n_batches: int  # batches per timed run (packed workloads: 1)
    precision: str  # fp32 or bf16
    variants: tuple[str, ...]
    group: str = "main"  # main, sweep (sequence-length sweep), compile, unpad (unpadded attention compared), anchor

    @property
    def id(self) -> str:
        return f"{self.group}:{self.workload}/{self.size}/T{self.seq_len}/B{self.batch_size}/{self.precision}"


@dataclass
class Grid:
    name: str
    cases: list[Case]
    warmup: int  # untimed runs per variant before timing
    repeats: int  # timed runs per variant
    matmul_size: int  # side of the square matmul that measures the peak
    tokenizer_texts: int  # reviews per tokenizer run; 0 skips the tokenizer benchmark
    tokenizer_vocab: int  # SentencePiece vocabulary size
    tokenizer_repeats: int
    notes: list[str] = field(default_factory=list)


def _case(workload, size, seq_len, batch_size, precision, n_batches=1, variants=None, group="main") -> Case:
    packed = workload in PACKED
    return Case(workload, size, seq_len, batch_size, 1 if packed else n_batches, precision,
                tuple(variants or VARIANTS[workload]), group)


def quick_grid(compile: bool = False) -> Grid:
    """Seconds: the tiny preset at 32 tokens, every workload and variant once, a two-point sweep; with `compile`,
    also compiled variants of the tiny model (to check on any device that torch.compile works)."""
    cases = [_case(w, "tiny", 32, 4, "fp32", n_batches=2) for w in VARIANTS]
    cases += [_case("infer_fixed", "tiny", T, 128 // T, "fp32", variants=("hf-sdpa", "mb-sdpa"), group="sweep")
              for T in (16, 32)]
    cases.append(_case("cls_train", "tiny", 32, 4, "fp32", n_batches=2, variants=UNPAD, group="unpad"))
    if compile:
        cases.append(_case("infer_fixed", "tiny", 32, 4, "fp32", group="compile",
                           variants=("hf-sdpa", "hf-sdpa+compile", "mb-sdpa+compile")))
        cases.append(_case("mlm_train", "tiny", 32, 4, "fp32", group="compile",
                           variants=("hf-sdpa", "hf-sdpa+compile", "mb-sdpa+sparse", "mb-sdpa+sparse+compile")))
        cases.append(_case("gpt_train", "tiny", 32, 4, "fp32", group="compile", variants=GPT_COMPILE))
    return Grid("quick", cases, warmup=1, repeats=2, matmul_size=256, tokenizer_texts=400, tokenizer_vocab=3000,
                tokenizer_repeats=2)


def cpu_grid() -> Grid:
    """Minutes on a small CPU: tiny and small at 128 tokens (BERT's four workloads, GPT-2's and T5's training
    steps), base at a small batch, a short sweep, the unpadded-attention comparison on the small preset, and the
    anchors (`ANCHORS`: the small size at batch 32), fp32."""
    cases = []
    for size, batch in (("tiny", 16), ("small", 8)):
        for workload in VARIANTS:
            cases.append(_case(workload, size, 128, batch, "fp32", n_batches=3))
    cases.append(_case("infer_var", "small", 512, 8, "fp32", n_batches=3,
                       variants=("hf-sdpa", "mb-sdpa", "mb-sdpa+unpad")))
    cases.append(_case("infer_var", "base", 128, 8, "fp32", n_batches=2, variants=("hf-sdpa", "mb-sdpa", "mb-sdpa+unpad")))
    cases.append(_case("mlm_train", "base", 128, 2, "fp32", variants=("hf-sdpa", "mb-sdpa", "mb-sdpa+sparse")))
    for size in ("tiny", "small"):
        for T in (32, 64, 128, 256):
            cases.append(_case("infer_fixed", size, T, 1024 // T, "fp32", group="sweep"))
    for workload, T in (("infer_var", 128), ("infer_var", 512), ("cls_train", 128)):
        cases.append(_case(workload, "small", T, 8, "fp32", n_batches=3, variants=UNPAD, group="unpad"))
    cases += [_case(workload, "small", 128, 32, "fp32", n_batches=3, variants=variants, group="anchor")
              for workload, variants in ANCHORS]
    return Grid("cpu", cases, warmup=1, repeats=5, matmul_size=1024, tokenizer_texts=4000, tokenizer_vocab=8000,
                tokenizer_repeats=5)


def cuda_grid(compile: bool = True) -> Grid:
    """The full grid for one GPU: tiny, small and BERT-base; 128 and 512 tokens; fp32 and bf16 autocast;
    a 32..512 sweep of BERT-base in bf16; the unpadded-attention comparison on BERT-base in bf16; torch.compile on
    BERT-base, GPT-2 and T5 at 128 tokens in bf16 (each against transformers compiled the same way); GPT-2's and
    T5's training steps at the base size (T5: base-sized encoder and decoder), and at the small and tiny sizes with
    the small models.

    Batches hold 16k tokens (tiny, small) or 8k tokens (base); review batches have as many rows as the packed
    batches of the same length, four batches per timed run. The order puts first what a time budget must not
    cut: BERT-base (where the CUDA target is), GPT-2's and T5's training step at 128 tokens in bf16, then the
    comparisons that decide defaults, the rest of GPT-2's and T5's, and the small models last.
    """
    bert = ("mlm_train", "infer_fixed", "infer_var", "cls_train", "ner_infer")
    gen = ("gpt_train", "t5_train")

    def main(size: str, tokens: int, workloads=bert + gen) -> list[Case]:
        return [_case(workload, size, T, tokens // T, precision, n_batches=4)
                for workload in workloads for T in (128, 512) for precision in ("bf16", "fp32")]

    cases = main("base", 8192, bert)
    cases += [_case(workload, "base", 128, 64, "bf16") for workload in gen]
    for workload in ("infer_var", "cls_train"):
        for T in (128, 512):
            cases.append(_case(workload, "base", T, 8192 // T, "bf16", n_batches=4, variants=UNPAD, group="unpad"))
    for workload in ("mlm_train", "infer_fixed"):
        for T in (32, 64, 128, 256, 512):
            cases.append(_case(workload, "base", T, 8192 // T, "bf16", group="sweep"))
    if compile:
        cases.append(_case("mlm_train", "base", 128, 64, "bf16", group="compile",
                           variants=("hf-sdpa", "hf-sdpa+compile", "mb-sdpa+sparse", "mb-sdpa+sparse+compile",
                                     "mb-sdpa+sparse+fusedqkv+compile")))
        cases.append(_case("infer_fixed", "base", 128, 64, "bf16", group="compile",
                           variants=("hf-sdpa", "hf-sdpa+compile", "mb-sdpa", "mb-sdpa+compile")))
        cases += [_case(w, "base", 128, 64, "bf16", group="compile", variants=v)
                  for w, v in (("gpt_train", GPT_COMPILE), ("t5_train", T5_COMPILE))]
    first = {c.id for c in cases}
    cases += [c for c in main("base", 8192, gen) if c.id not in first]
    cases += main("small", 16384) + main("tiny", 16384)
    return Grid("cuda", cases, warmup=3, repeats=10, matmul_size=8192, tokenizer_texts=6000, tokenizer_vocab=8000,
                tokenizer_repeats=3)


def select_grid(name: str, device_type: str, compile: bool | None = None) -> Grid:
    """The named grid; "auto" is the CUDA grid on a GPU and the CPU grid otherwise. `compile` (None: on only for
    the CUDA grid on a GPU) adds the compile group to the CUDA and quick grids; the CPU grid has none."""
    if name == "auto":
        name = "cuda" if device_type == "cuda" else "cpu"
    if compile is None:
        compile = name == "cuda" and device_type == "cuda"
    if name == "quick":
        return quick_grid(compile)
    if name == "cpu":
        return cpu_grid()
    if name == "cuda":
        return cuda_grid(compile)
    raise ValueError(f"unknown grid {name!r}; choose auto, quick, cpu or cuda")


def filter_cases(
    cases: list[Case],
    workloads: list[str] | None = None,
    sizes: list[str] | None = None,
    seq_lens: list[int] | None = None,
    precisions: list[str] | None = None,
    variants: list[str] | None = None,
    groups: list[str] | None = None,
    compile: bool = True,
) -> list[Case]:
    """The cases matching every given filter. A variant filter keeps the baseline; without compile, compiled
    variants and the compile group are dropped, and a case left with the baseline alone is dropped."""
    out = []
    for case in cases:
        if workloads and case.workload not in workloads:
            continue
        if sizes and case.size not in sizes:
            continue
        if seq_lens and case.seq_len not in seq_lens:
            continue
        if precisions and case.precision not in precisions:
            continue
        if groups and case.group not in groups:
            continue
        if not compile and case.group == "compile":
            continue
        kept = [v for v in case.variants if v == BASELINE or not variants or v in variants]
        if not compile:
            kept = [v for v in kept if "+compile" not in v]
        if BASELINE not in kept:
            kept.insert(0, BASELINE)
        if len(kept) < 2:
            continue
        out.append(replace(case, variants=tuple(kept)))
    return out
