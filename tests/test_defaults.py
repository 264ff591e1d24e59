"""Each default has one home: the command lines take theirs from the constants the library uses, and a run records
every setting that can change its result.

A default written twice drifts: the library's MLM once masked 15% where the command masked 30%. These tests read the
defaults where they are used (dataclass fields, function signatures, the parsers) and ask that they agree.
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import torch

from minibert.electra import DISCRIMINATOR_WEIGHT, GENERATOR_SIZE, ElectraForPreTraining
from tokenizer import SentencePieceTokenizer
from tokenizer.config import VOCAB_SIZE
from train import optim, pretrain
from train.pretrain_options import PretrainArgs
from train.mlm import MLM_PROBABILITY, mask_tokens
from train.electra import ReplacedTokenDetection
from train.mlm import MaskedLM
from train.objectives import make_objective


def default_of(function, name: str):
    return inspect.signature(function).parameters[name].default


def field_default(cls, name: str):
    return {f.name: f for f in dataclasses.fields(cls)}[name].default


def test_the_masking_fraction_is_the_commands_and_the_librarys():
    args = PretrainArgs()
    assert args.mlm_probability == MLM_PROBABILITY
    assert default_of(mask_tokens, "mlm_probability") == MLM_PROBABILITY
    assert default_of(make_objective, "mlm_probability") == MLM_PROBABILITY
    assert field_default(MaskedLM, "mlm_probability") == MLM_PROBABILITY


def test_electras_settings_have_one_value_each():
    args = PretrainArgs()
    for where in (args.generator_size, default_of(make_objective, "generator_size"),
                  field_default(ReplacedTokenDetection, "generator_size"),
                  default_of(ElectraForPreTraining.__init__, "generator_size")):
        assert where == GENERATOR_SIZE
    for where in (args.discriminator_weight, default_of(make_objective, "discriminator_weight"),
                  field_default(ReplacedTokenDetection, "discriminator_weight")):
        assert where == DISCRIMINATOR_WEIGHT


def test_the_vocabulary_size_has_one_value():
    import tokenizer.cli

    assert PretrainArgs().vocab_size == VOCAB_SIZE
    assert default_of(SentencePieceTokenizer.train, "vocab_size") == VOCAB_SIZE
    assert default_of(SentencePieceTokenizer.train_with_stats, "vocab_size") == VOCAB_SIZE
    assert tokenizer.cli.parse_args(["--input", "x.txt", "--out", "t"]).vocab_size == VOCAB_SIZE


def test_the_optimiser_takes_its_settings_from_the_command():
    """make_adamw has no defaults of its own: what a run uses is what its options say, and so what args.json holds."""
    for name in ("betas", "eps"):
        assert default_of(optim.make_adamw, name) is inspect.Parameter.empty
    args = PretrainArgs(adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-7)
    model = torch.nn.Linear(2, 2)
    adamw = optim.make_adamw(model, args.lr, args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon)
    assert all(g["betas"] == (0.8, 0.95) and g["eps"] == 1e-7 for g in adamw.param_groups)


def test_a_default_runs_args_json_records_every_option(tmp_path):
    """Every option of the command, the optimiser's betas and epsilon included, is in the run's args.json with the
    value the run used (a resumed run takes them back from there)."""
    from train.builtin_data import people_daily_lines

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(people_daily_lines()[:60]) + "\n", encoding="utf-8")
    SentencePieceTokenizer.train(corpus, 2000, tmp_path / "tok", model_type="char", verbose=False)
    out = tmp_path / "run"
    assert pretrain.main(["--corpus", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--out", str(out),
                          "--set", "num_hidden_layers=1", "hidden_size=32", "num_attention_heads=2",
                          "intermediate_size=64", "--max-seq-length", "32", "--batch-size", "4", "--max-steps", "1",
                          "--no-progress", "--eval-batches", "1"]) == 0
    recorded = json.loads((out / "args.json").read_text(encoding="utf-8"))
    options = {f.name for f in dataclasses.fields(PretrainArgs)}
    assert options <= set(recorded)
    defaults = PretrainArgs()
    for name in ("adam_beta1", "adam_beta2", "adam_epsilon", "mlm_probability", "weight_decay", "max_grad_norm"):
        assert recorded[name] == getattr(defaults, name), name


def test_the_default_fine_tuning_length_fits_the_default_model(tmp_path, capsys):
    """Without --max-length an example gets every position the model has: the default pipeline prints no
    'capped' warning, and an explicit longer --max-length is capped with one."""
    from test_finetune_helpers import make_pretrain_run, review_rows, write_rows
    from train import finetune

    assert finetune.Options().max_length is None
    run = make_pretrain_run(tmp_path / "runs", max_position_embeddings=PretrainArgs().max_seq_length)
    data = write_rows(tmp_path / "reviews.csv", review_rows(40))
    base = ["--init", str(run), "--train", str(data), "--epochs", "1", "--batch-size", "8"]
    assert finetune.main([*base, "--out", str(tmp_path / "default")]) == 0
    assert "capped" not in capsys.readouterr().err
    recorded = json.loads((tmp_path / "default" / "finetune.json").read_text(encoding="utf-8"))
    assert recorded["max_length"] == PretrainArgs().max_seq_length
    assert finetune.main([*base, "--out", str(tmp_path / "longer"), "--max-length", "512"]) == 0
    assert "--max-length 512 capped at the model's max_position_embeddings, 128" in capsys.readouterr().err
