"""Spec invariants 1-8 of MCC-KD's objective, against an independent float64 computation."""

import math

import pytest
import torch

from papers.mcckd.mcckd import (
    answer_consistency_kl,
    gather_span_logits,
    mcckd_loss,
    sequence_cross_entropy,
)


def reference_kl(za, zb, mask, t=1.0):
    """Spec reduction, in float64 with explicit loops over items and positions."""
    per_item = []
    for i in range(za.shape[0]):
        vals = []
        for u in range(za.shape[1]):
            if not mask[i, u]:
                continue
            p = [math.exp(x) for x in torch.log_softmax(za[i, u].double() / t, -1).tolist()]
            q = [math.exp(x) for x in torch.log_softmax(zb[i, u].double() / t, -1).tolist()]
            kl_pq = sum(pv * (math.log(pv) - math.log(qv)) for pv, qv in zip(p, q) if pv > 0)
            kl_qp = sum(qv * (math.log(qv) - math.log(pv)) for pv, qv in zip(p, q) if qv > 0)
            vals.append(0.5 * (kl_pq + kl_qp))
        if vals:
            per_item.append(sum(vals) / len(vals))
    return sum(per_item) / len(per_item)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    za = torch.randn(3, 4, 11, generator=g, dtype=torch.float64) * 2
    zb = torch.randn(3, 4, 11, generator=g, dtype=torch.float64) * 2
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    return za, zb, mask


def test_matches_float64_reference_and_is_symmetric(logits):
    za, zb, mask = logits
    for t in (1.0, 1.3):
        got = answer_consistency_kl(za, zb, mask, t).item()
        assert got == pytest.approx(reference_kl(za, zb, mask, t), rel=1e-5)
        assert answer_consistency_kl(zb, za, mask, t).item() == pytest.approx(got, rel=1e-6)  # invariant 1


def test_zero_at_equality_with_zero_gradient(logits):
    za, _, mask = logits
    a, b = za.clone().requires_grad_(), za.clone().requires_grad_()
    loss = answer_consistency_kl(a, b, mask)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # invariant 2
    assert a.grad.abs().max().item() < 1e-6 and b.grad.abs().max().item() < 1e-6


def test_jeffreys_form_and_nonnegative(logits):
    za, zb, _ = logits
    lp, lq = torch.log_softmax(za[0, 0], -1), torch.log_softmax(zb[0, 0], -1)
    jeffreys = 0.5 * ((lp.exp() - lq.exp()) * (lp - lq)).sum()  # invariant 3
    one = torch.ones(1, 1, dtype=torch.bool)
    assert answer_consistency_kl(za[:1, :1], zb[:1, :1], one).item() == pytest.approx(
        jeffreys.item(), rel=1e-6
    )
    assert answer_consistency_kl(za, zb, torch.ones(3, 4, dtype=torch.bool)).item() >= 0


def test_gradient_formula_against_autograd(logits):
    za, zb, _ = logits
    a = za[:1, :1].clone().requires_grad_()
    b = zb[:1, :1].clone().requires_grad_()
    answer_consistency_kl(a, b, torch.ones(1, 1, dtype=torch.bool)).backward()
    p, q = torch.softmax(za[0, 0], -1), torch.softmax(zb[0, 0], -1)
    kl_pq = (p * (p.log() - q.log())).sum()
    expected_a = 0.5 * (p * (p.log() - q.log()) - p * kl_pq) + 0.5 * (p - q)  # invariant 4
    kl_qp = (q * (q.log() - p.log())).sum()
    expected_b = 0.5 * (q * (q.log() - p.log()) - q * kl_qp) + 0.5 * (q - p)
    torch.testing.assert_close(a.grad[0, 0], expected_a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.grad[0, 0], expected_b, rtol=1e-5, atol=1e-7)  # no detach


def test_temperature(logits):
    za, zb, mask = logits
    assert answer_consistency_kl(za, zb, mask, 1e6).item() < 1e-9  # invariant 5: uniform at T -> inf
    base = answer_consistency_kl(za, zb, mask, 1.3).item()
    assert answer_consistency_kl(3 * za, 3 * zb, mask, 3 * 1.3).item() == pytest.approx(base, rel=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        answer_consistency_kl(za, zb, mask, 0.0)


def test_masking_and_minus_inf_vocab_padding(logits):
    za, zb, mask = logits
    base = answer_consistency_kl(za, zb, mask)
    noisy_a, noisy_b = za.clone(), zb.clone()
    noisy_a[~mask] = 1e3 * torch.randn_like(noisy_a[~mask])  # invariant 6: masked positions are inert
    assert answer_consistency_kl(noisy_a, noisy_b, mask).item() == pytest.approx(base.item(), rel=1e-9)
    pad = torch.full((3, 4, 5), float("-inf"), dtype=za.dtype)
    a = torch.cat([za, pad], -1).requires_grad_()
    b = torch.cat([zb, pad], -1).requires_grad_()
    padded = answer_consistency_kl(a, b, mask)
    padded.backward()
    assert padded.item() == pytest.approx(base.item(), rel=1e-9)
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_no_valid_position_is_graph_connected_zero(logits):
    za, zb, _ = logits
    a = za.clone().requires_grad_()
    loss = answer_consistency_kl(a, zb, torch.zeros(3, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and a.grad.abs().sum() == 0


def test_shape_errors_are_one_line(logits):
    za, zb, mask = logits
    with pytest.raises(ValueError, match="span_mask"):
        answer_consistency_kl(za, zb, mask[:, :2])
    with pytest.raises(ValueError, match="logits must both"):
        answer_consistency_kl(za, zb[:, :2], mask)


def test_gather_span_shift_and_max_seq_len():
    logits = torch.arange(2 * 8 * 1, dtype=torch.float64).reshape(2, 8, 1)
    spans = torch.tensor([[3, 5], [2, 5]])
    got, mask = gather_span_logits(logits, spans, span_len=3, shift=1)
    assert got[0, :2, 0].tolist() == [2.0, 3.0] and got[1, :, 0].tolist() == [9.0, 10.0, 11.0]
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    got0, _ = gather_span_logits(logits, spans, span_len=3, shift=0)  # encoder-decoder: no shift
    assert got0[0, :2, 0].tolist() == [3.0, 4.0]
    _, cut = gather_span_logits(logits, spans, span_len=3, shift=1, max_seq_len=4)  # end 5 > 4: excluded
    assert not cut.any()
    _, at = gather_span_logits(
        logits, spans, span_len=3, shift=1, max_seq_len=5
    )  # end 5 >= 5: excluded (spec)
    assert not at.any()
    _, under = gather_span_logits(logits, spans, span_len=3, shift=1, max_seq_len=6)  # end 5 < 6: kept
    assert torch.equal(under, mask)
    _, whole = gather_span_logits(logits, torch.tensor([[6, 8], [2, 5]]), span_len=3, shift=1)
    assert whole[0, :2].all()  # no max_seq_len: a span may end at the sequence's end


def _ce_reference(logits, labels):
    out = []
    for i in range(logits.shape[0]):
        terms = [
            -torch.log_softmax(logits[i, t - 1].double(), -1)[labels[i, t]].item()
            for t in range(1, labels.shape[1])
            if labels[i, t] != -100
        ]
        out.append(sum(terms) / len(terms))
    return sum(out) / len(out)


def test_sequence_ce_is_per_sequence_mean_then_batch_mean():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([[-100, -100, 3, 4, 5, 6], [-100, 1, -100, -100, -100, -100]])
    assert sequence_cross_entropy(logits, labels, 1).item() == pytest.approx(_ce_reference(logits, labels))


def test_alpha_zero_and_identical_rationales():
    g = torch.Generator().manual_seed(2)
    la, lb = torch.randn(2, 6, 7, generator=g), torch.randn(2, 7, 7, generator=g)
    ya = torch.tensor([[-100, -100, 3, 4, 5, 6], [-100, -100, -100, 1, 2, 3]])
    yb = torch.tensor([[-100, 2, 2, 3, 4, 5, 6], [-100, -100, -100, -100, 1, 2, 3]])
    sa, sb = torch.tensor([[3, 5], [4, 6]]), torch.tensor([[4, 6], [5, 7]])
    out = mcckd_loss(la, ya, sa, lb, yb, sb, alpha=0.0, temperature=1.3)  # invariant 7
    ce = 0.5 * (sequence_cross_entropy(la, ya, 1) + sequence_cross_entropy(lb, yb, 1))
    assert out.total.item() == pytest.approx(ce.item(), rel=1e-6) and out.kl.item() > 0
    same = mcckd_loss(la, ya, sa, la, ya, sa, alpha=0.5, temperature=1.3)
    assert same.kl.item() == pytest.approx(0.0, abs=1e-7)
    assert same.total.item() == pytest.approx(sequence_cross_entropy(la, ya, 1).item(), rel=1e-6)
    with pytest.raises(ValueError, match="differ in length"):
        mcckd_loss(la, ya, sa, lb, yb, torch.tensor([[4, 7], [5, 7]]), alpha=0.1, temperature=1.0)
