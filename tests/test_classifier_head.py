"""Fine-tuning's classifier runs the model's own head and loss (`minibert.heads`) after a pooling of
`minibert.pooling`: BERT, GPT-2 and T5 bodies, classification and regression, and the keys Hugging Face reads."""

import pytest
import torch
import torch.nn.functional as F

from minibert import BertConfig, BertForSequenceClassification, GPT2Config, InputError, T5Config
from minibert.heads import SequenceClassificationHead, sequence_classification_loss
from minibert.pooling import POOLINGS, cls_pool, mean_pool, pool
from train import families
from train.classifier import SequenceClassifier

CONFIGS = {
    "bert": lambda **kw: BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=32, max_position_embeddings=16, **kw),
    "gpt2": lambda **kw: GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=16, **kw),
    "t5": lambda **kw: T5Config(vocab_size=40, d_model=16, d_kv=8, num_heads=2, d_ff=32, num_layers=2, **kw),
}
CASES = [(kind, pooling, fused) for kind in CONFIGS for pooling in families.POOLINGS[kind]
         for fused in ((False, True) if kind == "bert" else (False,))]


def batch(seed=0, B=4, T=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 40, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    return ids * mask, mask, torch.zeros_like(ids)


def classifier(kind, label_names, pooling="mean", layer_fusion=False, **config):
    torch.manual_seed(0)
    return SequenceClassifier(families.classifier_model(CONFIGS[kind](**config), label_names), pooling, layer_fusion)


@pytest.mark.parametrize("kind,pooling,fused", CASES)
def test_the_classifier_loss_is_the_heads_loss(kind, pooling, fused):
    clf = classifier(kind, ["a", "b", "c"], pooling, fused).eval()
    ids, mask, types = batch()
    logits = clf(ids, mask, types)  # (B, K)
    labels = torch.tensor([2, 0, 1, 1])
    assert logits.shape == (4, 3)
    assert isinstance(clf.model.classifier, SequenceClassificationHead)
    assert torch.equal(clf.loss(logits, labels), sequence_classification_loss(logits, labels))
    torch.testing.assert_close(clf.loss(logits, labels), -logits.log_softmax(-1)[torch.arange(4), labels].mean())


@pytest.mark.parametrize("kind,pooling,fused", CASES)
def test_regression_with_one_label_through_the_fine_tuning_classifier(kind, pooling, fused):
    clf = classifier(kind, ["score"], pooling, fused, **({"num_labels": 1} if kind == "bert" else {}))
    ids, mask, types = batch()
    y = torch.tensor([0.5, -1.0, 2.0, 0.0])
    logits = clf.eval()(ids, mask, types)
    assert clf.num_labels == 1 and logits.shape == (4, 1)
    loss = clf.loss(logits, y)
    torch.testing.assert_close(loss, ((logits.squeeze(-1) - y) ** 2).mean())
    assert torch.equal(loss, sequence_classification_loss(logits, y))
    if kind == "bert" and pooling == "pooler" and not fused:
        assert torch.equal(loss, clf.model(ids, mask, types, labels=y).loss)  # BERT's own regression
    # A few small steps of gradient descent (no dropout) fit the targets better: the loss trains the classifier.
    optimizer = torch.optim.SGD(clf.parameters(), lr=0.01)
    for _ in range(10):
        optimizer.zero_grad()
        clf.loss(clf(ids, mask, types), y).backward()
        optimizer.step()
    assert clf.loss(clf(ids, mask, types), y) < loss


@pytest.mark.parametrize("unpad", [False, True])
def test_pooler_without_fusion_is_exactly_bert_for_sequence_classification(unpad):
    clf = classifier("bert", ["a", "b", "c"], "pooler", unpad=unpad)
    ids, mask, types = batch()
    labels = torch.tensor([2, 0, 1, 1])
    assert clf.is_plain_bert
    assert torch.equal(clf.eval()(ids, mask, types), clf.model(ids, mask, types).logits)
    clf.train()  # the same dropout draws: the head's dropout is the model's
    torch.manual_seed(3)
    logits = clf(ids, mask, types)
    torch.manual_seed(3)
    out = clf.model(ids, mask, types, labels=labels)
    assert torch.equal(logits, out.logits)
    assert torch.equal(clf.loss(logits, labels), out.loss)


def test_bert_classifier_loss_is_the_heads_loss():
    torch.manual_seed(0)
    model = BertForSequenceClassification(CONFIGS["bert"](num_labels=3)).eval()
    ids, mask, types = batch()
    labels = torch.tensor([1, 1, 0, 2])
    out = model(ids, mask, types, labels=labels)
    assert torch.equal(out.loss, sequence_classification_loss(out.logits, labels))
    assert torch.equal(out.loss, F.cross_entropy(out.logits, labels))


@pytest.mark.parametrize("kind", CONFIGS)
def test_the_head_keeps_hugging_faces_names(kind):
    """`classifier.weight`, `classifier.bias` (and BERT's `bert.pooler.dense`), so saved runs load and BERT exports;
    the head's dropout has no weights."""
    model = classifier(kind, ["a", "b"], "mean").model
    head = {k for k in model.state_dict() if not k.startswith(("bert.", "transformer.", "shared.", "encoder."))}
    assert head == {"classifier.weight", "classifier.bias"}
    if kind == "bert":
        assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(model.state_dict())


def test_head_is_dropout_then_the_linear_layer():
    head = SequenceClassificationHead(6, 3, dropout_prob=0.5)
    pooled = torch.randn(4, 6)
    assert torch.equal(head.eval()(pooled), pooled @ head.weight.T + head.bias)
    head.train()
    torch.manual_seed(1)
    dropped = F.dropout(pooled, 0.5, training=True)
    torch.manual_seed(1)
    torch.testing.assert_close(head(pooled), dropped @ head.weight.T + head.bias)


def test_pool_by_name_and_the_pooler_refusal():
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert torch.equal(pool(h, mask, "cls"), cls_pool(h, mask)) and torch.equal(cls_pool(h, mask), h[:, 0])
    assert torch.equal(pool(h, mask, "mean"), mean_pool(h, mask))
    assert torch.equal(pool(h, mask, "last"), h[torch.arange(3), torch.tensor([2, 4, 0])])
    assert set(POOLINGS) == {"pooler", "cls", "mean", "last"}
    with pytest.raises(InputError, match="pooler"):
        pool(h, mask, "pooler")
    with pytest.raises(InputError, match="pooling must be one of"):
        pool(h, mask, "max")
