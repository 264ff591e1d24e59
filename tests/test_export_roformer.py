"""train.predict --export-hf beyond BERT's own classifier: a rotary model as transformers' RoFormerModel, any
weightless pooling as the encoder plus its head, and the refusals; the logits of minibert and of transformers
(computed with the very code the export prints) agree on padded fp32 batches."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from minibert.errors import InputError
from minibert.heads import BertForSequenceClassification
from minibert.hf_roformer import POSITIONS_KEY, rotary_table, to_roformer_config, to_roformer_state_dict
from minibert.rotary import rotate_padded
from minibert.rundir import RUN_MARKER
from test_finetune_helpers import make_pretrain_run, review_rows, tiny_config, write_rows
from train import finetune as ft
from train import predict
from train.batches import collate, load_tokenizer
from train.classifier import SequenceClassifier, load_classifier, save_classifier

transformers = pytest.importorskip("transformers")

LABELS = ["bad", "so-so", "good"]
CODE_START = "these lines give the logits:\n\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return make_pretrain_run(tmp_path_factory.mktemp("tok") / "runs") / "tokenizer"


def random_config(seed: int, **overrides):
    """A tiny random rotary BERT config: sizes, activation, LayerNorm eps, attention path and labels drawn."""
    rng = random.Random(seed)
    heads = rng.choice([1, 2, 4])
    num_labels = rng.choice([1, 2, 3])
    fields = {
        "hidden_size": heads * rng.choice([4, 8, 16]), "num_attention_heads": heads,
        "num_hidden_layers": rng.randint(1, 3), "intermediate_size": rng.choice([16, 48]),
        "hidden_act": rng.choice(["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"]),
        "layer_norm_eps": rng.choice([1e-12, 1e-5]), "type_vocab_size": rng.choice([1, 2, 3]),
        "attn_impl": rng.choice(["sdpa", "math"]), "unpad": rng.choice([False, True]), "unpad_attention": "rows",
        "position_embedding_type": "rotary", "initializer_range": 0.3,  # large weights: attention far from uniform
        "num_labels": num_labels, "id2label": dict(enumerate(LABELS[:num_labels])),
    }
    return tiny_config(**{**fields, **overrides})


def make_run(root: Path, tokenizer_dir: Path, config, pooling: str, layer_fusion: bool = False,
             seed: int = 0) -> Path:
    """A fine-tuned run directory (what train.finetune writes) holding a random classifier."""
    torch.manual_seed(seed)
    classifier = SequenceClassifier(BertForSequenceClassification(config), pooling, layer_fusion)
    if classifier.mix is not None:
        torch.nn.init.normal_(classifier.mix.weights)
    run = root / f"ft-{pooling}-{seed}"
    save_classifier(classifier, run, load_tokenizer(tokenizer_dir), {"max_length": 64, "text_pair": False})
    return run


def padded_batch(seed: int, vocab_size: int, type_vocab_size: int, batch: int = 4, width: int = 13):
    """Random ids, right-padded to `width` with rows of different lengths (one full), and random segments."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([width, 1, 5, width - 3][:batch])
    mask = (torch.arange(width)[None] < lengths[:, None]).long()  # (B, T)
    ids = torch.randint(5, vocab_size, (batch, width), generator=g) * mask  # pads are id 0
    types = torch.randint(0, type_vocab_size, (batch, width), generator=g) * mask
    return ids, mask, types


def export(run: Path, out: Path, capsys) -> str:
    """Run --export-hf; the code it printed for the encoder + head (or "" for an exact class)."""
    capsys.readouterr()
    assert predict.main([str(run), "--export-hf", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"exported to {out}")
    return err.split(CODE_START, 1)[1] if CODE_START in err else ""


def head_logits(code: str, ids, mask, types) -> torch.Tensor:
    """The logits the printed transformers code computes for these (B, T) ids (its `classify`)."""
    scope = {"texts": ["好"]}
    exec(compile(code, "<printed by --export-hf>", "exec"), scope)
    return scope["classify"](ids, mask, types)


def minibert_logits(run: Path, ids, mask, types) -> torch.Tensor:
    classifier, _ = load_classifier(run)
    with torch.no_grad():
        return classifier(ids, mask, types)


# -- the conventions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_size", [2, 8, 64])
def test_the_rotary_table_is_roformers_and_turns_queries_and_keys_the_same_way(head_size):
    from transformers.models.roformer.modeling_roformer import (RoFormerSelfAttention,
                                                                RoFormerSinusoidalPositionalEmbedding)

    ours = rotary_table(512, head_size)  # (P, D)
    theirs = RoFormerSinusoidalPositionalEmbedding(512, head_size).create_weight()  # transformers' float64, rounded
    # Same theta, same [sin | cos] layout: they differ only by the float32 rounding of the angles t theta_i
    # (about 2e-5 at t = 511 for D = 64), which grows with t; a wrong theta or layout is off by O(1).
    t = torch.arange(512.0)[:, None]  # (P, 1)
    assert ((ours - theirs).abs() <= 2 * torch.finfo(torch.float32).eps * t + 1e-6).all()
    q, k = torch.randn(2, 3, 2, 40, head_size).unbind(0)  # (B, H, T, D) each
    expected_q, expected_k = RoFormerSelfAttention.apply_rotary_position_embeddings(ours[None, None, :40], q, k)
    got_q, got_k = rotate_padded(q, k)  # minibert's rotation, with no permutation of W_q or W_k: bit for bit
    assert torch.equal(got_q, expected_q) and torch.equal(got_k, expected_k)


def test_the_converters_refuse_what_roformer_cannot_hold():
    with pytest.raises(InputError, match="norm_first"):
        to_roformer_config(random_config(0, norm_first=True))
    with pytest.raises(InputError, match="'absolute'"):
        to_roformer_config(tiny_config())
    config = random_config(0)
    state = BertForSequenceClassification(config).state_dict()
    converted = to_roformer_state_dict(state, config)
    assert POSITIONS_KEY in converted and not any(k.startswith(("pooler.", "classifier.")) for k in converted)
    with pytest.raises(InputError, match="bert.encoder.extra.weight|encoder.extra.weight"):
        to_roformer_state_dict({**state, "bert.encoder.extra.weight": torch.zeros(1)}, config)


# -- encoder + head -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_a_rotary_model_exports_as_roformer_and_its_head_with_the_same_logits(seed, tokenizer_dir, tmp_path,
                                                                              capsys):
    config = random_config(seed)
    pooling = ["mean", "cls", "last"][seed % 3]
    run = make_run(tmp_path, tokenizer_dir, config, pooling, seed=seed)
    out = tmp_path / "hf"
    code = export(run, out, capsys)
    assert "RoFormerModel.from_pretrained" in code
    hf, info = transformers.RoFormerModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "roformer"
    assert hf.config.id2label == dict(enumerate(LABELS[:config.num_labels]))
    head = json.loads((out / "minibert_head.json").read_text())
    assert head["pooling"] == pooling and head["encoder"] == "RoFormerModel"
    assert head["id2label"] == {str(i): name for i, name in enumerate(LABELS[:config.num_labels])}
    assert (out / "tokenizer" / "vocab.txt").is_file()
    ids, mask, types = padded_batch(seed, config.vocab_size, config.type_vocab_size)
    ours, theirs = minibert_logits(run, ids, mask, types), head_logits(code, ids, mask, types)
    assert ours.shape == theirs.shape == (4, config.num_labels)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours, theirs)
    # Exporting again into the same directory is allowed (an earlier export is overwritten).
    assert export(run, out, capsys) == code


def test_the_default_fine_tuned_model_exports(tmp_path, capsys):
    """`train.finetune` with its defaults (mean pooling) on a rotary pretraining run: exported, the same logits."""
    make_pretrain_run(tmp_path / "runs", position_embedding_type="rotary")
    write_rows(tmp_path / "data.csv", review_rows(40, labels=LABELS[::2]))
    run = tmp_path / "ft-default"
    assert ft.main(["--runs-dir", str(tmp_path / "runs"), "--train", str(tmp_path / "data.csv"), "--out", str(run),
                    "--epochs", "1", "--batch-size", "8"]) == 0
    assert json.loads((run / "finetune.json").read_text())["pooling"] == "mean"
    code = export(run, tmp_path / "hf", capsys)
    predictor = predict.Predictor(run)
    data = predictor.encode(["很好很满意的东西", "差", "物流太慢了不满意质量也差"])
    batch = collate(data, range(3), predictor.tok.pad_token_id)
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    assert mask.sum(1).unique().numel() == 3  # padded rows
    assert torch.allclose(minibert_logits(run, ids, mask, types), head_logits(code, ids, mask, types), atol=1e-5,
                          rtol=0)


def test_a_bert_with_mean_pooling_exports_as_bert_model_and_its_head(tokenizer_dir, tmp_path, capsys):
    config = random_config(3, position_embedding_type="absolute")
    run = make_run(tmp_path, tokenizer_dir, config, "mean")
    code = export(run, tmp_path / "hf", capsys)
    assert "BertModel.from_pretrained" in code
    _, info = transformers.BertModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask, types = padded_batch(3, config.vocab_size, config.type_vocab_size)
    assert torch.allclose(minibert_logits(run, ids, mask, types), head_logits(code, ids, mask, types), atol=1e-5,
                          rtol=0)


# -- the exact class ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_a_bert_with_pooler_pooling_still_exports_as_bert_for_sequence_classification(seed, tokenizer_dir, tmp_path,
                                                                                      capsys):
    config = random_config(seed, position_embedding_type="absolute")
    run = make_run(tmp_path, tokenizer_dir, config, "pooler", seed=seed)
    out = tmp_path / "hf"
    make_run(tmp_path, tokenizer_dir, config, "mean", seed=seed)  # an earlier encoder + head export, same directory
    export(tmp_path / f"ft-mean-{seed}", out, capsys)
    assert export(run, out, capsys) == ""
    assert not (out / "classifier.safetensors").exists() and not (out / "minibert_head.json").exists()
    hf, info = transformers.BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask, types = padded_batch(seed, config.vocab_size, config.type_vocab_size)
    with torch.no_grad():
        theirs = hf.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert torch.allclose(minibert_logits(run, ids, mask, types), theirs, atol=1e-5, rtol=0)


# -- refusals -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,pooling,fusion,message", [
    ({}, "mean", True, "--strategy layer-fusion"),
    ({"norm_first": True}, "mean", False, "norm_first=True"),
    ({}, "pooler", False, "--pooling pooler"),
    ({"position_embedding_type": "sinusoidal"}, "mean", False, "sinusoidal positions"),
])
def test_what_cannot_be_exported_exactly_is_refused(overrides, pooling, fusion, message, tokenizer_dir, tmp_path,
                                                    capsys):
    run = make_run(tmp_path, tokenizer_dir, random_config(1, **overrides), pooling, layer_fusion=fusion)
    capsys.readouterr()
    assert predict.main([str(run), "--export-hf", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "hf").exists()


# -- the export directory -----------------------------------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_directory_of_the_users_files_is_refused_before_the_model_is_loaded_and_left_as_it_was(tokenizer_dir,
                                                                                                  tmp_path, capsys):
    """Files named as an export's (config.json, model.safetensors) are the user's unless the marker says otherwise:
    nothing is overwritten, whatever the names."""
    run = make_run(tmp_path, tokenizer_dir, random_config(0), "mean")
    users = tmp_path / "my-model"
    users.mkdir()
    (users / "config.json").write_text('{"model_type": "bert", "mine": true}\n')
    (users / "model.safetensors").write_bytes(b"\x00weights of my own\xff")
    before = snapshot(users)
    for run_dir in (run, tmp_path / "no-such-run"):  # refused before the run is even read
        capsys.readouterr()
        assert predict.main([str(run_dir), "--export-hf", str(users)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --export-hf {users} ") and "nothing in it was changed" in err, err
        assert snapshot(users) == before
    # The fine-tuned run itself is no export: refused, untouched.
    before = snapshot(run)
    assert predict.main([str(run), "--export-hf", str(run)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --export-hf {run} ")
    assert snapshot(run) == before


def test_a_re_export_replaces_what_the_earlier_one_wrote_and_nothing_else(tokenizer_dir, tmp_path, capsys):
    config = random_config(2, position_embedding_type="absolute")
    out = tmp_path / "hf"
    export(make_run(tmp_path, tokenizer_dir, config, "mean", seed=1), out, capsys)
    marker = json.loads((out / RUN_MARKER).read_text())
    assert marker["kind"] == "hf-export"
    assert set(marker["entries"]) == {p.name for p in out.iterdir()} - {RUN_MARKER}
    assert {"classifier.safetensors", "tokenizer.json", "tokenizer"} <= set(marker["entries"])
    (out / "README.md").write_text("my notes on this model\n")
    (out / "eval").mkdir()
    (out / "eval" / "scores.txt").write_text("0.91\n")
    mine = {k: v for k, v in snapshot(out).items() if k in ("README.md", "eval/scores.txt")}
    run = make_run(tmp_path, tokenizer_dir, config, "pooler", seed=2)
    assert export(run, out, capsys) == ""  # BertForSequenceClassification now: no head files
    assert not (out / "classifier.safetensors").exists() and not (out / "minibert_head.json").exists()
    assert {k: v for k, v in snapshot(out).items() if k in mine} == mine
    assert set(json.loads((out / RUN_MARKER).read_text())["entries"]) == (
        {p.name for p in out.iterdir()} - {RUN_MARKER, "README.md", "eval"})
    hf = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    ids, mask, types = padded_batch(2, config.vocab_size, config.type_vocab_size)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert torch.allclose(minibert_logits(run, ids, mask, types), theirs, atol=1e-5, rtol=0)
