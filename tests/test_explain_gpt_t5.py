"""minibert.explain --model gpt2 | t5: the walk-throughs run, their losses by hand are the models' own, the printed
causal masks and attention probabilities have their zeros and -inf where the formulas put them, the span example's
target gives back the original ids in train/span.py's layout, and what only BERT takes is refused with exit 2."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from minibert import BertConfig, BertForMaskedLM
from minibert.checkpoint import save_pretrained
from minibert.explain import DOCUMENT_IDS, gpt_walk, main
from minibert.explain.gpt_walk import explain_gpt, render_gpt, toy_gpt
from minibert.explain.t5_walk import (
    TOY_EOS_ID,
    TOY_PAD_ID,
    TOY_VOCAB,
    example_noise,
    explain_t5,
    span_corrupt,
    toy_t5,
)
from minibert.t5 import relative_position_bucket

IDS = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.fixture(scope="module")
def gpt():
    return toy_gpt(seed=0)


@pytest.fixture(scope="module")
def t5():
    return toy_t5(seed=0)


def run(argv, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def section(out: str, title_start: str) -> list[str]:
    """The lines of the stage whose title starts with `title_start`, up to the next stage."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title_start}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("== ")), len(lines))
    return lines[start + 1 : end]


def matrices(lines: list[str]) -> list[list[list[str]]]:
    """Every printed matrix in `lines`: a header line of k=0 k=1 ... then rows "t=i <token> v v v"."""
    found, current = [], None
    for line in lines:
        words = line.split()
        if words and words[0] == "k=0":
            current = []
            found.append(current)
        elif current is not None and words and re.fullmatch(r"t=\d+", words[0]):
            current.append(words[2:])  # after "t=i" and the token's text
        else:
            current = None
    return found


def printed_number(out: str, pattern: str) -> float:
    return float(re.search(pattern, out).group(1))


# --- the command runs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model,title", [
    ("gpt2", "one sequence through GPT2LMHeadModel"),
    ("t5", "one span-corruption example through T5ForConditionalGeneration"),
])
def test_the_command_runs_for_each_model(model, title, capsys):
    rc, out, err = run(["--model", model], capsys)
    assert rc == 0, err
    assert title in out
    assert "matches the model: yes" in out and "matches the model: NO" not in out


def test_bert_stays_the_default(capsys):
    _, default, _ = run([], capsys)
    _, bert, _ = run(["--model", "bert"], capsys)
    assert default == bert
    assert default.startswith("minibert explained: one sequence through BertForMaskedLM")


@pytest.mark.parametrize("model", ["gpt2", "t5"])
def test_ids_layer_head_and_seed_are_taken(model, capsys):
    rc, out, err = run(["--model", model, "--ids", *map(str, IDS), "--layer", "1", "--head", "1", "--seed", "3"],
                       capsys)
    assert rc == 0, err
    assert "matches the model: NO" not in out
    assert "block h[1]" in out if model == "gpt2" else "block 1 head 1" in out
    _, other_seed, _ = run(["--model", model, "--ids", *map(str, IDS), "--layer", "1", "--head", "1"], capsys)
    assert other_seed != out  # the seed changes the toy's weights


# --- GPT-2: the loss, the mask, the probabilities, the greedy token -------------------------------------------


def test_gpt_loss_by_hand_equals_the_models(gpt):
    e = explain_gpt(gpt, IDS)
    assert e.all_checks_pass, {k: c for k, c in e.checks.items() if not c.ok}
    ids = torch.tensor([IDS])
    with torch.no_grad():
        out = gpt(ids, labels=ids)
        shifted = F.cross_entropy(out.logits[0, :-1], ids[0, 1:])  # position t against token t + 1
    assert e.model_loss == pytest.approx(out.loss.item(), rel=1e-12)
    assert e.loss_by_hand == pytest.approx(out.loss.item(), rel=1e-12)
    assert e.loss_by_hand == pytest.approx(shifted.item(), rel=1e-12)
    assert e.token_losses == pytest.approx((-out.logits[0, :-1].log_softmax(-1)[range(7), IDS[1:]]).tolist())
    assert e.labels == IDS[1:] + [-100]
    torch.testing.assert_close(e.logits, out.logits[0])


def test_gpt_printed_loss_is_the_models(gpt, capsys):
    _, out, _ = run(["--model", "gpt2"], capsys)
    ids = torch.tensor([DOCUMENT_IDS])
    with torch.no_grad():
        loss = gpt(ids, labels=ids).loss.item()
    assert printed_number(out, r"by hand: \(.*\) / 9 = (\d+\.\d+)") == pytest.approx(loss, abs=5e-5)
    assert printed_number(out, r"the model's loss, model\(ids, labels=ids\)\.loss = (\d+\.\d+)") == \
        pytest.approx(loss, abs=5e-5)
    labels = section(out, "8. the shifted labels")
    rows = [line.split() for line in labels if re.match(r"\s+\d+\s", line)]
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rows] == \
        [(t, DOCUMENT_IDS[t], DOCUMENT_IDS[t + 1] if t < 9 else -100) for t in range(10)]


def test_gpt_printed_causal_mask_is_minus_inf_exactly_above_the_diagonal(capsys):
    _, out, _ = run(["--model", "gpt2", "--ids", *map(str, IDS)], capsys)
    assert "M[i, j] = -inf if j > i" in out
    (mask,) = matrices(section(out, "4. the causal mask"))
    T = len(IDS)
    assert len(mask) == T and all(len(row) == T for row in mask)
    for i in range(T):
        for j in range(T):
            assert mask[i][j] == ("-inf" if j > i else "0"), (i, j)


def test_gpt_attention_is_exactly_zero_above_the_diagonal(gpt, capsys):
    e = explain_gpt(gpt, DOCUMENT_IDS, layer=1, head=1)
    T = len(DOCUMENT_IDS)
    above = torch.ones(T, T, dtype=torch.bool).triu(1)
    for h in range(e.probs.size(0)):
        assert (e.probs[h][above] == 0).all()  # exactly 0, not merely small
        assert (e.probs[h][~above] > 0).all()
    torch.testing.assert_close(e.probs.sum(-1), torch.ones(2, T, dtype=e.probs.dtype))
    assert (e.mask[above] == -math.inf).all() and (e.mask[~above] == 0).all()
    _, out, _ = run(["--model", "gpt2", "--layer", "1", "--head", "1"], capsys)
    _, probs = matrices(section(out, "5. attention probabilities"))
    for i in range(T):
        for j in range(i + 1, T):
            assert float(probs[i][j]) == 0.0
        assert float(probs[i][i]) == pytest.approx(float(e.probs[1, i, i]), abs=5e-5)
    assert float(probs[0][0]) == 1.0  # the first token reads only itself


def test_gpt_greedy_next_token_is_the_argmax(gpt):
    e = explain_gpt(gpt, IDS)
    with torch.no_grad():
        last = gpt(torch.tensor([IDS])).logits[0, -1]
    assert e.next_token == int(last.argmax())
    assert e.top[0][0] == e.next_token
    assert [p for _, _, p in e.top] == pytest.approx(last.softmax(-1).topk(5).values.tolist())


def test_a_wrong_mask_fails_the_checks(gpt, monkeypatch):
    """The checks can fail: with a mask that lets token i read token i + 1, the recomputed values are not the
    model's."""
    real = gpt_walk.causal_mask

    def leaky(T, S, attention_mask, dtype, device):
        return real(T, S + 1, attention_mask, dtype, device)[..., :-1]  # M_ij = 0 if j <= i + 1

    monkeypatch.setattr(gpt_walk, "causal_mask", leaky)
    e = explain_gpt(gpt, IDS)
    assert not e.checks["mask"].ok and not e.checks["attention"].ok
    assert not e.all_checks_pass
    assert "matches the model: NO" in render_gpt(e)


def test_the_model_is_left_alone(gpt, t5):
    for model, walk in ((gpt, explain_gpt), (t5, explain_t5)):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model.train()
        walk(model, IDS)
        assert model.training
        model.eval()
        for n, p in model.named_parameters():
            assert torch.equal(p, before[n]), n
            assert p.grad is None, n


# --- T5: the span example, the masks, the buckets, the loss ---------------------------------------------------


def reconstruct(inputs, target):
    """The original ids, from the corrupted input and the target, without the project's fill_spans."""
    spans, current = {}, None
    for token in target:
        if token == TOY_EOS_ID:
            break
        if token >= TOY_VOCAB:
            current = spans.setdefault(token, [])
        else:
            current.append(token)
    return [t for token in inputs for t in (spans[token] if token >= TOY_VOCAB else [token])]


@pytest.mark.parametrize("ids", [DOCUMENT_IDS, IDS, [7, 8], [3, 0, 4, 15, 5, 6], list(range(1, 15)) * 2])
def test_the_span_example_reconstructs_the_original(t5, ids):
    e = explain_t5(t5, ids)
    assert e.reconstructed == ids
    assert reconstruct(e.encoder_ids, e.labels) == ids
    assert e.labels[-1] == TOY_EOS_ID and e.labels[0] == TOY_VOCAB  # starts with <s0>, ends with </s>
    sentinels = [i for i in e.encoder_ids if i >= TOY_VOCAB]
    assert sentinels == list(range(TOY_VOCAB, TOY_VOCAB + len(sentinels))) and 1 <= len(sentinels) <= 2
    assert sum(e.noise) >= 1 and not all(e.noise)
    assert all(not d for i, d in zip(ids, e.noise) if i in (TOY_PAD_ID, TOY_EOS_ID))  # specials are never dropped
    assert e.decoder_ids == [0] + e.labels[:-1]  # shift_right: <pad>, then the target


def test_the_document_example_drops_two_spans(capsys):
    _, out, _ = run(["--model", "t5"], capsys)
    assert "input      #1 #2 <s0> #5 #6 #7 <s1> #9 #10" in out
    assert "target     <s0> #3 #4 <s1> #8 </s>" in out
    assert "fill_spans(input, target) = #1 #2 #3 #4 #5 #6 #7 #8 #9 #10" in out


@pytest.mark.parametrize("ids", [DOCUMENT_IDS, IDS, [3, 0, 4, 15, 5, 6, 7, 8, 9]])
def test_the_span_layout_is_train_spans(ids, monkeypatch):
    """Given the same dropped tokens, train/span.py's span_corruption writes the same input and target."""
    from train import span

    noise = example_noise(ids)
    monkeypatch.setattr(span, "span_noise_mask", lambda candidate, *a, **k: torch.tensor([noise]))
    out = span.span_corruption(torch.tensor([ids]), torch.Generator().manual_seed(0),
                               special_ids=torch.tensor([TOY_PAD_ID, TOY_EOS_ID]), sentinel_base=TOY_VOCAB,
                               n_sentinels=4, eos_token_id=TOY_EOS_ID, pad_token_id=TOY_PAD_ID)
    inputs, target = span_corrupt(ids, noise, TOY_VOCAB, TOY_EOS_ID)
    assert out.input_ids[0].tolist() == inputs
    assert out.labels[0].tolist() == target


def test_t5_loss_by_hand_equals_the_models(t5):
    e = explain_t5(t5, IDS, layer=1, head=1)
    assert e.all_checks_pass, {k: c for k, c in e.checks.items() if not c.ok}
    labels = torch.tensor([e.labels])
    with torch.no_grad():
        out = t5(torch.tensor([e.encoder_ids]), labels=labels)
        by_ce = F.cross_entropy(out.logits[0], labels[0])
    assert e.model_loss == pytest.approx(out.loss.item(), rel=1e-12)
    assert e.loss_by_hand == pytest.approx(out.loss.item(), rel=1e-12)
    assert e.loss_by_hand == pytest.approx(by_ce.item(), rel=1e-12)
    assert sum(e.token_losses) / len(e.labels) == pytest.approx(out.loss.item(), rel=1e-12)


def test_t5_printed_loss_is_the_models(t5, capsys):
    _, out, _ = run(["--model", "t5"], capsys)
    e = explain_t5(t5, DOCUMENT_IDS)
    with torch.no_grad():
        loss = t5(torch.tensor([e.encoder_ids]), labels=torch.tensor([e.labels])).loss.item()
    assert printed_number(out, r"by hand: \(.*\) / 6 = (\d+\.\d+)") == pytest.approx(loss, abs=5e-5)
    assert printed_number(out, r"labels=labels\)\.loss = (\d+\.\d+)") == pytest.approx(loss, abs=5e-5)


def test_t5_masks_encoder_bidirectional_decoder_causal_cross_everything(t5, capsys):
    e = explain_t5(t5, IDS)
    S, T = len(e.encoder_ids), len(e.labels)
    above = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert (e.encoder_mask == 0).all() and (e.cross_mask == 0).all()
    assert (e.decoder_mask[above] == -math.inf).all() and (e.decoder_mask[~above] == 0).all()
    assert (e.encoder_probs > 0).all()  # both sides of the diagonal
    assert (e.decoder_probs[:, above] == 0).all() and (e.decoder_probs[:, ~above] > 0).all()
    assert e.cross_probs.shape == (2, T, S) and (e.cross_probs > 0).all()
    _, out, _ = run(["--model", "t5", "--ids", *map(str, IDS)], capsys)
    enc_mask, _, enc_probs = matrices(section(out, "4. encoder self-attention"))
    assert all(v == "0" for row in enc_mask for v in row) and len(enc_mask) == S
    assert all(float(v) > 0 for row in enc_probs for v in row)
    dec_mask, dec_probs = matrices(section(out, "5. decoder self-attention"))
    for i in range(T):
        for j in range(T):
            assert dec_mask[i][j] == ("-inf" if j > i else "0"), (i, j)
            if j > i:
                assert float(dec_probs[i][j]) == 0.0
    cross_mask, cross_probs = matrices(section(out, "6. cross-attention"))
    assert len(cross_mask) == T and all(len(row) == S and set(row) == {"0"} for row in cross_mask)
    assert all(len(row) == S for row in cross_probs)


def test_t5_buckets(t5, capsys):
    e = explain_t5(t5, DOCUMENT_IDS)
    S = len(e.encoder_ids)
    offsets = torch.arange(S)[None] - torch.arange(S)[:, None]
    assert torch.equal(e.encoder_buckets, relative_position_bucket(offsets, True, 8, 16))
    # bidirectional, N = 8: n <= 0 in buckets 0..3, n > 0 in 4..7; causal: only i - j counts, the future is 0
    assert e.encoder_buckets[0, :5].tolist() == [0, 5, 6, 6, 6]
    assert e.encoder_buckets[4, :5].tolist() == [2, 2, 2, 1, 0]
    assert e.decoder_buckets[5].tolist() == [4, 4, 3, 2, 1, 0]
    assert (e.decoder_buckets.triu(1) == 0).all()
    _, out, _ = run(["--model", "t5"], capsys)
    lines = section(out, "3. relative positions")

    def numbers(name: str) -> list[int]:
        row = next(line for line in lines if re.fullmatch(rf"\s+{name}(\s+-?\d+)+", line))
        return [int(v) for v in row.split()[len(name.split()):]]

    table = dict(zip(numbers("offset n"), zip(numbers("encoder"), numbers("decoder"))))
    assert len(table) == 17
    assert table[0] == (0, 0) and table[-1] == (1, 1) and table[1] == (5, 0) and table[-6] == (3, 5)


# --- markdown ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt2", "t5"])
def test_markdown_prints_and_rewrites_the_section(model, tmp_path, capsys):
    rc, out, _ = run(["--model", model, "--markdown"], capsys)
    assert rc == 0
    start, end = f"<!-- worked-example-{model}:start -->", f"<!-- worked-example-{model}:end -->"
    assert out.startswith(start) and out.rstrip().endswith(end) and "```text" in out
    doc = tmp_path / "DOC.md"
    doc.write_text(f"before\n{start}\nold\n{end}\nafter\n", encoding="utf-8")
    rc, _, _ = run(["--model", model, "--markdown", str(doc)], capsys)
    assert rc == 0
    assert doc.read_text(encoding="utf-8") == f"before\n{out}after\n"
    bare = tmp_path / "BARE.md"
    bare.write_text("no markers\n", encoding="utf-8")
    rc, _, err = run(["--model", model, "--markdown", str(bare)], capsys)
    assert rc == 2 and f"no {start}" in err


# --- bad input exits 2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt2", "t5"])
def test_a_bert_run_is_refused(model, tmp_path, capsys):
    bert = BertForMaskedLM(BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=16, max_position_embeddings=16))
    save_pretrained(bert, tmp_path / "run")
    rc, out, err = run(["--model", model, "--run", str(tmp_path / "run")], capsys)
    assert rc == 2 and out == ""
    assert err.startswith("error: --run loads trained BERT runs only")
    assert f"--model {model} walks through a toy" in err


def test_a_bad_model_value_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "xlnet"])
    assert exit_.value.code == 2
    assert "argument --model: invalid choice: 'xlnet'" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--model", "gpt2", "some text"], "--model gpt2 takes --ids, not text"),
    (["--model", "t5", "--lr", "0.1"], "--lr belongs to the BERT walk-through, not to --model t5"),
    (["--model", "gpt2", "--mask-position", "1", "--plot", "p"], "--mask-position, --plot belong to the BERT"),
    (["--model", "gpt2", "--ids", "1", "99"], "token id 99 at position 1 is out of range"),
    (["--model", "gpt2", "--ids", "4"], "at least 2 token ids"),
    (["--model", "gpt2", "--ids", *["1"] * 32], "more than the model's n_positions (32)"),
    (["--model", "gpt2", "--layer", "2"], "layer 2 is out of range"),
    (["--model", "t5", "--head", "2"], "head 2 is out of range"),
    (["--model", "t5", "--ids", "1", "17"], "token id 17 at position 1 is out of range"),
    (["--model", "t5", "--ids", "0", "5", "15"], "at least 2 tokens that are not special"),
])
def test_bad_input_exits_2(argv, message, capsys):
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and message in err
