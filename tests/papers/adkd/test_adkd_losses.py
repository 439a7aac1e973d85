"""The spec's invariants ("Invariants for unit tests") of papers/adkd/adkd.py, each against an independent
float64 computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from papers.adkd.adkd import (
    annealed_temperature,
    attribution_loss,
    integrated_gradients,
    multi_view_attribution_loss,
    normalize_map,
    pkd_loss,
    soft_cross_entropy_kd,
    token_attribution_scores,
    total_loss,
    view_targets,
)
from papers.adkd.models import ToyEncoder, ToyModelConfig

D = torch.float64


def toy(seed=0, **kw) -> ToyEncoder:
    torch.manual_seed(seed)
    cfg = ToyModelConfig(**{"d_model": 16, "n_heads": 2, "n_layers": 1, "max_len": 6, **kw})
    return ToyEncoder(cfg).to(D)


def toy_batch(seed=0, b=4, length=6, pad_from=None):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 40, (b, length), generator=g)
    ids[:, 0] = 1
    mask = torch.ones_like(ids)
    if pad_from is not None:
        ids[1, pad_from:] = 0
        mask[1, pad_from:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (b,), generator=g)}


def grad_x_input(model, batch, target):
    e = model.embed(batch).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(target(model.head(e, batch)), e)
    return e.detach() * g


# --- integrated gradients ----------------------------------------------------------------------------


def test_ig_one_step_is_gradient_times_input():
    model, batch = toy(), toy_batch()
    target = view_targets(batch["labels"], 2)[0]
    e = model.embed(batch).detach()
    ig = integrated_gradients(lambda x: model.head(x, batch), e, target, steps=1)
    torch.testing.assert_close(ig, grad_x_input(model, batch, target), rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_ig_completeness_on_a_linear_model(steps):
    # F(e) = sum_ij W_ij e_ij + c: sum IG = F(e) - F(0) exactly, for any m
    g = torch.Generator().manual_seed(1)
    w, e = torch.randn(3, 5, 7, generator=g, dtype=D), torch.randn(3, 5, 7, generator=g, dtype=D)
    forward = lambda x: (x * w).sum(dim=(1, 2), keepdim=True)  # noqa: E731  [B, 1] "logits"
    target = lambda z: z.sum() + 2.5  # noqa: E731
    ig = integrated_gradients(forward, e, target, steps=steps)
    assert float(ig.sum()) == pytest.approx(float(target(forward(e)) - target(forward(0 * e))), abs=1e-12)


def test_ig_m_steps_matches_the_riemann_sum_by_hand():
    model, batch = toy(), toy_batch()
    target = view_targets(batch["labels"], 2)[0]
    e = model.embed(batch).detach()
    expected = torch.zeros_like(e)
    for k in (1, 2, 3, 4):
        x = (e * k / 4).requires_grad_(True)
        (g,) = torch.autograd.grad(target(model.head(x, batch)), x)
        expected += g / 4
    ig = integrated_gradients(lambda x: model.head(x, batch), e, target, steps=4)
    torch.testing.assert_close(ig, e * expected, rtol=1e-12, atol=1e-14)


# --- scores, normalisation, top-K ----------------------------------------------------------------------


def test_scores_are_l2_of_top_k_absolute_entries():
    ig = torch.randn(2, 3, 10, dtype=D)
    for k in (1, 4, 10):
        expected = torch.tensor(
            [
                [math.sqrt(sum(v * v for v in sorted(map(abs, ig[b, i].tolist()))[-k:])) for i in range(3)]
                for b in range(2)
            ],
            dtype=D,
        )
        torch.testing.assert_close(token_attribution_scores(ig, top_k=k), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(token_attribution_scores(ig, top_k=10), token_attribution_scores(ig))


def test_teacher_score_is_non_decreasing_in_k():
    ig = torch.randn(3, 5, 12, dtype=D)
    scores = [token_attribution_scores(ig, top_k=k) for k in range(1, 13)]
    assert all(bool((b >= a).all()) for a, b in zip(scores, scores[1:]))


def test_k_larger_than_d_is_one_clear_error():
    with pytest.raises(ValueError, match=r"K = 13 must be between 1 and the hidden size d = 12"):
        token_attribution_scores(torch.randn(1, 2, 12), top_k=13)


def test_normalised_maps_have_unit_norm_unless_all_zero():
    a = torch.rand(4, 7, dtype=D)
    a[2] = 0
    norms = normalize_map(a).norm(dim=-1)
    torch.testing.assert_close(norms[[0, 1, 3]], torch.ones(3, dtype=D))
    assert float(norms[2]) == 0.0


# --- the attribution loss ------------------------------------------------------------------------------


def reference_attr(t, s):
    """float64 by hand: per-example L2 normalisation, summed squared error / non-zero teacher entries."""
    total, nnz = 0.0, 0
    for tb, sb in zip(t.tolist(), s.tolist()):
        nt, ns = max(math.sqrt(sum(x * x for x in tb)), 1e-12), max(math.sqrt(sum(x * x for x in sb)), 1e-12)
        total += sum((x / nt - y / ns) ** 2 for x, y in zip(tb, sb))
        nnz += sum(1 for x in tb if x / nt != 0)
    return total / nnz


def test_attribution_loss_matches_float64_reference_and_bounds():
    t, s = torch.rand(5, 9, dtype=D), torch.rand(5, 9, dtype=D)
    t[0, 6:] = 0  # padding
    s[0, 6:] = 0
    loss = attribution_loss(t, s)
    assert float(loss) == pytest.approx(reference_attr(t, s), rel=1e-12)
    n_nz = int((t != 0).sum())
    assert 0 <= float(loss) <= 2 * 5 / n_nz
    # per view sum_i (t - s)^2 = 2 - 2 <t, s>
    tn, sn = normalize_map(t), normalize_map(s)
    torch.testing.assert_close(((tn - sn) ** 2).sum(-1), 2 - 2 * (tn * sn).sum(-1))


def test_attribution_loss_is_zero_for_equal_maps_and_grad_reaches_student_only():
    t = torch.rand(3, 4, dtype=D, requires_grad=True)
    assert float(attribution_loss(t, t.detach().clone() * 3.0)) == pytest.approx(0.0, abs=1e-15)
    s = torch.rand(3, 4, dtype=D, requires_grad=True)
    attribution_loss(t, s).backward()
    assert t.grad is None and s.grad is not None and float(s.grad.abs().sum()) > 0


def test_all_zero_teacher_map_gives_zero_not_nan():
    assert float(attribution_loss(torch.zeros(2, 3), torch.zeros(2, 3))) == 0.0


def _map(model, batch, target):
    return normalize_map(token_attribution_scores(grad_x_input(model, batch, target)))


def test_maps_invariant_to_rescaling_the_attributed_scalar():
    model, batch = toy(), toy_batch()
    y = batch["labels"]
    log_p = lambda z: F.log_softmax(z, -1).gather(1, y[:, None]).squeeze(1)  # noqa: E731
    base = _map(model, batch, lambda z: -log_p(z).mean())
    for target in (
        lambda z: -2 * log_p(z).mean(),
        lambda z: log_p(z).sum(),  # sign flip and batch-size factor
        lambda z: log_p(z).exp().sum(),  # p_c: per-example positive rescaling of the gradient
    ):
        torch.testing.assert_close(_map(model, batch, target), base, rtol=1e-9, atol=1e-12)


def test_binary_views_give_the_same_map():
    model, batch = toy(), toy_batch()
    m0 = _map(model, batch, lambda z: -F.log_softmax(z, -1)[:, 0].mean())
    m1 = _map(model, batch, lambda z: -F.log_softmax(z, -1)[:, 1].mean())
    torch.testing.assert_close(m0, m1, rtol=0, atol=1e-6)


def test_padding_gets_exactly_zero_attribution_and_is_not_counted():
    model, batch = toy(), toy_batch(pad_from=3)
    target = view_targets(batch["labels"], 2)[0]
    scores = token_attribution_scores(grad_x_input(model, batch, target))
    assert bool((scores[1, 3:] == 0).all()) and bool((scores[:, :3] > 0).all())
    s = torch.rand_like(scores)
    assert float(attribution_loss(scores, s)) == pytest.approx(reference_attr(scores, s), rel=1e-12)


def test_views_multiclass_every_label_binary_one():
    y = torch.tensor([0, 2, 1])
    assert len(view_targets(y, 3)) == 3 and len(view_targets(y, 3, multi_view=False)) == 1
    assert len(view_targets(torch.tensor([0, 1]), 2)) == 1
    z = torch.randn(3, 3, dtype=D)
    for c, target in enumerate(view_targets(y, 3)):
        assert float(target(z)) == pytest.approx(float(-F.log_softmax(z, -1)[:, c].mean()), rel=1e-12)


def test_student_copy_of_teacher_has_zero_loss_and_double_backward_reaches_only_the_student():
    teacher, student = toy(seed=3), toy(seed=3)
    teacher.requires_grad_(False)
    batch = toy_batch()
    targets = view_targets(batch["labels"], 2)
    loss = multi_view_attribution_loss(
        lambda x: teacher.head(x, batch),
        teacher.embed(batch),
        lambda x: student.head(x, batch),
        student.embed(batch),
        targets,
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-20)
    other = toy(seed=4)
    loss = multi_view_attribution_loss(
        lambda x: teacher.head(x, batch),
        teacher.embed(batch),
        lambda x: other.head(x, batch),
        other.embed(batch),
        targets,
    )
    loss.backward()
    assert float(other.tok.weight.grad.abs().sum()) > 0  # through the double backward
    assert float(other.blocks[0].attn.qkv.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_attribution_gradient_matches_finite_differences():
    torch.manual_seed(0)
    student, teacher = toy(seed=5), toy(seed=6).requires_grad_(False)
    batch = toy_batch()
    targets = view_targets(batch["labels"], 2)
    w = student.cls.weight

    def loss():
        return multi_view_attribution_loss(
            lambda x: teacher.head(x, batch),
            teacher.embed(batch),
            lambda x: student.head(x, batch),
            student.embed(batch),
            targets,
        )

    (g,) = torch.autograd.grad(loss(), w)
    h, i, j = 1e-6, 1, 3
    with torch.no_grad():
        w[i, j] += h
    up = loss().item()
    with torch.no_grad():
        w[i, j] -= 2 * h
    down = loss().item()
    with torch.no_grad():
        w[i, j] += h
    assert float(g[i, j]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


# --- logit KD, anneal, total, PKD --------------------------------------------------------------------


def test_kd_is_soft_cross_entropy_not_kl():
    zt = torch.randn(4, 3, dtype=D)
    for tau in (1.0, 2.0, 4.0):
        p = F.softmax(zt / tau, -1)
        entropy = float(-(p * p.log()).sum(-1).mean())
        assert float(soft_cross_entropy_kd(zt.clone(), zt, tau)) == pytest.approx(entropy, rel=1e-12)


def test_kd_gradient_is_softmax_difference_over_tau():
    zt, tau = torch.randn(4, 3, dtype=D), 2.0
    zs = torch.randn(4, 3, dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(soft_cross_entropy_kd(zs, zt, tau) * 4, zs)  # x B: per-example gradient
    expected = (F.softmax(zs.detach() / tau, -1) - F.softmax(zt / tau, -1)) / tau
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-15)


def test_anneal_schedule_ends():
    assert annealed_temperature(4.0, 0, 10) == 4.0
    assert annealed_temperature(4.0, 9, 10) == pytest.approx(1.0)
    assert annealed_temperature(3.0, 2, 5) == pytest.approx(3.0 + (1 - 3.0) * 2 / 4)
    assert annealed_temperature(2.0, 0, 1) == 2.0


def test_total_loss_weights():
    ce, kd, attr = (torch.tensor(v, dtype=D) for v in (1.5, 0.25, 0.125))
    assert float(total_loss(ce, kd, attr, 0.9, 10.0)) == pytest.approx(0.1 * 1.5 + 0.9 * 0.25 + 10 * 0.125)


def test_pkd_loss_matches_reference():
    s, t = [torch.randn(3, 5, dtype=D) for _ in range(2)], [torch.randn(3, 5, dtype=D) for _ in range(2)]
    expected = sum(
        float(((a / a.norm(dim=-1, keepdim=True) - b / b.norm(dim=-1, keepdim=True)) ** 2).sum(-1).mean())
        for a, b in zip(s, t)
    )
    assert float(pkd_loss(s, t)) == pytest.approx(expected, rel=1e-12)
