"""Proxy-KD's losses against independent float64 computations (spec "Invariants for unit tests")."""

import math

import numpy as np
import pytest
import torch

from papers.proxykd.proxykd import (
    dpo_loss,
    nll_loss,
    proxy_sample_weights,
    sequence_logprobs,
    slim_to_dense,
    student_loss,
    topk_forward_kl,
)


def _logits(*shape, seed=0, scale=2.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _reference_topk_kl(student, proxy, mask, k, weights=None):
    """Loops over positions in numpy (float64): q = softmax of the proxy's top-k, KL(q || softmax(student))."""
    s, p, m = student.numpy(), proxy.numpy(), mask.numpy()
    total, count = 0.0, 0
    for b in range(s.shape[0]):
        for t in range(s.shape[1]):
            if not m[b, t]:
                continue
            top = np.argsort(-p[b, t])[:k]
            q = np.exp(p[b, t, top] - p[b, t, top].max())
            q /= q.sum()
            log_ps = s[b, t] - s[b, t].max()
            log_ps = log_ps - np.log(np.exp(log_ps).sum())
            kl = float(np.sum(q * (np.log(q) - log_ps[top])))
            total += kl * (1.0 if weights is None else float(weights[b]))
            count += 1
    return total / count


@pytest.mark.parametrize("k", [1, 3, 10, 17])
def test_topk_kl_matches_a_float64_loop_with_and_without_weights(k):
    s, p = _logits(3, 5, 17, seed=1), _logits(3, 5, 17, seed=2)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(3)) > 0.3
    w = torch.tensor([0.2, 1.0, 0.7], dtype=torch.float64)
    assert topk_forward_kl(s, p, mask, k=k).item() == pytest.approx(
        _reference_topk_kl(s, p, mask, k), abs=1e-12
    )
    got = topk_forward_kl(s, p, mask, k=k, weights=w).item()
    assert got == pytest.approx(_reference_topk_kl(s, p, mask, k, w), abs=1e-12)


def test_chunked_equals_plain_value_and_gradient():
    s, p = _logits(4, 9, 50, seed=4).requires_grad_(), _logits(4, 9, 50, seed=5)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 3:] = False
    w = torch.tensor([0.1, 0.5, 0.9, 0.3], dtype=torch.float64)
    plain = topk_forward_kl(s, p, mask, k=10, weights=w, chunk_size=None)
    (g_plain,) = torch.autograd.grad(plain, s)
    chunked = topk_forward_kl(s, p, mask, k=10, weights=w, chunk_size=7)
    (g_chunked,) = torch.autograd.grad(chunked, s)
    assert chunked.item() == pytest.approx(plain.item(), abs=1e-13)
    assert torch.allclose(g_chunked, g_plain, atol=1e-13)


def test_kl_is_nonnegative_and_zero_iff_student_equals_the_renormalised_target():
    p = _logits(2, 4, 12, seed=6)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert topk_forward_kl(_logits(2, 4, 12, seed=7), p, mask, k=5).item() > 0
    # the student's softmax = the top-5 target: kept logits, others -inf
    values, index = p.topk(5, dim=-1)
    student = torch.full_like(p, -1e30).scatter(-1, index, values)
    assert topk_forward_kl(student, p, mask, k=5).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_wrt_student_logits_is_softmax_minus_target():
    s, p = _logits(1, 1, 11, seed=8).requires_grad_(), _logits(1, 1, 11, seed=9)
    mask = torch.ones(1, 1, dtype=torch.bool)
    (grad,) = torch.autograd.grad(topk_forward_kl(s, p, mask, k=4), s)
    values, index = p.topk(4, dim=-1)
    q = torch.zeros_like(p).scatter(-1, index, values.softmax(-1))
    assert torch.allclose(grad, s.detach().softmax(-1) - q, atol=1e-13)
    assert (q == 0).sum() == 11 - 4  # non-kept tokens get exactly 0


def test_k_equal_to_vocab_is_the_full_forward_kl():
    s, p = _logits(2, 3, 8, seed=10), _logits(2, 3, 8, seed=11)
    mask = torch.ones(2, 3, dtype=torch.bool)
    full = (p.softmax(-1) * (p.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean()
    assert topk_forward_kl(s, p, mask, k=8).item() == pytest.approx(full.item(), abs=1e-13)


def test_all_weights_one_is_the_plain_kl_and_zero_weights_reduce_eq11_to_nll():
    s, p = _logits(3, 6, 9, seed=12), _logits(3, 6, 9, seed=13)
    mask = torch.ones(3, 6, dtype=torch.bool)
    ones = torch.ones(3, dtype=torch.float64)
    assert topk_forward_kl(s, p, mask, weights=ones, k=4).item() == pytest.approx(
        topk_forward_kl(s, p, mask, k=4).item(), abs=1e-14
    )
    labels = torch.randint(0, 9, (3, 6), generator=torch.Generator().manual_seed(0))
    labels[:, :2] = -100
    loss, parts = student_loss(s, labels, p, torch.zeros(3, dtype=torch.float64), alpha=100.0, k=4)
    assert loss.item() == pytest.approx(nll_loss(s, labels).item(), abs=1e-14)
    assert parts["kl"] == 0.0


def test_eq11_is_nll_plus_alpha_times_the_weighted_kl_on_the_target_positions():
    s, p = _logits(2, 5, 7, seed=14), _logits(2, 5, 7, seed=15)
    labels = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    labels[0, :2], labels[1, :3] = -100, -100
    w = torch.tensor([0.3, 0.8], dtype=torch.float64)
    loss, _ = student_loss(s, labels, p, w, alpha=2.5, k=3)
    mask = labels[:, 1:] != -100
    kl = _reference_topk_kl(s[:, :-1], p[:, :-1], mask, 3, w)
    logp = s[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    nll = -(logp[mask]).mean().item()
    assert loss.item() == pytest.approx(nll + 2.5 * kl, abs=1e-12)


def test_bad_inputs_are_one_line_errors():
    s, p = _logits(2, 3, 5), _logits(2, 3, 5, seed=1)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.5"):
        topk_forward_kl(s, p, mask, k=6)
    with pytest.raises(ValueError, match=r"weights must have shape \[2\]"):
        topk_forward_kl(s, p, mask, k=3, weights=torch.ones(3))
    with pytest.raises(ValueError, match="mask"):
        topk_forward_kl(s, p, torch.ones(2, 4, dtype=torch.bool), k=3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        slim_to_dense(torch.tensor([[[7]]]), torch.tensor([[[1.0]]]), vocab=5)
    with pytest.raises(ValueError, match=r"mean_logprobs\[1\] is not finite"):
        proxy_sample_weights(torch.tensor([0.0, float("nan")]))


def test_smoothing_option_matches_the_code_quirk_and_zero_is_the_clean_kl():
    s, p = _logits(1, 2, 6, seed=16), _logits(1, 2, 6, seed=17)
    mask = torch.ones(1, 2, dtype=torch.bool)
    eps = 7e-5
    values, index = p.topk(3, dim=-1)
    q = torch.zeros_like(p).scatter(-1, index, values.softmax(-1))
    q, ps = (q + eps) / (1 + 6 * eps), (s.softmax(-1) + eps) / (1 + 6 * eps)
    want = (q * (q.log() - ps.log())).sum(-1).mean().item()
    assert topk_forward_kl(s, p, mask, k=3, smoothing=eps).item() == pytest.approx(want, abs=1e-10)


def test_slim_logits_round_trip_gives_the_same_kl_as_the_full_proxy():
    s, p = _logits(2, 4, 30, seed=18), _logits(2, 4, 30, seed=19)
    mask = torch.ones(2, 4, dtype=torch.bool)
    values, index = p.topk(10, dim=-1)
    dense = slim_to_dense(index, values, 30)
    assert topk_forward_kl(s, dense, mask, k=10).item() == pytest.approx(
        topk_forward_kl(s, p, mask, k=10).item(), abs=1e-13
    )


def test_weights_eq9_invariants():
    ell = torch.tensor([-2.0, -1.0, -0.5, -3.0, -1.7], dtype=torch.float64)
    w = proxy_sample_weights(ell)
    mu, sd = ell.mean().item(), math.sqrt(((ell - ell.mean()) ** 2).mean().item())  # population std
    want = [1 / (1 + math.exp(-(x - mu) / sd)) for x in ell.tolist()]
    assert w.tolist() == pytest.approx(want, abs=1e-15)
    assert ((w > 0) & (w < 1)).all()
    order = ell.argsort()
    assert (w[order].diff() > 0).all()  # monotone in l
    z = torch.logit(w)  # (l - mu) / s
    assert z.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(proxy_sample_weights(ell + 7.3), w, atol=1e-14)  # shift-invariant
    at_mean = proxy_sample_weights(torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64))
    assert at_mean[1].item() == pytest.approx(0.5, abs=1e-15)
    code = proxy_sample_weights(ell, scale=0.4)
    assert code.tolist() == pytest.approx([1 / (1 + math.exp(-(x - mu) / (0.4 * sd))) for x in ell.tolist()])


def test_dpo_is_log2_at_the_reference_and_moves_the_right_way():
    lp = torch.tensor([-3.0, -5.0], dtype=torch.float64)
    assert dpo_loss(lp, lp + 1, lp, lp + 1, beta=0.1).item() == pytest.approx(math.log(2), abs=1e-15)
    base = dpo_loss(lp, lp, lp, lp, beta=1.0).item()
    assert dpo_loss(lp + 0.5, lp, lp, lp, beta=1.0).item() < base  # log pi(y_w) rises
    assert dpo_loss(lp, lp - 0.5, lp, lp, beta=1.0).item() < base  # log pi(y_l) falls
    want = -math.log(1 / (1 + math.exp(-0.5 * ((-1.0 - -2.0) - (-4.0 - -3.0)))))
    one = dpo_loss(*(torch.tensor([x], dtype=torch.float64) for x in (-1.0, -4.0, -2.0, -3.0)), beta=0.5)
    assert one.item() == pytest.approx(want, abs=1e-15)


def test_mean_logprobs_are_invariant_to_appended_masked_tokens_and_nll_ignores_prompt_labels():
    logits = _logits(1, 6, 9, seed=20)
    labels = torch.tensor([[-100, -100, 3, 4, 5, 1]])
    longer = torch.cat([logits, _logits(1, 3, 9, seed=21)], dim=1)
    padded = torch.cat([labels, torch.full((1, 3), -100)], dim=1)
    for red in ("mean", "sum"):
        assert sequence_logprobs(longer, padded, red).item() == pytest.approx(
            sequence_logprobs(logits, labels, red).item(), abs=1e-14
        )
    logp = logits[0, :-1].log_softmax(-1)
    want = sum(logp[t - 1, labels[0, t]].item() for t in range(2, 6))
    assert sequence_logprobs(logits, labels).item() == pytest.approx(want, abs=1e-13)
    assert sequence_logprobs(logits, labels, "mean").item() == pytest.approx(want / 4, abs=1e-13)
    # NLL masks prompt tokens: the input ids there do not enter the loss (only the logits do)
    assert nll_loss(logits, labels).item() == pytest.approx(-want / 4, abs=1e-13)
