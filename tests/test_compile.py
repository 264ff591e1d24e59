"""torch.compile traces minibert's fast paths in one graph, with the same numbers as the uncompiled model.

A counting backend records each graph dynamo hands it and runs it as traced, without generating kernels, so the test
takes seconds. Without `compile_model`'s setting the sparse head and unpadding split the graph (a test checks that
the count can fail).
"""

import pytest
import torch

from minibert import BertForMaskedLM, BertForSequenceClassification, preset
from minibert.compiled import compile_model


def config(**kw):
    return preset("tiny", vocab_size=50, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def batch(step: int):
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(5, 50, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6 - step:] = 0  # a different padding pattern on each call
    mask[2, 3:] = 0
    labels = torch.full((3, 9), -100)
    labels[:, 1 : 2 + step] = ids[:, 1 : 2 + step]  # a different number of MLM targets on each call
    return ids * mask, mask, labels


CASES = {
    "mlm": (BertForMaskedLM, {}),
    "mlm sparse": (BertForMaskedLM, {"sparse_prediction": True}),
    "mlm sparse rotary pre-LN fused-QKV": (BertForMaskedLM, {"sparse_prediction": True, "norm_first": True,
                                                             "position_embedding_type": "rotary", "fused_qkv": True}),
    "classifier": (BertForSequenceClassification, {}),
    "classifier unpadded (repad)": (BertForSequenceClassification, {"unpad": True, "unpad_attention": "repad"}),
    "classifier unpadded rotary (repad)": (BertForSequenceClassification,
                                           {"unpad": True, "unpad_attention": "repad", "position_embedding_type": "rotary"}),
}


class CountingBackend:
    def __init__(self):
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.mark.parametrize("name", list(CASES))
def test_compiles_in_one_graph_with_the_same_numbers(name):
    cls, switches = CASES[name]
    torch.manual_seed(0)
    model = cls(config(**switches)).train()
    reference = cls(config(**switches)).train()
    reference.load_state_dict(model.state_dict())
    torch._dynamo.reset()
    backend = CountingBackend()
    compiled = compile_model(model, backend=backend, dynamic=False)
    for step in range(3):
        ids, mask, labels = batch(step)
        if cls is BertForSequenceClassification:
            labels = torch.tensor([0, 1, 1])
        got, want = compiled(ids, mask, labels=labels), reference(ids, mask, labels=labels)
        torch.testing.assert_close(got.loss, want.loss)
        got.loss.backward()
        want.loss.backward()
        for (n, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=n)
        model.zero_grad()
        reference.zero_grad()
    # one graph, traced once: a new padding pattern or number of targets is a symbolic size, not a recompile
    assert backend.graphs == 1, f"{backend.graphs} graphs: torch.compile broke the model's graph or recompiled"


def test_the_graph_count_sees_a_break():
    """Without the setting compile_model makes, the sparse head's data-dependent shape splits the graph."""
    torch.manual_seed(0)
    model = BertForMaskedLM(config(sparse_prediction=True))
    torch._dynamo.reset()
    backend = CountingBackend()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False):
        compiled = torch.compile(model, backend=backend, dynamic=False)
        ids, mask, labels = batch(0)
        compiled(ids, mask, labels=labels)
    assert backend.graphs > 1
