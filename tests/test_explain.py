"""minibert.explain: its numbers are the model's own, its SGD step lowers the loss, and its heatmaps, worked example
(docs/MATH.md) and command line work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minibert import BertConfig, BertForMaskedLM, InputError
from minibert.checkpoint import save_pretrained
from minibert.explain import DOCUMENT_IDS, TOY_MASK_ID, explain, main, plot_attention, render, toy_model
from minibert.rotary import BASE, rotary_angles, rotate_padded
from minibert.explain.worked_example import DOCUMENT, REFRESH, section_diff

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def toy():
    return toy_model(seed=0)


def forward(model, ids, labels=None):
    with torch.no_grad():
        return model(torch.tensor([ids]), labels=labels, output_hidden_states=True, output_attentions=True)


# --- the numbers are the model's -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer,head", [(0, 0), (1, 1)])
def test_numbers_equal_the_forward_pass(toy, layer, head):
    e = explain(toy, DOCUMENT_IDS, layer=layer, head=head)
    assert e.all_checks_pass, {k: c for k, c in e.checks.items() if not c.ok}
    assert e.model_ids == [1, 2, 3, 4, 5, TOY_MASK_ID, 7, 8, 9, 10]  # the middle position is masked
    assert e.label == 6
    labels = torch.full((1, 10), -100)
    labels[0, 5] = 6
    out = forward(toy, e.model_ids, labels)
    W = toy.bert.embeddings.word_embeddings.weight.detach()
    torch.testing.assert_close(e.word, W[e.model_ids])
    torch.testing.assert_close(e.one_hot @ e.W, e.word)
    torch.testing.assert_close(e.embeddings, out.hidden_states[0][0])
    torch.testing.assert_close(e.hidden_states, torch.stack([h[0] for h in out.hidden_states]))
    torch.testing.assert_close(e.layer_input, out.hidden_states[layer][0])
    torch.testing.assert_close(e.layer_output, out.hidden_states[layer + 1][0])
    torch.testing.assert_close(e.layer_probs, out.attentions[layer][0])
    torch.testing.assert_close(e.probs, out.attentions[layer][0, head])
    torch.testing.assert_close(e.logits, out.logits[0, 5])
    torch.testing.assert_close(e.vocab_probs, out.logits[0, 5].softmax(-1))
    assert e.loss_before == pytest.approx(out.loss.item(), rel=1e-12)
    # the top-5 are the five largest probabilities, most probable first
    top_p, top_i = out.logits[0, 5].softmax(-1).topk(5)
    assert [i for i, _, _ in e.top] == top_i.tolist()
    assert [p for _, _, p in e.top] == pytest.approx(top_p.tolist())


def test_softmax_rows_sum_to_one(toy):
    e = explain(toy, [3, 1, 4, 1, 5, 9, 2, 6], layer=1, head=0, mask_position=2)
    torch.testing.assert_close(e.probs.sum(-1), torch.ones(8, dtype=e.probs.dtype))
    torch.testing.assert_close(e.layer_probs.sum(-1), torch.ones(2, 8, dtype=e.probs.dtype))
    assert (e.probs >= 0).all()


def test_sgd_step_lowers_the_loss_and_leaves_the_model_alone(toy):
    before = {n: p.detach().clone() for n, p in toy.named_parameters()}
    toy.train()
    e = explain(toy, DOCUMENT_IDS, lr=1e-3)
    assert toy.training  # mode restored
    assert e.loss_after < e.loss_before
    torch.testing.assert_close(e.param_after, e.param_before - 1e-3 * e.param_grad)
    for n, p in toy.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.grad is None, n
    toy.eval()


def test_other_configs_float32_pre_ln_sdpa_sparse_unpad():
    """A float32 model with every switch on: the checks hold on the last layer, including pre-LN's final norm."""
    config = BertConfig(vocab_size=20, hidden_size=12, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=24, max_position_embeddings=16, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, attn_impl="sdpa", norm_first=True,
                        sparse_prediction=True, unpad=True)
    torch.manual_seed(1)
    model = BertForMaskedLM(config)
    e = explain(model, [2, 7, 11, 4, 19, 3], layer=1, head=2, mask_position=4, label=5, lr=1e-3,
                mask_token_id=1)
    assert e.all_checks_pass, {k: c for k, c in e.checks.items() if not c.ok}
    assert e.loss_after < e.loss_before
    model.eval()
    out = forward(model, e.model_ids)
    torch.testing.assert_close(e.logits, out.logits[0, 4])
    torch.testing.assert_close(e.hidden_states[-1], out.hidden_states[-1][0])


def test_render_prints_every_stage_and_check(toy):
    e = explain(toy, DOCUMENT_IDS)
    text = render(e)
    for formula in ("one_hot(word_index) @ W", "P[t]", "S[segment_id]", "LayerNorm(x_word + x_pos + x_seg)",
                    "Q_0 K_0^T / sqrt(D)", "softmax(S + M)", "GELU", "-log p[label]", "param - lr * grad"):
        assert formula in text, formula
    assert text.count("matches the model: yes") == len(e.checks)
    assert "NO" not in text
    assert f"{e.loss_before:.4f} -> after {e.loss_after:.4f}" in text


def test_tokens_are_shown(toy):
    e = explain(toy, [1, 2, 3], tokens=["a", "b", "c"], id_to_text=lambda i: f"w{i}", mask_position=0)
    assert e.model_tokens == ["[MASK]", "b", "c"]
    assert e.label_text == "w1"
    assert all(text == f"w{i}" for i, text, _ in e.top)


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    (dict(input_ids=[1, 2, 16]), "token id 16 at position 2 is out of range"),
    (dict(input_ids=[1, -1]), "token id -1"),
    (dict(input_ids=[]), "empty"),
    (dict(input_ids=list(range(1, 11)) * 4), "max_position_embeddings"),
    (dict(layer=2), "layer 2 is out of range"),
    (dict(head=-1), "head -1 is out of range"),
    (dict(mask_position=10), "mask position 10 is out of range"),
    (dict(label=16), "label 16 is out of range"),
    (dict(lr=0.0), "learning rate"),
    (dict(tokens=["a"]), "1 tokens for 10 input ids"),
])
def test_bad_input_raises_input_error(toy, kwargs, message):
    kwargs = {"input_ids": DOCUMENT_IDS, **kwargs}
    with pytest.raises(InputError, match=message):
        explain(toy, **kwargs)


# --- heatmaps --------------------------------------------------------------------------------------------------


def test_heatmaps_are_valid_pngs_one_per_head(toy, tmp_path):
    import matplotlib.image

    e = explain(toy, DOCUMENT_IDS, layer=1)
    paths = plot_attention(e, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["attention_layer1_head0.png", "attention_layer1_head1.png"]
    pngs = [p.name for p in (tmp_path / "plots").iterdir() if p.suffix == ".png"]
    assert sorted(pngs) == sorted(p.name for p in paths)  # beside them only the marker (minibert.rundir)
    assert {p.name for p in (tmp_path / "plots").iterdir()} - set(pngs) == {".minibert-run"}
    for p in paths:
        assert p.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(p)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# --- docs/MATH.md ----------------------------------------------------------------------------------------------


def test_worked_example_in_docs_matches_the_code():
    diff = section_diff(DOCUMENT)
    assert not diff, f"docs/MATH.md's worked example is out of date; refresh it with\n    {REFRESH}\n\n{diff}"


# --- command line ----------------------------------------------------------------------------------------------


def test_cli_runs():
    """One real process (the others call main() in-process: an interpreter start costs seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "minibert.explain", "--ids", "1", "2", "3", "4", "5"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "model input_ids (B, T) = (1, 5): 1 2 15 4 5" in p.stdout
    assert "matches the model: NO" not in p.stdout and "matches the model: yes" in p.stdout


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--ids", "--run", "--layer", "--head", "--mask-position", "--label", "--lr", "--seed", "--plot",
                   "--markdown"):
        assert option in out


@pytest.mark.parametrize("argv,message", [
    (["--ids", "1", "2", "99"], "token id 99 at position 2 is out of range"),
    (["--layer", "5"], "layer 5 is out of range"),
    (["--head", "2"], "head 2 is out of range"),
    (["--run", "/nonexistent/run"], "--run /nonexistent/run: no such directory"),
    (["some text", "--ids", "1"], "either text or --ids"),
    (["--lr", "-1"], "learning rate"),
])
def test_cli_bad_input_exits_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert captured.out == ""


def test_cli_run_dir_and_plot(tmp_path, capsys):
    model = BertForMaskedLM(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=16, max_position_embeddings=16))
    save_pretrained(model, tmp_path / "run")
    assert main(["--run", str(tmp_path / "run"), "--ids", "1", "2", "3"]) == 2  # no tokenizer: no [MASK] id
    assert "--mask-id" in capsys.readouterr().err
    argv = ["--run", str(tmp_path / "run"), "--ids", "1", "2", "3", "--mask-id", "15", "--plot", str(tmp_path / "p")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "model: V=16 C=8 H=2 D=4 L=1 I=16, post-LN, as BERT, gelu, float32" in out
    assert len(list((tmp_path / "p").glob("*.png"))) == 2


def test_cli_text_with_a_tokenizer(monkeypatch, capsys):
    """Text goes through the run's tokenizer; tokens and predictions are shown by their text."""
    import minibert.explain.cli as ex

    class Tok:
        mask_token_id = 15
        vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "a": 5, "b": 6, "c": 7, "[MASK]": 15}

        def encode(self, text):
            ids = [self.vocab["[CLS]"], *(self.vocab[ch] for ch in text), self.vocab["[SEP]"]]
            return type("Encoding", (), {"input_ids": ids})()

        def id_to_token(self, i):
            return {v: k for k, v in self.vocab.items()}.get(i, f"x{i}")

    monkeypatch.setattr(ex, "load_run", lambda run: (toy_model(0), Tok()))
    assert main(["cab", "--run", "somewhere"]) == 0
    out = capsys.readouterr().out
    assert "tokens     [CLS] c a b [SEP]" in out
    assert "position 2 (a) is replaced by [MASK] = id 15; the label there is 5 (a)" in out


def test_cli_text_needs_the_runs_tokenizer(tmp_path, capsys):
    model = BertForMaskedLM(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=16, max_position_embeddings=16))
    save_pretrained(model, tmp_path / "run")
    assert main(["some text", "--run", str(tmp_path / "run")]) == 2
    assert "text needs a tokenizer" in capsys.readouterr().err


def test_cli_text_without_a_run_builds_a_tokenizer_on_the_spot(tmp_path, capsys):
    """No --run and no pretraining run: a character tokenizer trained now, and the toy model; the note says so."""
    assert main(["今天天气很好", "--runs-dir", str(tmp_path / "no-runs")]) == 0
    captured = capsys.readouterr()
    assert "no --run given and no " in captured.err and "trained just now on built-in text" in captured.err
    assert "tokens     [CLS] ▁ 今 天 天 气 很 好 [SEP]" in captured.out  # every character known: no [UNK]
    assert "model: V=" in captured.out and " C=8 H=2 D=4 L=2 I=16, post-LN" in captured.out
    assert "matches the model: NO" not in captured.out


def make_rotary_run(directory, lines, seed=0):
    import tokenizer

    tok = tokenizer.train(lines, 1000, model_type="char", character_coverage=1.0, num_threads=1, verbose=False)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, position_embedding_type="rotary")
    torch.manual_seed(seed)
    save_pretrained(BertForMaskedLM(config), directory)
    tok.save(directory / "tokenizer")


def test_cli_text_without_a_run_takes_the_latest_pretraining_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    make_rotary_run(runs / "pretrain-20240101-000000", ["今天天气很好", "明天下雨"])
    make_rotary_run(runs / "pretrain-20240202-000000", ["今天天气很好", "明天下雨"], seed=1)
    gpt = runs / "pretrain-20240303-000000"  # newer, but not a BERT model: passed over
    (gpt / "tokenizer").mkdir(parents=True)
    (gpt / "model.safetensors").write_bytes(b"")
    (gpt / "config.json").write_text('{"model_type": "gpt2"}')
    assert main(["今天天气很好", "--runs-dir", str(runs)]) == 0
    captured = capsys.readouterr()
    assert f"explaining with {runs / 'pretrain-20240202-000000'}, the latest" in captured.err
    assert "positions: rotary (RoPE)" in captured.out and "fixed sine/cosine table" not in captured.out
    assert "matches the model: NO" not in captured.out


def test_rotary_position_stage_shows_the_angles_and_the_turned_queries_and_keys():
    model = toy_model(0, position_embedding_type="rotary")
    e = explain(model, DOCUMENT_IDS, layer=1, head=1)
    assert e.all_checks_pass, {k: c for k, c in e.checks.items() if not c.ok}
    T, D = len(DOCUMENT_IDS), model.config.head_size
    theta = BASE ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    torch.testing.assert_close(e.angles.double(), torch.arange(T, dtype=torch.float64)[:, None] * theta)
    assert not e.position.any()  # no position vector is added
    q, k = rotate_padded(e.q_projected[None], e.k_projected[None])
    torch.testing.assert_close(e.q, q[0])
    torch.testing.assert_close(e.k, k[0])
    cos, sin = rotary_angles(torch.arange(T), D)
    torch.testing.assert_close(e.q[:, 1, 0], (e.q_projected[:, 1, 0] * cos[1, 0] - e.q_projected[:, 1, 1] * sin[1, 0]))
    torch.testing.assert_close(e.q[:, 0], e.q_projected[:, 0])  # position 0 is not turned
    assert not torch.allclose(e.q[:, 1:], e.q_projected[:, 1:])
    text = render(e)
    assert "rope(x, t)_{2i}   = x_{2i} cos(t theta_i) - x_{2i+1} sin(t theta_i)" in text
    assert "angles t * theta_i in radians, (T, D/2) = (10, 2):" in text
    assert "t=1  #2         [  1.0000,  0.0100 ]" in text  # theta_0 = 1, theta_1 = 10000^(-1/2)
    assert "rope(Q_1) (T, D) = (10, 4):" in text and "rope(K_1) (T, D) = (10, 4):" in text
    assert "x = LayerNorm(x_word + x_seg)" in text
    assert "sine/cosine" not in text and "P[t]" not in text
    assert text.count("matches the model: yes") == len(e.checks)


@pytest.mark.parametrize("kind,words", [("absolute", "a learned table"), ("sinusoidal", "a fixed sine/cosine table")])
def test_position_stage_names_the_table(kind, words):
    e = explain(toy_model(0, position_embedding_type=kind), DOCUMENT_IDS)
    assert e.angles is None and torch.equal(e.q, e.q_projected)
    assert f"{words}; rows 0..9 are used" in render(e)
