"""Bad input is one line that names the option or input and what to do, exit status 2, before any work; a signal
stops a command promptly with one line, 130 or 143, and leaves nothing half-written.

The commands are called as a user calls them: `X.main([...])` with its stderr, or a child process for signals.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minibert.errors import InputError
from test_finetune_helpers import review_rows, write_rows
from tokenizer import cli as tok_cli
from tokenizer.training_text import MAX_LINE_CHARS, split_long_line
from train.builtin_data import builtin_pretraining_texts, people_daily_lines

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def one_error_line(err: str, *needles: str) -> str:
    """The single `error: ...` line of a refused command, checked to name every needle."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def long_line(n_chars: int) -> str:
    """One line of People's Daily sentences, at least `n_chars` characters long."""
    text, lines = "", people_daily_lines()
    i = 0
    while len(text) < n_chars:
        text += lines[i % len(lines)]
        i += 1
    return text


# -- tokenizer training: very long lines (issue case 10) ------------------------------------------------------


def test_split_long_line_cuts_after_sentence_ends_and_keeps_every_character():
    line = "今天天气很好。" * 700 + "没有标点的一句" * 1000 + "！结束"
    pieces = split_long_line(line)
    assert "".join(pieces) == line
    assert all(0 < len(p) <= MAX_LINE_CHARS for p in pieces)
    assert pieces[0].endswith("。")  # the sentences before the long one are cut after their full stop
    assert len(pieces[0]) > MAX_LINE_CHARS - len("今天天气很好。")  # ... and packed together while they fit
    assert split_long_line("短句。" * 10) == ["短句。" * 10]


def test_a_long_line_is_split_with_a_note_and_trains(tmp_path, capsys):
    corpus = tmp_path / "book.txt"
    corpus.write_text("第一行。\n" + long_line(3 * MAX_LINE_CHARS) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    code = tok_cli.main(["--input", str(corpus), "--out", str(out), "--model-type", "char",
                         "--character-coverage", "1.0", "--num-threads", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"1 line longer than {MAX_LINE_CHARS:,} characters ({corpus}, line 2)" in err
    assert "split at sentence ends into" in err and "--long-lines refuse" in err
    assert (out / "spm.model").is_file()


def test_a_long_line_is_refused_naming_file_and_line(tmp_path, capsys):
    corpus = tmp_path / "book.txt"
    corpus.write_text("第一行。\n第二行。\n" + long_line(MAX_LINE_CHARS + 1) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    code = tok_cli.main(["--input", str(corpus), "--out", str(out), "--long-lines", "refuse"])
    assert code == 2
    one_error_line(capsys.readouterr().err, f"{corpus}, line 3", "--long-lines split")
    assert not out.exists()


def test_long_given_sentences_are_split_or_refused_in_the_library():
    from tokenizer import SentencePieceTokenizer

    text = long_line(2 * MAX_LINE_CHARS)
    with pytest.raises(InputError, match="the given sentences, line 2"):
        SentencePieceTokenizer.train(["短句。", text], 300, model_type="char", long_lines="refuse", verbose=False)
    lines = []
    tok = SentencePieceTokenizer.train(["短句。", text], 300, model_type="char", character_coverage=1.0,
                                       num_threads=1, log=lines.append)
    assert tok.vocab_size > 5 and any("1 line longer than" in ln for ln in lines)


def test_a_tokenizer_path_says_whether_it_is_missing_or_a_file(tmp_path):
    import tokenizer

    with pytest.raises(InputError, match="does not exist"):
        tokenizer.load(tmp_path / "nowhere")
    (tmp_path / "spm.model").write_bytes(b"x")
    with pytest.raises(InputError, match="is a file, not a directory"):
        tokenizer.load(tmp_path / "spm.model")


# -- tokenizer training stopped by a signal (issue case 13) -----------------------------------------------------


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """About 17 MB of Chinese text, one line per text: SentencePiece needs about half a minute to train a unigram
    model on it with one thread, far longer than a stopped command may take to end."""
    path = tmp_path_factory.mktemp("signal") / "corpus.txt"
    text = "\n".join(builtin_pretraining_texts()) + "\n"
    path.write_text(text * 2, encoding="utf-8")
    return path


def start_and_wait_for(command: list[str], marker: str, stream: str = "stderr", timeout: float = 300):
    """Start `command`; return the process once `marker` appears in a line of its `stream`, with the lines read."""
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    seen, deadline = [], time.time() + timeout
    for line in pipe:
        seen.append(line)
        if marker in line:
            return proc, seen
        assert time.time() < deadline, "".join(seen)
    proc.wait()
    raise AssertionError(f"{marker!r} never printed (exit {proc.returncode}):\n" + "".join(seen))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_tokenizer_training_at_once(big_corpus, tmp_path, sig):
    out = tmp_path / "tok"
    proc, _ = start_and_wait_for([sys.executable, "-m", "tokenizer.train", "--input", str(big_corpus), "--out",
                                  str(out), "--vocab-size", "8000", "--num-threads", "1", "--no-progress"],
                                 "SentencePiece model on")
    time.sleep(0.5)  # into SentencePiece's C++ training
    sent = time.monotonic()
    proc.send_signal(sig)
    out_text, err = proc.communicate(timeout=300)
    waited = time.monotonic() - sent
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == f"stopped by {signal.Signals(sig).name}" and "Traceback" not in err
    # Promptly: SentencePiece alone needs about half a minute on this corpus with one thread (more on a busy
    # machine), and a command that waited for it to return would only then stop.
    assert "trained a" not in err and waited < 10, waited
    assert not out.exists() or not any(out.iterdir())


def test_sigint_stops_pretraining_while_it_trains_its_tokenizer(tmp_path):
    out = tmp_path / "run"
    proc, _ = start_and_wait_for([sys.executable, "-m", "train.pretrain", "--out", str(out), "--max-steps", "1",
                                  "--no-progress"], "SentencePiece model on")
    time.sleep(0.5)  # into SentencePiece's C++ training
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    waited = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped by SIGINT" and "Traceback" not in err
    assert waited < 10, waited  # SentencePiece alone needs longer on the built-in text
    assert not out.exists()  # the run made the directory, and took it away with nothing in it


# -- train.baseline (issue cases 13 and 14) ---------------------------------------------------------------------


def test_sigint_stops_the_baseline_leaving_nothing(tmp_path):
    out = tmp_path / "base"
    proc, _ = start_and_wait_for([sys.executable, "-m", "train.baseline", "--out", str(out)], "validation grid",
                                 stream="stdout")
    assert out.is_dir()  # claimed while it runs
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped by SIGINT" and "Traceback" not in err
    assert not out.exists()


@pytest.fixture
def task_file(tmp_path) -> str:
    return str(write_rows(tmp_path / "reviews.csv", review_rows(60, seed=1)))


@pytest.mark.parametrize("args, needles", [
    (["--seeds", "-1"], ["--seeds", "2**32 - 1"]),
    (["--seeds", str(2**32)], ["--seeds"]),
    (["--c-values", "inf"], ["--c-values", "finite"]),
])
def test_baseline_option_out_of_range(tmp_path, capsys, task_file, args, needles):
    from train import baseline

    out = tmp_path / "out"
    assert baseline.main(["--out", str(out), "--train", task_file, *args]) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err, *needles)
    assert captured.out == "" and not out.exists()


@pytest.mark.parametrize("where", ["through a file", "unwritable"])
def test_baseline_unwritable_out_is_refused_before_the_grid(tmp_path, capsys, task_file, where):
    from train import baseline

    blocker = tmp_path / "a_file"
    blocker.write_text("x", encoding="utf-8")
    out = blocker / "out" if where == "through a file" else Path("/proc/minibert-no-such-dir/out")
    assert baseline.main(["--out", str(out), "--train", task_file]) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err, "--out", str(out))
    assert "validation grid" not in captured.out  # refused before any fit


def test_baseline_refuses_a_directory_holding_other_files(tmp_path, capsys, task_file):
    from train import baseline

    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text("my own\n", encoding="utf-8")
    assert baseline.main(["--out", str(out), "--train", task_file]) == 2
    one_error_line(capsys.readouterr().err, "--out", str(out))
    assert (out / "results.json").read_text(encoding="utf-8") == "my own\n"


# -- train.generate (issue cases 14 and 16) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    """A tiny GPT run that reads at most 16 positions."""
    import tokenizer
    from minibert.gpt import GPT2Config, GPT2LMHeadModel
    from minibert.gpt_t5_checkpoint import save_pretrained

    root = tmp_path_factory.mktemp("gpt")
    tok = tokenizer.train(people_daily_lines()[:100], 1000, root / "run" / "tokenizer", model_type="char",
                          character_coverage=1.0, num_threads=1, verbose=False)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tok.vocab_size, n_positions=16, n_embd=8, n_layer=1, n_head=2,
                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    save_pretrained(GPT2LMHeadModel(config), root / "run")
    return root / "run"


@pytest.mark.parametrize("args, needles", [
    (["--seed", "99999999999999999999"], ["--seed", "2**64 - 1"]),
    (["--seed", "-1"], ["--seed"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens must be at least 1"]),
    (["--temperature", "0"], ["--temperature", "leave out --temperature and --top-k"]),
    (["--temperature", "nan"], ["--temperature must be a finite number"]),
    (["--top-k", "0"], ["--top-k must be at least 1"]),
])
def test_generate_options_are_named_as_options(capsys, gpt_run, args, needles):
    from train import generate

    assert generate.main([str(gpt_run), "今天", *args]) == 2
    line = one_error_line(capsys.readouterr().err, *needles)
    assert "do_sample" not in line and "max_new_tokens" not in line and "top_k" not in line


def test_generate_says_the_prompt_is_too_long_rather_than_at_most_0(capsys, gpt_run):
    from train import generate

    prompt = "".join(people_daily_lines()[:3])[:40]
    assert generate.main([str(gpt_run), prompt, "--max-new-tokens", "1"]) == 2
    line = one_error_line(capsys.readouterr().err, "shorten the prompt", "16")
    assert "at most 0" not in line


def test_generate_says_how_many_new_tokens_fit(capsys, gpt_run):
    from train import generate

    assert generate.main([str(gpt_run), "今天", "--max-new-tokens", "30"]) == 2
    line = one_error_line(capsys.readouterr().err, "--max-new-tokens 30", "lower --max-new-tokens")
    taken = int(re.search(r"the prompt takes (\d+) of the model's 16 positions", line).group(1))
    assert 3 <= taken < 16 and f"at most {16 - taken} new tokens fit" in line  # [CLS] and the prompt's tokens


def test_generate_says_a_file_is_not_a_run_directory(capsys, tmp_path):
    from train import generate

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"x")
    assert generate.main([str(path), "今天"]) == 2
    one_error_line(capsys.readouterr().err, "is a file, not a run directory")


# -- train.predict (issue case 16) ------------------------------------------------------------------------------


class FakePredictor:
    """Stands in for a fine-tuned run: every text is 'positive'."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def predict(self, texts, batch_size=64):
        return [{"text": t, "label": "positive", "probability": 1.0, "probabilities": {"positive": 1.0}}
                for t in texts]


@pytest.mark.parametrize("order", ["options after RUN", "options between texts", "options first"])
def test_predict_takes_options_anywhere(monkeypatch, capsys, tmp_path, order):
    from train import predict

    monkeypatch.setattr(predict, "Predictor", FakePredictor)
    run = str(tmp_path)
    argv = {"options after RUN": [run, "--json", "好", "差"],
            "options between texts": [run, "好", "--json", "--batch-size", "2", "差"],
            "options first": ["--json", run, "好", "差"]}[order]
    assert predict.main(argv) == 0
    assert [r["text"] for r in json.loads(capsys.readouterr().out)] == ["好", "差"]


def test_predict_says_file_is_a_directory(capsys, tmp_path):
    from train import predict

    assert predict.main([str(tmp_path), "--file", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, f"--file {tmp_path}: is a directory")


def test_predict_says_run_is_a_file(capsys, tmp_path):
    from train import predict

    path = tmp_path / "finetune.json"
    path.write_text("{}", encoding="utf-8")
    assert predict.main([str(path), "好"]) == 2
    one_error_line(capsys.readouterr().err, "is a file, not a run directory")


# -- labelled data (issue cases 8 and 16) -----------------------------------------------------------------------


def rows_with_labels(labels: list[str], per_label: int) -> list[dict]:
    rows = review_rows(len(labels) * per_label, seed=5)
    return [{"text": r["text"], "label": labels[i % len(labels)]} for i, r in enumerate(rows)]


def test_labels_equal_as_numbers_are_one_class(tmp_path):
    from train.finetune_data import load_task

    path = write_rows(tmp_path / "t.csv", rows_with_labels(["0", "1", "1.0", "0.0"], 20))
    task = load_task(str(path))
    assert task.label_names == ["0", "1"]
    assert any("'1' and '1.0'" in n or "'1.0' and '1'" in n for n in task.notes), task.notes


def test_number_labels_merge_across_files(tmp_path):
    from train.finetune_data import load_task

    train = write_rows(tmp_path / "train.csv", rows_with_labels(["0", "1"], 20))
    val = write_rows(tmp_path / "val.csv", [{"text": "好好好好", "label": "1.0"}, {"text": "差差差差", "label": "0"}])
    test = write_rows(tmp_path / "test.csv", [{"text": "好好好", "label": "1"}, {"text": "差差差", "label": "0.0"}])
    task = load_task(str(train), str(val), str(test))
    assert task.label_names == ["0", "1"] and len(task.validation) == 2 and len(task.test) == 2


def test_two_spellings_of_a_number_among_words_are_refused(tmp_path):
    from train.finetune_data import load_task

    path = write_rows(tmp_path / "t.csv", rows_with_labels(["pos", "1", "1.0"], 20))
    with pytest.raises(InputError, match=r"labels '1' \(.*t.csv, line 3\) and '1.0' \(.*, line 4\) spell the same "
                                         "number"):
        load_task(str(path))


def test_too_many_classes_for_the_split_says_so_with_the_numbers(tmp_path, capsys):
    from train import baseline

    rows = review_rows(3000, seed=2)
    path = write_rows(tmp_path / "many.csv", [{"text": r["text"], "label": f"c{i % 1000}"} for i, r in enumerate(rows)])
    assert baseline.main(["--out", str(tmp_path / "out"), "--train", str(path)]) == 2
    line = one_error_line(capsys.readouterr().err, "too many classes", "3,000 rows over 1,000 labels",
                          "at most 3 rows per label", "needs 6 rows")
    assert "too few rows" not in line


def test_a_directory_given_as_data_is_called_a_directory(tmp_path, capsys):
    from train import baseline

    assert baseline.main(["--out", str(tmp_path / "out"), "--train", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, f"{tmp_path} is a directory")


# -- train.pretrain (issue cases 14 and 16) ---------------------------------------------------------------------


def test_pretrain_refuses_an_odd_rotary_head_before_any_work(tmp_path, capsys):
    from train import pretrain

    out = tmp_path / "run"
    assert pretrain.main(["--out", str(out), "--set", "hidden_size=130", "--max-steps", "1"]) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err, "rotary", "130 / 2 = 65", "even")
    assert "SentencePiece" not in captured.out + captured.err and not out.exists()


def test_an_odd_head_is_fine_for_the_models_without_rotary_positions():
    from train import pretrain_options
    from tokenizer.command import parse_options

    args, _ = parse_options(pretrain_options.PretrainArgs, ["--objective", "causal", "--set", "hidden_size=130"], "",
                            "p")
    assert pretrain_options.model_config(args, 100).hidden_size == 130


@pytest.mark.parametrize("option", ["--weight-decay", "--max-grad-norm"])
def test_pretrain_says_a_non_finite_number_is_not_finite(tmp_path, capsys, option):
    from train import pretrain

    assert pretrain.main(["--out", str(tmp_path / "run"), option, "inf"]) == 2
    line = one_error_line(capsys.readouterr().err, f"{option} must be a finite number")
    assert ">= 0" not in line


@pytest.fixture(scope="module")
def small_pretraining(tmp_path_factory) -> tuple[Path, Path]:
    """A corpus file and a tokenizer for a pretraining run that trains no tokenizer of its own."""
    import tokenizer

    root = tmp_path_factory.mktemp("pretrain")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(people_daily_lines()[:300]) + "\n", encoding="utf-8")
    tokenizer.train(corpus, 1000, root / "tok", model_type="char", character_coverage=1.0, num_threads=1,
                    verbose=False)
    return corpus, root / "tok"


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 85899345920 bytes. Error code 12 (Cannot allocate memory)"),
])
def test_out_of_memory_in_a_step_says_which_options_to_change(tmp_path, capsys, monkeypatch, small_pretraining,
                                                              error):
    from train import pretrain

    corpus, tok = small_pretraining

    def step(*args, **kwargs):
        raise error

    monkeypatch.setattr(pretrain, "train_step", step)
    out = tmp_path / "run"
    code = pretrain.main(["--out", str(out), "--corpus", str(corpus), "--tokenizer", str(tok), "--batch-size", "16",
                          "--max-seq-length", "32", "--max-steps", "2", "--eval-batches", "1", "--no-progress",
                          "--device", "cpu"])
    assert code == 2
    one_error_line(capsys.readouterr().err, "out of memory", "--batch-size 16", "lower --batch-size",
                   "--micro-batch-size (e.g. 4)")
    assert not out.exists()  # no checkpoint: nothing kept


def test_a_bug_that_is_not_memory_still_shows_itself(tmp_path, monkeypatch, small_pretraining):
    from train import pretrain

    corpus, tok = small_pretraining

    def step(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(pretrain, "train_step", step)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        pretrain.main(["--out", str(tmp_path / "run"), "--corpus", str(corpus), "--tokenizer", str(tok),
                       "--batch-size", "4", "--max-seq-length", "32", "--max-steps", "2", "--eval-batches", "1",
                       "--no-progress", "--device", "cpu"])


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_printed_next_commands_are_quoted_for_the_shell(tmp_path, capsys, family):
    from train import pretrain_report

    out = tmp_path / "my runs" / "it's here"
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text("", encoding="utf-8")
    state = SimpleNamespace(step=1, train_seconds=1.0)
    pretrain_report.print_summary(out, SimpleNamespace(message="done"), state, 8, SimpleNamespace(family=family))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "python -m train." in ln]
    assert lines
    for line in lines:
        words = shlex.split(line.split("next:")[-1])
        assert str(out) in words, line
