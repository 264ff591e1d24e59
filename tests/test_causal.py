"""GPT's causal-LM objective: its loss is the shifted cross-entropy written out by hand, it counts B (T-1)
predictions, it draws nothing, and it trains a tiny GPT."""

import torch

from minibert.config import PRESETS, BertConfig
from minibert.gpt import GPT2LMHeadModel
from minibert.model import BertModel
from train.causal import CausalLM

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
V = 50


def objective():
    return CausalLM(vocab_size=V, special_ids=torch.tensor([PAD, UNK, CLS, SEP, MASK]), bos_token_id=CLS,
                    eos_token_id=SEP, pad_token_id=PAD)


def tiny_model(seed=0):
    fields = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(seed)
    model = objective().build(objective().config_from(fields, V, 24))
    with torch.no_grad():  # away from the uniform start, so that a wrong shift would show in the loss
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def blocks(B=3, T=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0], ids[:, T // 2], ids[:, -1] = CLS, SEP, SEP
    return ids


def test_loss_is_the_shifted_cross_entropy_by_hand():
    model, obj = tiny_model(), objective()
    batch = obj.make_batch(blocks(), torch.Generator().manual_seed(0))
    loss = obj.losses(model, batch)["causal"]
    ids = batch["input_ids"]
    logits = model(ids).logits  # (B, T, V)
    B, T = ids.shape
    total = 0.0
    for b in range(B):
        for t in range(T - 1):  # position t predicts token t + 1
            total -= torch.log_softmax(logits[b, t].double(), dim=-1)[ids[b, t + 1]]
    torch.testing.assert_close(loss.double(), total / (B * (T - 1)), rtol=1e-6, atol=1e-6)
    wrong = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids.reshape(-1))  # unshifted: not the loss
    assert abs(wrong.item() - loss.item()) > 1e-3


def test_counts_draws_and_held_out_sums():
    model, obj = tiny_model(), objective()
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    batch = obj.make_batch(blocks(4, 20).to(torch.int32), gen)  # a cache's small ids come back as int64
    assert batch["input_ids"].dtype == torch.long and torch.equal(batch["input_ids"], blocks(4, 20))
    assert torch.equal(gen.get_state(), state)  # nothing random: the stream of draws is the same as without it
    assert obj.counts(batch) == {"causal": 4 * 19} and set(obj.weights) == {"causal"}
    sums = obj.eval_sums(model, batch)
    assert int(sums["count"]) == 4 * 19 and 0 <= int(sums["correct"]) <= 4 * 19
    torch.testing.assert_close(sums["loss"] / sums["count"], obj.losses(model, batch)["causal"].detach())
    logits = model(batch["input_ids"]).logits[:, :-1]
    assert int(sums["correct"]) == int((logits.argmax(-1) == batch["input_ids"][:, 1:]).sum())


def test_tiny_forward_backward_and_training_lowers_the_loss():
    model, obj = tiny_model(), objective()
    batch = obj.make_batch(blocks(), torch.Generator())
    model.train()
    obj.losses(model, batch)["causal"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.transformer.wpe.weight.grad.abs().sum() > 0
    model.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = obj.losses(model, batch)["causal"].item()
    for _ in range(15):
        loss = obj.losses(model, batch)["causal"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert obj.losses(model, batch)["causal"].item() < 0.7 * first


def test_config_from_gives_a_gpt_of_the_preset_size():
    obj = objective()
    config = obj.config_from({**PRESETS["small"], "vocab_size": 7, "attn_impl": "math"}, 1200, 128)
    assert (config.n_embd, config.n_layer, config.n_head, config.n_inner) == (256, 4, 4, 1024)
    assert (config.vocab_size, config.n_positions, config.attn_impl) == (1200, 128, "math")
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (CLS, SEP, PAD)
    assert config.chunked_loss  # training's loss without the (B, T, V) logits (tests/test_fast_paths.py)
    # a GPT block holds exactly the weights of a BERT layer: Q, K, V, O and the feed-forward, biases, 2 LayerNorms
    gpt = GPT2LMHeadModel(config)
    bert = BertModel(BertConfig(**PRESETS["small"], vocab_size=1200))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(gpt.transformer.h[0]) == count(bert.encoder.layer[0])


def test_training_with_dropout_on_the_cpu_takes_the_readable_attention_path():
    """torch has no fused CPU kernel with attention dropout; the sdpa model then runs the math path, so with the same
    seed both draw the same dropout masks and give the same loss and gradients."""
    fields = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    models = {}
    for impl in ("math", "sdpa"):
        torch.manual_seed(0)
        models[impl] = objective().build(objective().config_from({**fields, "attn_impl": impl}, V, 24)).train()
    batch = objective().make_batch(blocks(), torch.Generator())
    grads = {}
    for impl, model in models.items():
        torch.manual_seed(1)
        loss = objective().losses(model, batch)["causal"]
        loss.backward()
        grads[impl] = (loss.detach(), model.transformer.h[0].attn.c_attn.weight.grad)
    assert torch.equal(grads["math"][0], grads["sdpa"][0]) and torch.equal(grads["math"][1], grads["sdpa"][1])
