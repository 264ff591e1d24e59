"""results.json (everything measured, with the exact settings) and results.md (the tables a reader wants).

The Markdown lists, per case and variant: ms per step (median [q1-q3]), real (non-padding) tokens per second,
sequences per second, the speed ratio to transformers' sdpa baseline on the same batches, peak memory above the
state before the step, and model FLOPs utilisation. The targets the project set are evaluated at the top.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .variants import BASELINE

# (label, device, workload, size or None, seq_len or None, precision, variant, goal)
TARGETS = (
    ("CPU fp32, small, T=128: MLM training step", "cpu", "mlm_train", "small", 128, "fp32", "mb-sdpa+sparse", 2.0),
    ("CPU fp32: inference on variable-length review batches", "cpu", "infer_var", None, None, "fp32", "mb-sdpa+unpad",
     2.0),
    ("CUDA bf16, BERT-base, T=128: MLM training step", "cuda", "mlm_train", "base", 128, "bf16", "mb-sdpa+sparse", 1.5),
    ("CPU fp32: GPT-2 training step", "cpu", "gpt_train", None, None, "fp32", "mb-sdpa+chunked", 1.5),
    ("CPU fp32: T5 training step", "cpu", "t5_train", None, None, "fp32", "mb-sdpa+chunked", 1.5),
)


def write_json(results: dict, out: Path) -> Path:
    """Write `out/results.json` atomically (a reader never sees half a file)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str, allow_nan=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def evaluate_targets(results: dict) -> list[dict]:
    """One row per case a target applies to (main and compile groups): the measured ratio of its variant, and of
    the best minibert variant in that case (e.g. the compiled one)."""
    rows = []
    device = results["environment"]["device"]
    if results["settings"].get("grid") == "quick":
        return rows
    for label, dev, workload, size, seq_len, precision, variant, goal in TARGETS:
        if dev != device:
            continue
        for case in results["cases"]:
            if (case["workload"] != workload or case["precision"] != precision or case["group"] == "sweep"
                    or (size and case["size"] != size) or (seq_len and case["seq_len"] != seq_len)
                    or "results" not in case or variant not in case["results"]):
                continue
            ratios = {n: r["speedup_vs_baseline"] for n, r in case["results"].items() if n.startswith("mb-")}
            best = max(ratios, key=ratios.get)
            rows.append({"target": label, "case": case["id"], "variant": variant, "ratio": ratios[variant],
                         "best_variant": best, "best_ratio": ratios[best], "goal": goal,
                         "met": ratios[variant] >= goal})
    return rows


def _fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.1f}"


def _fmt_ms(ms: dict) -> str:
    def one(v: float) -> str:
        return f"{v:.3g}" if v < 100 else f"{v:.0f}"

    return f"{one(ms['median'])} [{one(ms['q1'])}–{one(ms['q3'])}]"


CASE_HEADER = ("| size | T | batch | prec | pad % | variant | ms/step median [IQR] | real tok/s | seq/s | × hf-sdpa "
               "| peak MiB | MFU |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def case_lines(case: dict) -> list[str]:
    """The table rows of one case, one per variant."""
    lines = []
    batch = f"{case['batch_size']}×{case['n_batches']}" if case["n_batches"] > 1 else str(case["batch_size"])
    for name, r in case["results"].items():
        mfu = r["mfu"]
        lines.append(
            f"| {case['size']} | {case['seq_len']} | {batch} | {case['precision']} | "
            f"{100 * case['padding_fraction']:.0f} | {name} | {_fmt_ms(r['ms_per_step'])} | "
            f"{_fmt_rate(r['real_tokens_per_s'])} | {_fmt_rate(r['sequences_per_s'])} | "
            f"{r['speedup_vs_baseline']:.2f} | {r['peak_memory_mib']:.0f} | "
            f"{'' if math.isnan(mfu) else f'{100 * mfu:.1f}%'} |"
        )
    return lines


def markdown(results: dict) -> str:
    env, settings = results["environment"], results["settings"]
    hardware = env.get("gpu") or env["cpu"]
    out = [
        f"# minibert benchmarks: {env['device']} ({hardware})",
        "",
        f"torch {env['torch']}, transformers {env['transformers']}, python {env['python']}; "
        f"torch threads: {env['torch_threads']} of {env['cpu_count']} CPUs"
        + (f" (load average {env['load_average_1m_at_start']} at the start)" if "load_average_1m_at_start" in env
           else "")
        + f"; grid `{settings['grid']}`, "
        f"warm-up {settings['warmup']}, {settings['repeats']} timed runs per variant, alternated; "
        f"compile {'on' if settings['compile'] else 'off'}; status: **{results['status']}**.",
        "",
    ]
    corr = results["correctness"]
    if corr["passed"]:
        worst: dict[str, tuple[float, float]] = {}
        for case in results["cases"]:
            for c in case["gate"]:
                err, margin = worst.get(case["precision"], (0.0, 0.0))
                worst[case["precision"]] = (max(err, c["rel_err"]), max(margin, c["rel_err"] / c["tolerance"]))
        spread = "; ".join(f"{p}: largest relative error {e:.2g}, at most {100 * m:.0f}% of its tolerance"
                           for p, (e, m) in sorted(worst.items()))
        out.append(f"Correctness gate: **passed**, {corr['checks']} comparisons against {BASELINE} in fp32 ({spread}).")
    else:
        out.append(f"Correctness gate: **FAILED**\n\n```\n{corr.get('error', '')}\n```")
    peak = results.get("peak", {})
    if peak:
        measured = ", ".join(f"{k.split('_')[0]} {v / 1e12:.2f} TFLOP/s" for k, v in peak.items()
                             if k.endswith("flops_per_s") and not k.startswith("mfu"))
        out.append(f"\nMeasured matmul peak ({peak['matmul_size']}² matmuls): {measured}; MFU is relative to the "
                   f"{peak['mfu_reference']} figure.")
    targets = evaluate_targets(results)
    if targets:
        out += ["", "## Targets", "", "| target | case | variant | × hf-sdpa | goal | met | best minibert variant |",
                "|---|---|---|---|---|---|---|"]
        for t in targets:
            out.append(f"| {t['target']} | `{t['case']}` | {t['variant']} | {t['ratio']:.2f} | {t['goal']} | "
                       f"{'yes' if t['met'] else 'no'} | {t['best_variant']} ×{t['best_ratio']:.2f} |")
    sections = [("main", "{}"), ("compile", "torch.compile: {}"), ("sweep", "Sequence-length sweep: {}"),
                ("unpad", "Unpadded attention, one sequence at a time (rows), re-padded (repad) or nested: {}")]
    for group, title in sections:
        by_workload: dict[str, list[dict]] = {}
        for case in results["cases"]:
            if case["group"] == group and "results" in case:
                by_workload.setdefault(case["workload"], []).append(case)
        for workload, cases in by_workload.items():
            out += ["", f"## {title.format(cases[0]['description'])} (`{workload}`)", "", CASE_HEADER]
            for case in cases:
                out += case_lines(case)
    tok = results.get("tokenizers")
    if tok:
        out += ["", "## Tokenizer throughput", "",
                f"{tok['texts']} reviews ({tok['chars']} characters) per run; SentencePiece threads: {tok['threads']}, "
                f"tokenizers threads: {tok['rayon_threads']}. minibert: {tok['sentencepiece']['source']}, "
                f"vocabulary {tok['sentencepiece']['vocab_size']}; baseline: {tok['wordpiece']['source']}, "
                f"vocabulary {tok['wordpiece']['vocab_size']}.", "",
                "| mode | tokenizer | ms per run median [IQR] | texts/s | chars/s | tokens/s | × tokenizers |",
                "|---|---|---|---|---|---|---|"]
        for mode, rows in tok["comparisons"].items():
            for name, r in rows.items():
                ms = {k: v * 1e3 for k, v in r["seconds"].items()}
                out.append(f"| {mode} | {name} | {_fmt_ms(ms)} | {_fmt_rate(r['texts_per_s'])} | "
                           f"{_fmt_rate(r['chars_per_s'])} | {_fmt_rate(r['tokens_per_s'])} | "
                           f"{r['speed_vs_tokenizers']:.2f} |")
    if results["skipped"]:
        out += ["", f"Skipped (time budget): {', '.join(results['skipped'])}"]
    if results.get("failed_cases"):
        out += ["", "## Cases that failed to run", "", "| case | error |", "|---|---|"]
        out += [f"| `{f['id']}` | {f['error'].splitlines()[0][:200].replace('|', '/')} |"
                for f in results["failed_cases"]]
    unavailable = [(case["id"], name, err) for case in results["cases"]
                   for name, err in case.get("unavailable", {}).items()]
    if unavailable:
        out += ["", "## Variants that could not run", "", "| case | variant | error |", "|---|---|---|"]
        out += [f"| `{cid}` | {name} | {err.splitlines()[0][:200].replace('|', '/')} |" for cid, name, err in unavailable]
    out += ["", "## How the figures are measured", "", *[f"- {line}" for line in method_notes(results)]]
    return "\n".join(out) + "\n"


def method_notes(results: dict) -> list[str]:
    device = results["environment"]["device"]
    memory_method = next((r["memory_method"] for c in results["cases"] if "results" in c
                          for r in c["results"].values()), "")
    notes = [
        "Every case builds one transformers model (random BERT initialisation, fixed seed); the other transformers "
        "variant loads its state dict and every minibert variant gets its weights through "
        "`minibert.hf.from_hf_model`. All variants see the same batches. Packed blocks (no padding) are passed "
        "without an attention mask, as the project's pretraining loop does; review batches with their padding mask.",
        "Before timing, each variant's outputs are compared with hf-sdpa in eval mode: inference: last hidden state "
        "at real tokens and pooled output; training: loss, logits (MLM: at labelled positions) and the gradients of "
        "the word embeddings, the first block's query, the last block's output and the head. Relative error "
        "||a-b||/||b|| against hf-sdpa in fp32 must be at most 1e-4 for fp32 variants; a bf16 variant's error may "
        "be at most 3x hf-sdpa's own bf16 error (or 5e-2), since bf16 rounding alone moves small gradients by "
        "percents (the fp32 cases carry the exact check). Any failure stops the run before timing. GPT-2 and T5 "
        "(`minibert.gpt_t5_checkpoint.from_hf_model`): the loss, the logits (T5: at the target's labelled positions) and "
        "the gradients of the tied embedding, the first and last block (T5: also both relative-position tables "
        "and the last cross-attention).",
        "GPT-2 and T5 have a minibert preset's size, as `train.causal` and `train.span` map it (T5: as many "
        "encoder and as many decoder blocks as the preset has layers, d_kv = C / H, 100 sentinels after the "
        "vocabulary). GPT-2 reads packed blocks with the block as labels; T5 reads the same blocks span-corrupted "
        "by `train.span` (15% in spans of 3): its real tokens are the encoder's (the block less the dropped "
        "tokens, plus one sentinel per span), its MFU counts the encoder on those and the decoder on the target.",
        "ms/step: median of the timed runs divided by the batches per run, with the interquartile range; "
        + ("CUDA events after a synchronize." if device == "cuda" else "time.perf_counter."),
        "real tok/s counts non-padding tokens only; × hf-sdpa is the baseline's median time over the variant's, "
        "on the same batches in the same run.",
        "Training steps: forward, backward, AdamW step, in train mode (dropout 0.1 as configured); bf16 means "
        "autocast to bfloat16 with fp32 weights.",
        f"Peak memory: {memory_method}. "
        + ("Exact allocator figures." if device == "cuda" else
           "An estimate of the run's working set (allocator slack and reuse of freed pages blur it)."),
        "MFU: model FLOPs on real tokens (6N + 12·L·H·Q·n per token for training, 2N + 4·L·H·Q·n for inference, "
        "N = L(4C² + 2CI) encoder matmul weights, n the row's real length; embeddings and heads not counted) "
        "per second, over the measured matmul peak.",
    ]
    notes += results.get("notes", [])
    return notes


def write_markdown(results: dict, out: Path) -> Path:
    path = out / "results.md"
    path.write_text(markdown(results), encoding="utf-8")
    return path
