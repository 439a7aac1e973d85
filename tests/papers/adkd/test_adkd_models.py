"""The classifiers split at the embedding output: the split is exact, padding gets zero attribution, and
the attention supports the double backward that AD-KD's student loss needs (fused CPU SDPA does not)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from papers.adkd.adkd import multi_view_attribution_loss, token_attribution_scores, view_targets
from papers.adkd.models import BertClassifier, ToyEncoder, ToyModelConfig


def tiny_bert(seed=0, layers=2) -> BertClassifier:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    cfg._attn_implementation = "eager"
    return BertClassifier(BertForSequenceClassification(cfg).eval())


def batch():
    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 5, 3, 0, 0]])
    mask = (ids != 0).long()
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "labels": torch.tensor([1, 0]),
    }


def test_bert_split_at_embeddings_is_exact_and_reports_cls_states():
    model, b = tiny_bert(), batch()
    with torch.no_grad():
        full = model(b)
        logits, cls = model.head(model.embed(b), b, return_cls=True)
    torch.testing.assert_close(logits, full, rtol=0, atol=0)
    assert len(cls) == model.num_layers == 2 and cls[0].shape == (2, 16)
    assert model._replacement is None  # the hook is off again


def test_bert_padding_gets_zero_attribution():
    model, b = tiny_bert(), batch()
    e = model.embed(b).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model.head(e, b), b["labels"]), e)
    scores = token_attribution_scores(e * g)
    assert bool((scores[1, 3:] == 0).all()) and bool((scores[:, :3] > 0).all())


@pytest.mark.parametrize("family", ["toy", "bert"])
def test_attention_supports_double_backward(family):
    if family == "toy":
        torch.manual_seed(0)
        teacher = ToyEncoder(ToyModelConfig(vocab_size=50, max_len=5, d_model=16, n_heads=2, n_layers=1))
        torch.manual_seed(1)
        student = ToyEncoder(ToyModelConfig(vocab_size=50, max_len=5, d_model=16, n_heads=2, n_layers=1))
    else:
        teacher, student = tiny_bert(0), tiny_bert(1, layers=1)
    teacher.requires_grad_(False)
    b = batch()
    loss = multi_view_attribution_loss(
        lambda x: teacher.head(x, b),
        teacher.embed(b),
        lambda x: student.head(x, b),
        student.embed(b),
        view_targets(b["labels"], 2),
    )
    loss.backward()
    moved = [n for n, p in student.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0]
    assert any("emb" in n or n.startswith("tok") for n in moved), moved
    assert any("attn" in n or "attention" in n for n in moved), moved


def test_fused_cpu_attention_has_no_double_backward():
    """Why the models use explicit / eager attention: SDPA's fused CPU kernel cannot be differentiated twice."""
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    (g,) = torch.autograd.grad(F.scaled_dot_product_attention(q, q, q).pow(2).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        g.sum().backward()
