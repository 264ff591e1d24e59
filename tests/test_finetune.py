"""train.finetune and train.finetune_data: data splits, strategies, the training loop, the command line."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
import torch

from test_finetune_helpers import make_pretrain_run, review_rows, run_cli, write_rows
from minibert.errors import InputError
from train import finetune as ft
from train.optim import lr_at
from train.batches import EncodedSet, collate, drop_tokens, length_bucketed_batches, sorted_batches
from train.finetune_tasks import TASKS
from train.finetune_data import (
    Columns,
    Row,
    deduplicate,
    load_task,
    sorted_label_names,
    stratified_split,
    subsample_train,
)
from minibert.pooling import mean_pool


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_pretrain_run(tmp_path_factory.mktemp("runs"))


def keys(examples):
    return {(e.text, e.text_pair) for e in examples}


def assert_disjoint(task):
    train, val, test = keys(task.train), keys(task.validation), keys(task.test)
    assert not train & val and not train & test and not val & test


def options(**kw) -> ft.Options:
    return ft.Options(**{"epochs": 1, "batch_size": 4, "lr": 1e-3, "warmup_ratio": 0.0, "dropout": 0.0, **kw})


def classifier_for(run_dir, labels=("negative", "positive"), **kw):
    o = options(**kw)
    pre = ft.load_pretrained_encoder(run_dir, {"unpad": o.unpad, "hidden_dropout_prob": 0.0,
                                               "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0})
    torch.manual_seed(0)
    clf = ft.build_classifier(pre, o, list(labels))
    ft.apply_strategy(clf, o.strategy, o.freeze_layers)
    return clf, pre, o


def encoded(pre, rows, labels=("negative", "positive")) -> EncodedSet:
    from train.batches import encode_examples
    from train.finetune_data import Example

    return encode_examples(pre.tokenizer, [Example(r["text"], None, labels.index(r["label"])) for r in rows], 64)


def train_steps(clf, pre, o, data, epochs):
    optimizer, schedule = ft.make_optimizer(clf, o, total_steps=epochs * -(-len(data) // o.batch_size))
    rng = random.Random(0)
    for _ in range(epochs):
        ft.train_epoch(clf, data, optimizer, schedule, o, rng, pre.tokenizer.pad_token_id, pre.tokenizer.special_ids)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- data -----------------------------------------------------------------------------------------------------


def test_builtin_split_never_shares_a_text():
    task = load_task()
    assert_disjoint(task)
    assert task.label_names == ["negative", "positive"]
    assert len(task.train) + len(task.validation) + len(task.test) == 17363
    assert {e.label for e in task.test} == {0, 1}


def test_user_file_split_is_disjoint_deduplicated_and_stratified(tmp_path):
    rows = review_rows(200, labels=("a", "b", "c", "d"))
    rows += rows[:30]  # exact duplicates
    rows += [{"text": rows[40]["text"], "label": "a" if rows[40]["label"] != "a" else "b"}]  # a conflicting label
    path = write_rows(tmp_path / "data.csv", rows)
    task = load_task(str(path), split_seed=3)
    assert_disjoint(task)
    assert rows[40]["text"] not in {e.text for e in task.train + task.validation + task.test}
    assert len(task.train) + len(task.validation) + len(task.test) == 199
    for split, share in ((task.validation, 0.1), (task.test, 0.1)):
        counts = [sum(e.label == k for e in split) for k in range(4)]
        assert all(abs(c - share * 50) <= 1 for c in counts), counts
    assert any("conflict" in n or "different labels" in n for n in task.notes)
    # The same seed gives the same split whatever the row order.
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    again = load_task(str(write_rows(tmp_path / "shuffled.csv", shuffled)), split_seed=3)
    assert keys(again.test) == keys(task.test) and keys(again.validation) == keys(task.validation)


def test_separate_files_are_made_disjoint(tmp_path):
    rows = review_rows(40)
    train = write_rows(tmp_path / "train.jsonl", rows[:30] + rows[30:32])  # two validation texts leak into train
    val = write_rows(tmp_path / "val.jsonl", rows[30:35] + rows[35:36])  # one test text leaks into validation
    test = write_rows(tmp_path / "test.jsonl", rows[35:40])
    task = load_task(str(train), str(val), str(test))
    assert_disjoint(task)
    assert (len(task.train), len(task.validation), len(task.test)) == (30, 5, 5)
    assert len(task.notes) == 2


def test_sentence_pairs_and_tsv(tmp_path):
    rows = [{"q": f"好{i}", "a": "不" * (i + 1), "y": str(i % 3)} for i in range(30)]
    task = load_task(str(write_rows(tmp_path / "pairs.tsv", rows)), columns=Columns("q", "a", "y"))
    assert task.has_pairs and task.label_names == ["0", "1", "2"]
    assert all(e.text_pair for e in task.train)


def test_train_examples_subsample_is_stratified_reproducible_and_leaves_evaluation_alone(tmp_path):
    task = load_task(str(write_rows(tmp_path / "data.csv", review_rows(300, labels=("a", "b", "c")))), split_seed=1)
    small = subsample_train(task, 31, seed=5)
    assert len(small.train) == 31 and keys(small.train) <= keys(task.train)
    assert small.validation == task.validation and small.test == task.test
    share = {k: sum(e.label == k for e in task.train) / len(task.train) for k in range(3)}
    assert all(abs(sum(e.label == k for e in small.train) - 31 * share[k]) < 1 for k in range(3))
    assert keys(subsample_train(task, 31, seed=5).train) == keys(small.train)
    assert keys(subsample_train(task, 31, seed=6).train) != keys(small.train)
    assert len(subsample_train(task, 3, seed=0).train) == 3  # the floor of one per label
    for bad in (2, len(task.train) + 1):
        with pytest.raises(InputError, match="--train-examples"):
            subsample_train(task, bad, seed=0)


def test_label_names_are_sorted_numerically_when_all_integers():
    assert sorted_label_names(["10", "2", "-1", "2"]) == ["-1", "2", "10"]
    assert sorted_label_names(["pos", "neg", "neutral"]) == ["neg", "neutral", "pos"]


def test_deduplicate_and_split_keep_every_row_once():
    rows = [Row(f"t{i % 50}", None, "x" if i % 2 else "y") for i in range(100)]
    kept, duplicates, conflicting = deduplicate(rows)
    # t_k occurs for i = k and k + 50, which have the same parity, so the same label: duplicates, no conflicts.
    assert (len(kept), duplicates, conflicting) == (50, 50, 0)
    parts = stratified_split(kept, seed=0)
    assert sorted(r.text for p in parts for r in p) == sorted(r.text for r in kept)


def test_length_bucketed_batches_cover_every_example_once():
    lengths = [random.Random(i).randint(3, 100) for i in range(1000)]
    batches = length_bucketed_batches(lengths, 16, random.Random(0), chunk_batches=5)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)
    # Within a chunk the batches are sorted by length, so a batch spans far fewer lengths than a random one.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 30
    order = [i for b in sorted_batches(lengths, 7) for i in b]
    assert sorted(order) == list(range(1000)) and [lengths[i] for i in order] == sorted(lengths)


def test_token_dropout_deletes_only_text_tokens():
    special = frozenset({0, 1, 2, 3, 4})
    ids, types = [2, 10, 11, 12, 3, 13, 14, 3], [0, 0, 0, 0, 0, 1, 1, 1]
    rng = random.Random(0)
    for _ in range(200):
        new_ids, new_types = drop_tokens(ids, types, 0.5, special, rng)
        assert [t for t in new_ids if t in special] == [2, 3, 3]
        assert len(new_ids) == len(new_types) and any(t not in special for t in new_ids)
        assert new_types == sorted(new_types)  # segment A then B
    data = EncodedSet([ids, ids[:5]], [types, types[:5]], torch.tensor([0, 1]).numpy())
    batch = collate(data, [0, 1], pad_id=0)
    assert batch["input_ids"].shape == (2, 8) and batch["attention_mask"].sum().item() == 13


# -- model and strategies -------------------------------------------------------------------------------------


def test_tiny_model_overfits_tiny_set(run_dir):
    """Random labels: only memorisation reaches 100%, so this checks that every part of the loop learns."""
    rows = review_rows(16, seed=1)
    labels = ["negative", "positive"] * 8
    random.Random(5).shuffle(labels)
    rows = [dict(r, label=label) for r, label in zip(rows, labels)]
    clf, pre, o = classifier_for(run_dir, batch_size=4, lr=3e-3)
    data = encoded(pre, rows)
    train_steps(clf, pre, o, data, epochs=15)
    report = TASKS["classification"].evaluate(clf, data, 8, pre.tokenizer.pad_token_id, ["negative", "positive"])
    assert report["accuracy"] == 1.0


@pytest.mark.parametrize("strategy, k", [("linear-probe", None), ("layer-fusion", None), ("freeze-bottom-k", 1),
                                         ("freeze-bottom-k", 0), ("full", None)])
def test_frozen_weights_do_not_move(run_dir, strategy, k):
    clf, pre, o = classifier_for(run_dir, strategy=strategy, freeze_layers=k, pooling="mean", weight_decay=0.1)
    before = snapshot(clf)
    train_steps(clf, pre, o, encoded(pre, review_rows(12)), epochs=1)
    after = snapshot(clf)
    L = clf.config.num_hidden_layers
    frozen_prefixes = {
        "full": (),
        "linear-probe": ("model.bert.embeddings.", "model.bert.encoder."),
        "layer-fusion": ("model.bert.embeddings.", "model.bert.encoder."),
        "freeze-bottom-k": ("model.bert.embeddings.", *(f"model.bert.encoder.layer.{i}." for i in range(k or 0))),
    }[strategy]
    for name, p in clf.named_parameters():
        if name.startswith("model.bert.pooler."):
            continue  # unused by mean pooling: no gradient either way
        unchanged = torch.equal(before[name], after[name])
        assert unchanged == name.startswith(frozen_prefixes), (name, unchanged)
    assert (ft.metrics.count_parameters(clf)["trainable"] < ft.metrics.count_parameters(clf)["total"]) == (
        strategy != "full")
    assert L == 2


def test_layer_fusion_weights_sum_to_one_and_learn(run_dir):
    clf, pre, o = classifier_for(run_dir, strategy="layer-fusion", pooling="cls", lr=1e-2)
    assert clf.mix is not None and clf.mix.weights.numel() == clf.config.num_hidden_layers + 1
    train_steps(clf, pre, o, encoded(pre, review_rows(16)), epochs=2)
    s = clf.mix.mixing_weights()
    assert torch.all(s > 0) and torch.allclose(s.sum(), torch.tensor(1.0))
    assert not torch.allclose(s, torch.full_like(s, 1 / s.numel()))  # moved away from the equal mix
    # The mix is gamma * the softmax-weighted sum of the hidden states.
    states = [torch.randn(2, 3, 32) for _ in range(s.numel())]
    expected = clf.mix.gamma * sum(w * h for w, h in zip(s, states))
    assert torch.allclose(clf.mix(states), expected, atol=1e-6)


def test_poolings(run_dir):
    clf, pre, _ = classifier_for(run_dir, pooling="pooler")
    clf.eval()
    batch = collate(encoded(pre, review_rows(5)), range(5), pre.tokenizer.pad_token_id)
    args = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    # pooler + no fusion is exactly BertForSequenceClassification.
    assert torch.allclose(clf(*args), clf.model(*args).logits)
    out = clf.model.bert(*args)
    clf.pooling = "cls"
    assert torch.allclose(clf(*args), clf.model.classifier(out.last_hidden_state[:, 0]), atol=1e-6)
    clf.pooling = "mean"
    m = batch["attention_mask"]
    manual = torch.stack([out.last_hidden_state[b, m[b].bool()].mean(0) for b in range(5)])
    assert torch.allclose(mean_pool(out.last_hidden_state, m), manual, atol=1e-6)


def test_unpadded_and_padded_models_agree(run_dir):
    clf, pre, _ = classifier_for(run_dir, pooling="mean")
    clf.eval()
    batch = collate(encoded(pre, review_rows(6)), range(6), pre.tokenizer.pad_token_id)
    args = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    clf.config.unpad = True
    unpadded = clf(*args)
    clf.config.unpad = False
    assert torch.allclose(unpadded, clf(*args), atol=1e-5)


def test_layer_lr_decay_and_weight_decay_groups(run_dir):
    clf, _, _ = classifier_for(run_dir)
    groups = ft.param_groups(clf, lr=1.0, weight_decay=0.01, layer_lr_decay=0.5)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(clf.named_parameters())
    assert lr_of[id(named["model.classifier.weight"])] == (1.0, 0.01)
    assert lr_of[id(named["model.classifier.bias"])] == (1.0, 0.0)
    assert lr_of[id(named["model.bert.encoder.layer.1.output.dense.weight"])] == (0.5, 0.01)
    assert lr_of[id(named["model.bert.encoder.layer.0.output.LayerNorm.weight"])] == (0.25, 0.0)
    assert lr_of[id(named["model.bert.embeddings.word_embeddings.weight"])] == (0.125, 0.01)


def test_schedule_warms_up_then_decays_to_zero():
    f = [lr_at(s, peak_lr=1.0, warmup_steps=4, total_steps=20) for s in range(21)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0 and f[20] == 0.0
    assert all(a >= b for a, b in zip(f[4:], f[5:]))


# -- the command ----------------------------------------------------------------------------------------------


def test_end_to_end_with_string_labels_and_seeds(run_dir, tmp_path, capsys):
    rows = review_rows(80, labels=("bad", "good", "meh"))
    path = write_rows(tmp_path / "data.jsonl", rows)
    out = tmp_path / "out"
    code = ft.main(["--init", str(run_dir), "--train", str(path), "--out", str(out), "--epochs", "2",
                    "--batch-size", "8", "--lr", "1e-3", "--seeds", "1", "2", "--strategy", "layer-fusion",
                    "--pooling", "mean", "--token-dropout", "0.1", "--patience", "1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["label_names"] == ["bad", "good", "meh"]
    assert set(results["runs"]) == {"1", "2"}
    assert results["summary"]["test"]["accuracy"]["n"] == 2
    test = results["runs"]["1"]["test"]
    assert set(test) >= {"loss", "accuracy", "macro_f1", "per_class", "confusion_matrix"}
    assert sum(map(sum, test["confusion_matrix"])) == results["sizes"]["test"]
    params = results["runs"]["1"]["parameters"]
    assert params["trainable"] < params["total"]
    for seed in (1, 2):
        d = out / f"seed-{seed}"
        assert (d / "head.safetensors").is_file() and (d / "tokenizer").is_dir()
        assert json.loads((d / "labels.json").read_text())["id2label"] == {"0": "bad", "1": "good", "2": "meh"}
        assert json.loads((d / "config.json").read_text())["id2label"] == {"0": "bad", "1": "good", "2": "meh"}
    assert "test, 2 seeds" in capsys.readouterr().out


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def tiny_run(run_dir, data, out, *more) -> int:
    return ft.main(["--init", str(run_dir), "--train", str(data), "--out", str(out), "--epochs", "1",
                    "--batch-size", "8", "--max-length", "24", *more])


def test_force_removes_only_the_entries_the_run_recorded(run_dir, tmp_path, capsys):
    """--force replaces a fine-tuning run by its marker's record: a user's seed-ideas.txt or seed-notes/ beside
    the seeds' directories is kept, and a name the new run would write that minibert did not is refused."""
    from minibert.rundir import RUN_MARKER, read_marker

    data = write_rows(tmp_path / "data.csv", review_rows(40))
    out = tmp_path / "out"
    assert tiny_run(run_dir, data, out, "--seeds", "0", "1") == 0
    assert set(read_marker(out)["entries"]) == {"args.json", "results.json", "seed-0", "seed-1"}
    (out / "seed-ideas.txt").write_text("mine")
    (out / "seed-notes").mkdir()
    (out / "seed-notes" / "a.txt").write_text("mine too")
    mine = {k: v for k, v in tree(out).items() if k.startswith(("seed-ideas", "seed-notes"))}
    assert tiny_run(run_dir, data, out, "--seeds", "2") == 2  # a run there: --resume or --force
    assert "--force" in capsys.readouterr().err
    assert tiny_run(run_dir, data, out, "--seeds", "2", "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([
        RUN_MARKER, "args.json", "results.json", "seed-ideas.txt", "seed-notes",  # seed-0/ and seed-1/ are gone
        "config.json", "model.safetensors", "finetune.json", "labels.json", "tokenizer"])
    assert {k: v for k, v in tree(out).items() if k in mine} == mine
    # A user's seed-7 is not one of the run's: a run with seed 7 does not overwrite it.
    (out / "seed-7").mkdir()
    (out / "seed-7" / "plan.txt").write_text("mine")
    before = tree(out)
    assert tiny_run(run_dir, data, out, "--seeds", "7", "8", "--force") == 2
    err = capsys.readouterr().err
    assert "seed-7" in err and "minibert did not write" in err
    assert tree(out) == before


def test_resume_takes_the_runs_options_and_refuses_changes(run_dir, tmp_path, capsys):
    data = write_rows(tmp_path / "data.csv", review_rows(40))
    out = tmp_path / "out"
    assert tiny_run(run_dir, data, out, "--seeds", "0", "1") == 0
    before = tree(out)
    capsys.readouterr()
    for changed, named in ((["--lr", "1e-2"], "--lr 0.01 (the run has 0.0005)"), (["--epochs", "2"], "--epochs"),
                           (["--seeds", "0", "1", "2"], "--seeds")):
        assert ft.main(["--out", str(out), "--resume", *changed]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --resume continues a run exactly") and named in err, err
    assert tree(out) == before
    # The same options again, or those that only say how to compute (--device, --eval-batch-size), continue it:
    # every seed is finished, so only the report is written again, with the same figures.
    results = json.loads((out / "results.json").read_text())
    assert tiny_run(run_dir, data, out, "--seeds", "0", "1", "--resume", "--device", "cpu",
                    "--eval-batch-size", "7") == 0
    assert "seed 1: finished before" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["runs"] == results["runs"] and again["summary"] == results["summary"]
    for argv, named in ((["--out", str(tmp_path / "none"), "--resume"], "no fine-tuning run to continue"),
                        (["--resume"], "--resume needs --out"),
                        (["--out", str(out), "--resume", "--force"], "contradict")):
        assert ft.main(argv) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_resume_starts_a_seed_over_when_its_saved_state_cannot_be_read(run_dir, tmp_path, capsys):
    """A seed with model files but no results.json (a save cut short) and a state.pt cut short: the files are not
    taken for a finished model, the state is named, and the seed is trained again from its start, which gives the
    same figures."""
    data = write_rows(tmp_path / "data.csv", review_rows(40))
    out = tmp_path / "out"
    assert tiny_run(run_dir, data, out, "--seeds", "0", "1", "--epochs", "2") == 0
    whole = json.loads((out / "results.json").read_text())
    (out / "seed-1" / "results.json").unlink()
    (out / "results.json").unlink()
    (out / "seed-1" / "checkpoint").mkdir()
    (out / "seed-1" / "checkpoint" / "state.pt").write_bytes(b"PK\x03\x04 cut short")
    capsys.readouterr()
    assert ft.main(["--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert "state.pt cannot be read" in captured.err and "starts over" in captured.err
    assert "seed 0: finished before" in captured.out
    again = json.loads((out / "results.json").read_text())
    for seed in ("0", "1"):
        a, b = whole["runs"][seed], again["runs"][seed]
        assert (a["validation"], a["test"], a["best_epoch"]) == (b["validation"], b["test"], b["best_epoch"])
    assert not (out / "seed-1" / "checkpoint").exists()


def test_a_run_that_saved_nothing_starts_over_and_one_in_use_is_refused(run_dir, tmp_path, capsys):
    """A directory left with only the marker (a run killed before its first epoch ended) is this command's to
    start over without --force; a directory whose lock a live process holds is refused, nothing changed."""
    from minibert.rundir import claim, inspect_out

    data = write_rows(tmp_path / "data.csv", review_rows(40))
    out = tmp_path / "out"
    claim(inspect_out(out, ft.FINETUNE_RUN), ft.FINETUNE_RUN, ["args.json"]).close()  # what the kill left
    assert tiny_run(run_dir, data, out) == 0
    assert "stopped before saving anything; starting it over" in capsys.readouterr().out
    assert (out / "results.json").is_file()
    held = claim(inspect_out(tmp_path / "busy", ft.FINETUNE_RUN), ft.FINETUNE_RUN, [])
    try:
        assert tiny_run(run_dir, data, tmp_path / "busy") == 2
        assert f"in use by process {os.getpid()}" in capsys.readouterr().err
    finally:
        held.close()


def test_from_scratch_uses_same_architecture_but_not_the_weights(run_dir):
    pre = ft.load_pretrained_encoder(run_dir, {"unpad": True, "unpad_attention": "repad"})
    torch.manual_seed(0)
    scratch = ft.build_classifier(pre, options(from_scratch=True), ["a", "b"])
    pretrained = ft.build_classifier(pre, options(), ["a", "b"])
    for clf in (scratch, pretrained):  # --unpad-attention reaches every attention layer
        assert clf.model.bert.encoder.layer[0].attention.self.unpad_attention == "repad"
    w = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(pretrained.model.bert.state_dict()[w], pre.encoder.state_dict()[w])
    assert not torch.equal(scratch.model.bert.state_dict()[w], pre.encoder.state_dict()[w])
    assert scratch.config.to_dict() == pretrained.config.to_dict()


@pytest.mark.parametrize("with_pooler", [False, True])
def test_init_from_a_hugging_face_directory(run_dir, tmp_path, with_pooler):
    """A local HF BERT dir (config.json, model.safetensors, vocab.txt): its encoder, its pooler if it has one."""
    from minibert import BertForMaskedLM, BertModel
    from minibert.checkpoint import load_pretrained
    from minibert.hf import save_hf

    source, _ = load_pretrained(run_dir, BertModel if with_pooler else BertForMaskedLM)
    hf_dir = tmp_path / "hf"
    save_hf(source, hf_dir)
    (hf_dir / "vocab.txt").write_bytes((run_dir / "tokenizer" / "vocab.txt").read_bytes())
    pre = ft.load_pretrained_encoder(hf_dir, {"unpad": True, "unpad_attention": "nested", "hidden_dropout_prob": 0.0})
    assert pre.kind == "huggingface" and pre.encoder.config.unpad and pre.encoder.config.hidden_dropout_prob == 0.0
    assert pre.encoder.encoder.layer[0].attention.self.unpad_attention == "nested"
    assert (pre.fresh == []) == with_pooler
    torch.manual_seed(0)
    clf = ft.build_classifier(pre, options(), ["a", "b"])
    ours = clf.model.bert.state_dict()
    for k, v in source.state_dict().items():
        k = k.removeprefix("bert.")
        if k in ours:
            assert torch.equal(ours[k], v), k
    out = tmp_path / "out"
    rows = write_rows(tmp_path / "d.csv", review_rows(30))
    assert ft.main(["--init", str(hf_dir), "--train", str(rows), "--out", str(out), "--epochs", "1",
                    "--strategy", "linear-probe"]) == 0
    assert json.loads((out / "results.json").read_text())["init_kind"] == "huggingface"


def test_latest_pretraining_run_is_found(tmp_path):
    make_pretrain_run(tmp_path, "pretrain-20240101-000000")
    newest = make_pretrain_run(tmp_path, "pretrain-20250101-000000")
    (tmp_path / "pretrain-20260101-000000").mkdir()  # started, no model yet
    assert ft.latest_pretraining_run(tmp_path) == newest


def test_help_explains_every_option():
    text = ft.build_parser().format_help()
    for flag in ("--init", "--from-scratch", "--out", "--epochs", "--max-length", "--batch-size", "--lr",
                 "--strategy", "--freeze-layers", "--pooling", "--layer-lr-decay", "--dropout", "--weight-decay",
                 "--warmup-ratio", "--patience", "--token-dropout", "--seeds", "--text-column",
                 "--text-pair-column", "--label-column", "--split-seed", "--train", "--validation", "--test", "--train-examples"):
        assert flag in text
    assert "(default: 3)" in text and "(default: mean)" in text


def test_no_pretraining_run_is_a_clear_error(tmp_path):
    result = run_cli("train.finetune", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "python -m train.pretrain" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_column_exits_2_naming_the_columns(tmp_path, run_dir):
    path = write_rows(tmp_path / "data.csv", [{"review": "好", "stars": "5"}] * 3)
    result = run_cli("train.finetune", "--init", str(run_dir), "--train", str(path), "--label-column", "stars",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "no text column 'text'" in result.stderr and "'review', 'stars'" in result.stderr
    assert "Traceback" not in result.stderr


def _bad_input_cases(tmp: Path) -> dict:
    rows = review_rows(30)
    good = write_rows(tmp / "good.csv", rows[:20])
    other = write_rows(tmp / "other.csv", rows[20:])
    empty = tmp / "empty.csv"
    empty.write_bytes(b"")
    header_only = tmp / "header.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    unseen = write_rows(tmp / "unseen.csv", [{"text": "很好很好", "label": "neutral"}])
    gbk = tmp / "gbk.csv"
    gbk.write_bytes("text,label\n好的,positive\n".encode() + "差劲,negative\n".encode("gbk"))
    xlsx = tmp / "x.xlsx"
    xlsx.write_bytes(b"PK")
    jsonl = write_rows(tmp / "missing.jsonl", [{"text": "好", "label": "a"}, {"body": "差", "label": "b"}])
    return {
        "missing jsonl key": (["--train", str(jsonl)], ["line 2", "no text column 'text'", "'body', 'label'"]),
        "empty file": (["--train", str(empty)], ["empty.csv", "empty"]),
        "header only": (["--train", str(header_only)], ["header.csv", "no labelled rows"]),
        "unseen label": (["--train", str(good), "--validation", str(unseen), "--test", str(other)],
                         ["'neutral'", "validation", "never occurs in the training data", "unseen.csv, line 2"]),
        "non-utf8": (["--train", str(gbk)], ["gbk.csv, line 3", "not valid UTF-8"]),
        "unknown suffix": (["--train", str(xlsx)], ["x.xlsx", "use a .csv, .tsv or .jsonl file"]),
        "freeze needs k": (["--strategy", "freeze-bottom-k"], ["--freeze-layers"]),
        "k too large": (["--strategy", "freeze-bottom-k", "--freeze-layers", "3"], ["between 0 and 2"]),
        "half the splits": (["--train", str(good), "--test", str(good)], ["--validation and --test"]),
        "bad init": (["--init", str(tmp)], ["neither a minibert run"]),
        "too many examples": (["--train", str(good), "--train-examples", "1000"], ["--train-examples 1000", "between 2"]),
    }


def test_bad_inputs_exit_2_with_a_clear_message(tmp_path, run_dir, capsys):
    for name, (args, expected) in _bad_input_cases(tmp_path).items():
        init = [] if "--init" in args else ["--init", str(run_dir)]
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        code = ft.main([*init, *args, "--out", str(out), "--epochs", "1"])
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert err.startswith("error: "), (name, err)
        for part in expected:
            assert part in err, (name, part, err)
        assert not out.exists(), name  # nothing written on bad input


# -- GPT-2 and T5 runs --------------------------------------------------------------------------------------


def make_lm_run(runs_dir: Path, kind: str) -> Path:
    """What `python -m train.pretrain --objective causal` (gpt2) or `--objective span` (t5) leaves: config.json with
    its model_type, model.safetensors, tokenizer/; a tiny random model on the helpers' character vocabulary."""
    from test_finetune_helpers import VOCAB

    from minibert import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration
    from minibert.gpt_t5_checkpoint import save_pretrained

    run = Path(runs_dir) / f"pretrain-{kind}"
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(VOCAB), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                           n_inner=64, bos_token_id=2, eos_token_id=3, pad_token_id=0))
    else:
        model = T5ForConditionalGeneration(T5Config(vocab_size=len(VOCAB) + 8, d_model=32, d_kv=16, d_ff=64,
                                                    num_layers=2, num_heads=2, eos_token_id=3))
    save_pretrained(model, run)
    (run / "tokenizer").mkdir()
    (run / "tokenizer" / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB), encoding="utf-8")
    return run


@pytest.fixture(scope="module", params=["gpt2", "t5"])
def lm_run(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, make_lm_run(tmp_path_factory.mktemp("lm-runs"), request.param)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_gpt_and_t5_runs_fine_tune_end_to_end_and_predict(lm_run, pooling, tmp_path, capsys):
    from safetensors.torch import load_file

    from train import predict

    kind, run = lm_run
    path = write_rows(tmp_path / "data.csv", review_rows(60, labels=("bad", "good")))
    out = tmp_path / "out"
    assert ft.main(["--init", str(run), "--train", str(path), "--out", str(out), "--epochs", "3", "--batch-size", "8",
                    "--lr", "3e-3", "--dropout", "0", "--pooling", pooling]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model_type"] == kind and results["label_names"] == ["bad", "good"]
    assert results["sizes"] == {"train": 48, "validation": 6, "test": 6}  # the same 80/10/10 split as BERT's
    assert set(results["test"]) >= {"loss", "accuracy", "macro_f1", "per_class", "confusion_matrix"}
    history = [e["train_loss"] for e in results["epochs"]]
    assert history[-1] < history[0]  # it learns
    assert json.loads((out / "finetune.json").read_text())["pooling"] == pooling
    assert json.loads((out / "config.json").read_text())["model_type"] == kind
    keys = set(load_file(out / "model.safetensors"))
    assert {"classifier.weight", "classifier.bias"} <= keys
    assert not any(k.startswith(("decoder.", "lm_head.")) for k in keys)  # T5 keeps its encoder alone
    # The saved run predicts what the run measured, through the class and the command.
    task = load_task(str(path))
    predictor = predict.Predictor(out)
    assert predictor.label_names == ["bad", "good"]
    answers = predictor.predict([e.text for e in task.test])
    accuracy = sum(a["label"] == task.label_names[e.label] for a, e in zip(answers, task.test)) / len(task.test)
    assert accuracy == pytest.approx(results["test"]["accuracy"])
    capsys.readouterr()
    assert predict.main([str(out), "很好很满意", "太差了", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["label"] in ("bad", "good") for r in printed] == [True, True]
    assert predict.main([str(out), "--export-hf", str(tmp_path / "hf")]) == 2
    assert "no Hugging Face BertForSequenceClassification form" in capsys.readouterr().err


def test_a_gpt_or_t5_classifier_starts_from_the_runs_body(lm_run):
    from minibert.gpt_t5_checkpoint import load_pretrained as load_lm

    kind, run = lm_run
    pre = ft.load_pretrained_encoder(run, {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.3,
                                           "classifier_dropout": 0.2, "unpad": True, "unpad_attention": "rows"})
    assert pre.family == kind and pre.fresh == []
    dropouts = {"gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"), "t5": ("dropout_rate",)}[kind]
    assert [getattr(pre.encoder.config, f) for f in dropouts] == {"gpt2": [0.2, 0.2, 0.3], "t5": [0.2]}[kind]
    torch.manual_seed(0)
    pretrained = ft.build_classifier(pre, options(), ["a", "b"])
    scratch = ft.build_classifier(pre, options(from_scratch=True), ["a", "b"])
    lm = load_lm(run).state_dict()
    body = {k: v for k, v in pretrained.model.state_dict().items() if not k.startswith("classifier.")}
    assert body and all(torch.equal(v, lm[k]) for k, v in body.items())  # every body tensor, by its own name
    w = "transformer.h.0.attn.c_attn.weight" if kind == "gpt2" else "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert not torch.equal(scratch.model.state_dict()[w], lm[w])
    assert scratch.model.state_dict().keys() == pretrained.model.state_dict().keys()


def test_gpt_and_t5_bodies_freeze_and_decay_by_depth(lm_run):
    kind, run = lm_run
    embedding = "model.transformer.wte.weight" if kind == "gpt2" else "model.shared.weight"
    block = "model.transformer.h.{}.mlp.c_fc.weight" if kind == "gpt2" else \
        "model.encoder.block.{}.layer.1.DenseReluDense.wi.weight"
    for strategy, k, trainable in [("linear-probe", None, set()), ("freeze-bottom-k", 1, {block.format(1)}),
                                   ("full", None, {embedding, block.format(0), block.format(1)})]:
        clf, pre, o = classifier_for(run, strategy=strategy, freeze_layers=k)
        before = snapshot(clf)
        train_steps(clf, pre, o, encoded(pre, review_rows(12)), epochs=1)
        after = snapshot(clf)
        for name in (embedding, block.format(0), block.format(1), "model.classifier.weight"):
            moved = not torch.equal(before[name], after[name])
            assert moved == (name in trainable or name == "model.classifier.weight"), (strategy, name)
    clf, _, _ = classifier_for(run)
    groups = ft.param_groups(clf, lr=1.0, weight_decay=0.01, layer_lr_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(clf.named_parameters())
    assert [lr_of[id(named[n])] for n in ("model.classifier.weight", block.format(1), block.format(0), embedding)] \
        == [1.0, 0.5, 0.25, 0.125]


def test_gpt_and_t5_refuse_what_only_bert_has(lm_run, tmp_path, capsys):
    kind, run = lm_run
    path = write_rows(tmp_path / "data.csv", review_rows(30))
    cases = [(["--strategy", "layer-fusion"], "layer-fusion mixes the layer outputs of BERT's encoder"),
             (["--pooling", "pooler"], "--pooling pooler is not for a")]
    if kind == "gpt2":
        cases.append((["--pooling", "cls"], "choose mean, last"))
    for args, expected in cases:
        out = tmp_path / "out"
        assert ft.main(["--init", str(run), "--train", str(path), "--out", str(out), "--epochs", "1", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, err
        assert not out.exists()


def test_last_token_pooling_picks_the_last_real_token_and_padding_cannot_change_the_logits(lm_run):
    kind, run = lm_run
    clf, pre, _ = classifier_for(run, pooling="last")
    clf.eval()
    rows = review_rows(5)
    data = encoded(pre, rows)
    batch = collate(data, range(5), pre.tokenizer.pad_token_id)  # right-padded to the longest row
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert not bool(mask.all())  # some rows are padded
    with torch.no_grad():
        logits = clf(ids, mask)
        h = clf.model.token_states(ids, mask)
        lengths = mask.sum(dim=1)
        manual = clf.model.classifier(torch.stack([h[b, lengths[b] - 1] for b in range(5)]))
        assert torch.equal(logits, manual)  # the last real token: [SEP], not a pad
        other_pads = ids.masked_fill(mask == 0, 7)  # whatever the padding holds
        assert torch.equal(clf(other_pads, mask), logits)
        for b in range(5):  # each row alone, with no padding at all
            alone = ids[b : b + 1, : lengths[b]]
            torch.testing.assert_close(clf(alone, torch.ones_like(alone)), logits[b : b + 1], atol=1e-5, rtol=1e-5)


@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6), left=st.booleans())
def test_last_token_pool_takes_each_rows_last_real_position(lengths, left):
    from minibert.pooling import last_token_pool

    T = max(lengths) + 1
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        if left:
            mask[b, T - n:] = 1
        else:
            mask[b, :n] = 1
    h = torch.randn(len(lengths), T, 3)
    pooled = last_token_pool(h, mask)
    for b, n in enumerate(lengths):
        assert torch.equal(pooled[b], h[b, T - 1 if left else n - 1])
