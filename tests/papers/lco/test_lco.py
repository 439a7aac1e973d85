"""The spec's invariants 1-15 (shared/papers/lco.md, "Invariants for unit tests"), in float64, each checked
against an independent computation (closed forms, autograd, torch.func Hessians), plus bad-input one-liners."""

import math

import pytest
import torch
from torch.func import grad, hessian

from papers.lco.lco import (
    beta_eff,
    lco_kld_loss,
    lco_log_target,
    lco_logcosh_loss,
    lco_loss,
    lco_mse_loss,
    logcosh,
    pg_is_loss,
    pg_is_token_loss,
    pg_token_loss,
    sft_token_loss,
    sparse_advantages,
    topk_advantages,
    topk_support,
    zero_mean_fill,
)

D = torch.float64


def rand(*shape, seed=0, scale=2.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def kld_single(z, log_target):
    return lco_kld_loss(z[None], log_target[None], torch.ones(1, dtype=torch.bool))


# --- target ---------------------------------------------------------------------------------------


def test_1_target_is_a_distribution():
    z, a = rand(3, 5, 11), rand(3, 5, 11, seed=1)
    for support in (None, topk_support(z, 5)):
        lp = lco_log_target(z, a, 0.7, support)
        assert torch.allclose(lp.exp().sum(-1), torch.ones(3, 5, dtype=D), atol=1e-6)


def test_2_zero_or_constant_advantage_gives_pi_old_and_zero_loss_and_gradient():
    z = rand(4, 9)
    for adv in (torch.zeros(4, 9, dtype=D), torch.full((4, 9), 3.1, dtype=D)):
        lp = lco_log_target(z, adv, 0.5)
        assert torch.allclose(lp, z.log_softmax(-1), atol=1e-12)
        theta = z.clone().requires_grad_()
        loss = lco_kld_loss(theta, lp, torch.ones(4, dtype=torch.bool))
        loss.backward()
        assert abs(float(loss.detach())) < 1e-12 and theta.grad.abs().max() < 1e-12


def test_3_ratio_property():
    z, a, beta = rand(6, 7), rand(6, 7, seed=2), 0.4
    lp = lco_log_target(z, a, beta)
    for i, j in ((0, 1), (2, 5), (6, 3)):
        lhs = lp[:, i] - lp[:, j]
        rhs = (z[:, i] - z[:, j]) + (a[:, i] - a[:, j]) / beta
        assert torch.allclose(lhs, rhs, atol=1e-10)


def test_4_sparse_advantage_closed_form():
    z, beta = rand(5, 8), 0.3
    tokens = torch.tensor([0, 3, 7, 7, 2])
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5, 0.2], dtype=D)
    p = lco_log_target(z, sparse_advantages(tokens, adv, 8), beta).exp()
    q_all = z.softmax(-1)
    for b in range(5):
        a, q, e = int(tokens[b]), float(q_all[b, tokens[b]]), math.exp(float(adv[b]) / beta)
        norm = 1 - q + q * e
        assert float(p[b, a]) == pytest.approx(q * e / norm, rel=1e-10)
        others = [k for k in range(8) if k != a]
        assert torch.allclose(p[b, others], q_all[b, others] / norm, rtol=1e-10)


def test_5_beta_limits():
    z, a = rand(3, 6), rand(3, 6, seed=3)
    assert torch.allclose(lco_log_target(z, a, 1e8).exp(), z.softmax(-1), atol=1e-6)
    support = torch.ones(3, 6, dtype=torch.bool)
    support[:, a[0].argmax()] = False  # the overall best token unsupported: argmax over the supported ones
    p = lco_log_target(z, a, 1e-4, support).exp()
    best = torch.where(support, a, -torch.inf).argmax(-1)
    assert torch.allclose(p.gather(1, best[:, None]).squeeze(1), torch.ones(3, dtype=D), atol=1e-6)


def test_6_unsupported_entries_are_below_1e30_of_every_supported_one():
    z = rand(4, 10, scale=30.0)  # supported logits far apart: a plain -100 fill would not be enough
    a = sparse_advantages(torch.tensor([1, 2, 3, 4]), torch.tensor([5.0, -5.0, 0.0, 1.0], dtype=D), 10)
    support = topk_support(z, 5)
    p = lco_log_target(z, a, 0.1, support).exp()
    for b in range(4):
        least_supported = p[b, support[b]].min()
        assert (p[b, ~support[b]] < 1e-30 * least_supported).all()
    # the code's -100 advantage on unsupported tokens changes nothing: they already have ~0 mass
    a_filled = torch.where(support, a, torch.full_like(a, -100.0))
    assert torch.allclose(lco_log_target(z, a_filled, 0.1, support).exp(), p, atol=1e-12)


# --- losses ----------------------------------------------------------------------------------------


def test_7_kld_gradient_and_hessian_are_sfts():
    z, lp = rand(7), lco_log_target(rand(7, seed=4), rand(7, seed=5), 0.6)
    g = grad(kld_single)(z, lp)
    assert torch.allclose(g, z.softmax(-1) - lp.exp(), atol=1e-12)
    assert abs(float(g.sum())) < 1e-12
    h = hessian(kld_single)(z, lp)
    pi = z.softmax(-1)
    assert torch.allclose(h, torch.diag(pi) - torch.outer(pi, pi), atol=1e-12)
    assert torch.linalg.eigvalsh(h).min() >= -1e-7
    other = lco_log_target(rand(7, seed=6), rand(7, seed=7), 0.2)
    assert torch.allclose(hessian(kld_single)(z, other), h, atol=1e-12)  # independent of p*


def test_8_kld_is_nonnegative_and_zero_only_at_the_target():
    lp = lco_log_target(rand(5, 6), rand(5, 6, seed=1), 0.5)
    mask = torch.ones(5, dtype=torch.bool)
    assert float(lco_kld_loss(lp.clone(), lp, mask)) == pytest.approx(0.0, abs=1e-12)
    assert float(lco_kld_loss(lp + 4.0, lp, mask)) == pytest.approx(0.0, abs=1e-12)  # logits up to a shift
    for seed in range(5):
        assert float(lco_kld_loss(rand(5, 6, seed=10 + seed), lp, mask)) > 0
    # the masked mean: an independent per-position KL in float64
    z, m = rand(5, 6, seed=20), torch.tensor([True, False, True, True, False])
    p = lp.exp()
    kl = (p * (lp - z.log_softmax(-1))).sum(-1)
    assert float(lco_kld_loss(z, lp, m)) == pytest.approx(float(kl[m].mean()), rel=1e-12)


def test_9_mse_paper_and_code_versions():
    z, z_old, beta = rand(2, 5), rand(2, 5, seed=1), 0.5
    a = sparse_advantages(torch.tensor([1, 3]), torch.tensor([1.0, -1.0], dtype=D), 5)
    known = a != 0
    mask = torch.ones(2, dtype=torch.bool)
    theta = z.clone().requires_grad_()
    lco_mse_loss(theta, z_old, a, beta, mask, known).backward()
    expected = (
        torch.where(known, 2 * (z - z_old - a / beta), torch.zeros_like(z)) / 2
    )  # mean over 2 positions
    assert torch.allclose(theta.grad, expected, atol=1e-12)
    target = z_old + a / beta
    assert float(lco_mse_loss(target, z_old, a, beta, mask, known)) == pytest.approx(0.0, abs=1e-14)
    b_eff = beta_eff(torch.tensor([1.0, -1.0], dtype=D), beta)
    for seed in range(3):  # code version: a constant push whatever z is
        theta = rand(2, 5, seed=30 + seed).requires_grad_()
        loss = lco_mse_loss(theta, z_old, a, b_eff, mask, known, anchor="current")
        loss.backward()
        sampled = theta.grad[known] * 2  # undo the mean over the 2 positions
        assert torch.allclose(sampled, -2 * a[known] / b_eff, atol=1e-12)
        assert float(loss) == pytest.approx(float(((a[known] / b_eff) ** 2).mean()), rel=1e-12)


def test_10_logcosh_properties_and_loss():
    x = torch.linspace(-30, 30, 601, dtype=D).requires_grad_()
    y = logcosh(x)
    assert torch.allclose(y, torch.log(torch.cosh(x.detach())), atol=1e-10)
    assert float(logcosh(torch.zeros((), dtype=D))) == 0.0
    assert torch.allclose(y, logcosh(-x.detach()), atol=0)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tanh(x.detach()), atol=1e-12) and x.grad.abs().max() <= 1
    small = torch.tensor([1e-3, -2e-3], dtype=D)
    assert torch.allclose(logcosh(small), small**2 / 2, rtol=1e-5)
    big = torch.tensor([40.0, -60.0], dtype=D)
    assert torch.allclose(logcosh(big), big.abs() - math.log(2), atol=1e-12)
    z, z_old, a = rand(1, 4), rand(1, 4, seed=2), rand(1, 4, seed=3)
    theta = z.clone().requires_grad_()
    lco_logcosh_loss(theta, z_old, a, 2.0, torch.ones(1, dtype=torch.bool)).backward()
    assert torch.allclose(theta.grad, torch.tanh(z - z_old - a / 2.0), atol=1e-12)


def test_11_beta_eff_asymmetry():
    adv = torch.tensor([2.0, 1e-9, 0.0, -1e-9, -3.0], dtype=D)
    assert beta_eff(adv, 0.5).tolist() == [0.5, 0.5, 50.0, 50.0, 50.0]
    assert beta_eff(adv, 0.5, negative_scale=1.0).tolist() == [0.5] * 5


def test_12_zero_mean_fill():
    for seed in range(4):
        pi = rand(3, 10, seed=seed).softmax(-1)
        known = topk_support(rand(3, 10, seed=seed + 50), 3)
        filled = zero_mean_fill(pi, rand(3, 10, seed=seed + 100), known)
        unknown_mass = torch.where(known, 0.0, pi).sum(-1)
        ok = unknown_mass > 0.1
        assert ok.any()
        assert torch.allclose((pi * filled).sum(-1)[ok], torch.zeros(int(ok.sum()), dtype=D), atol=1e-12)


# --- convexity contrasts ------------------------------------------------------------------------------


def test_13_pg_hessian_is_psi_times_sfts():
    z = rand(6)
    pi = z.softmax(-1)
    base = torch.diag(pi) - torch.outer(pi, pi)
    for psi in (1.5, -0.7):
        h = hessian(lambda v, p=psi: pg_token_loss(v, 2, p))(z)
        assert torch.allclose(h, psi * base, atol=1e-12)
        eig = torch.linalg.eigvalsh(h)
        assert (eig >= -1e-7).all() if psi > 0 else (eig <= 1e-7).all()


def test_14_pg_is_hessian_is_indefinite():
    z = torch.zeros(3, dtype=D)
    h = hessian(lambda v: pg_is_token_loss(v, 0, 1.0, math.log(1 / 3)))(z)
    eig = torch.linalg.eigvalsh(h)
    assert eig.min() < -1e-3 and eig.max() > 1e-3
    pi, e = z.softmax(-1), torch.eye(3, dtype=D)[0]
    rho = 1.0  # pi(a) / pi_old(a) at z_old = z
    closed = -rho * (torch.outer(e - pi, e - pi) - (torch.diag(pi) - torch.outer(pi, pi)))
    assert torch.allclose(h, closed, atol=1e-12)


def test_15_sft_is_kld_with_a_one_hot_target():
    z = rand(9)
    for y in (0, 4, 8):
        one_hot = torch.zeros(9, dtype=torch.bool)
        one_hot[y] = True
        lp = lco_log_target(torch.zeros(9, dtype=D), torch.zeros(9, dtype=D), 1.0, one_hot)
        assert float(kld_single(z, lp)) == pytest.approx(float(sft_token_loss(z, y)), rel=1e-10)
        assert torch.allclose(hessian(kld_single)(z, lp), hessian(lambda v, c=y: sft_token_loss(v, c))(z))


# --- helpers and bad input -----------------------------------------------------------------------------


def test_dense_topk_advantages_and_pg_is_loss():
    values, rank = rand(2, 3, 8), rand(2, 3, 8, seed=1)
    adv, support = topk_advantages(values, rank, k=5)
    assert (support.sum(-1) == 5).all() and (adv[~support] == 0).all()
    picked = values[support].reshape(2, 3, 5)
    assert torch.allclose(
        adv[support].reshape(2, 3, 5), picked / picked.std(-1, unbiased=False, keepdim=True)
    )
    centred, _ = topk_advantages(values, rank, k=5, center=True)
    assert torch.allclose(centred[support].reshape(2, 3, 5).mean(-1), torch.zeros(2, 3, dtype=D), atol=1e-12)
    logp, old, a = rand(2, 4), rand(2, 4, seed=1), rand(2, 4, seed=2)
    m = torch.tensor([[True, True, False, True], [False, True, True, True]])
    assert float(pg_is_loss(logp, old, a, m)) == pytest.approx(float(-(torch.exp(logp - old) * a)[m].mean()))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: lco_loss("ppo", *[torch.zeros(2, 3)] * 3, 1.0, torch.ones(2, dtype=torch.bool)),
            "unknown variant",
        ),
        (lambda: lco_log_target(torch.zeros(2, 3), torch.zeros(2, 3), 0.0), "beta must be > 0"),
        (lambda: lco_log_target(torch.zeros(2, 3), torch.zeros(2, 3), -1.0), "beta must be > 0"),
        (
            lambda: lco_log_target(
                torch.zeros(2, 3), torch.zeros(2, 3), 1.0, torch.tensor([[1, 0, 0], [0, 0, 0]])
            ),
            "excludes every token",
        ),
        (lambda: lco_log_target(torch.zeros(2, 3), torch.zeros(2, 4), 1.0), "shapes differ"),
        (
            lambda: lco_kld_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3, dtype=torch.bool)),
            "mask shape",
        ),
        (
            lambda: lco_mse_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2), 1.0, torch.ones(2)),
            "shapes",
        ),
        (lambda: lco_mse_loss(*[torch.zeros(1, 3)] * 3, 1.0, torch.ones(1), anchor="new"), "anchor"),
    ],
)
def test_bad_input_stops_with_one_line(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)
