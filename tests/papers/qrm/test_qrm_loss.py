"""Q-RM maths: the spec's invariants 1-8 against independent float64 loops, gradients vs autograd, baselines."""

import math

import pytest
import torch

from papers.qrm.qrm import (
    aligned_token_logprobs,
    dpo_loss,
    dpo_token_rewards,
    implicit_prm_loss,
    last_token_scores,
    normalize_token_rewards,
    orm_loss,
    orm_token_rewards,
    overwrite_last_with_mean,
    pgtg_loss,
    qrm_loss,
    qrm_ppo_rewards,
    qrm_reinforce_rewards,
    step_prm_loss,
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def batch(seed=0, b=4, seq=9, prompt=3):
    """Random scores with response masks of different lengths after a prompt of `prompt` positions."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, seq, generator=g, dtype=torch.float64) * 3
    mask = torch.zeros(b, seq, dtype=torch.bool)
    for i in range(b):
        n = int(torch.randint(1, seq - prompt + 1, (1,), generator=g))
        mask[i, prompt : prompt + n] = True
    return z, mask


def ref_loss(zc, mc, zr, mr, beta, gamma):
    """Independent float64 loop of softplus(gamma - beta * (mean_w - mean_l))."""
    total = 0.0
    for i in range(zc.shape[0]):
        w = [float(v) for v, m in zip(zc[i], mc[i]) if m]
        lo = [float(v) for v, m in zip(zr[i], mr[i]) if m]
        total += softplus(gamma - beta * (sum(w) / len(w) - sum(lo) / len(lo)))
    return total / zc.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_float64_reference(seed):
    zc, mc = batch(seed)
    zr, mr = batch(seed + 10)
    got = qrm_loss(zc, mc, zr, mr, beta=0.2, gamma=2.0).item()
    assert got == pytest.approx(ref_loss(zc, mc, zr, mr, 0.2, 2.0), abs=1e-12)


def test_invariant1_equal_means():
    z = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    m = torch.tensor([[False, True, True, True]])
    z2 = torch.tensor([[9.0, 2.0, 2.0, 0.0]], dtype=torch.float64)
    m2 = torch.tensor([[False, True, True, False]])
    loss = qrm_loss(z, m, z2, m2).item()
    assert loss == pytest.approx(math.log(1 + math.exp(2.0)), abs=1e-12)
    assert loss == pytest.approx(2.126928, abs=1e-6)


def test_invariant2_gradients_exact_and_vs_autograd():
    beta, gamma = 0.2, 2.0
    zc, mc = batch(3)
    zr, mr = batch(4)
    zc.requires_grad_(True)
    zr.requires_grad_(True)
    qrm_loss(zc, mc, zr, mr, beta, gamma).backward()
    b = zc.shape[0]
    for i in range(b):
        n, m = int(mc[i].sum()), int(mr[i].sum())
        delta = float(zc.detach()[i][mc[i]].mean() - zr.detach()[i][mr[i]].mean())
        s = sigmoid(gamma - beta * delta)
        # the batch mean divides every pair's gradient by b
        assert torch.allclose(zc.grad[i][mc[i]], torch.full((n,), -beta * s / n / b, dtype=torch.float64))
        assert torch.allclose(zr.grad[i][mr[i]], torch.full((m,), beta * s / m / b, dtype=torch.float64))
        assert float(zc.grad[i].sum()) == pytest.approx(-float(zr.grad[i].sum()), abs=1e-15)
    # invariant 5: prompt and padding positions get exactly zero gradient
    assert (zc.grad[~mc] == 0).all() and (zr.grad[~mr] == 0).all()
    zc2, zr2 = zc.detach().clone().requires_grad_(True), zr.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, c: qrm_loss(a, mc, c, mr, beta, gamma), (zc2, zr2))


def test_invariant3_shifts():
    zc, mc = batch(5)
    zr, mr = batch(6)
    base = qrm_loss(zc, mc, zr, mr).item()
    assert qrm_loss(zc + 7.5, mc, zr + 7.5, mr).item() == pytest.approx(base, abs=1e-12)
    c = 1.7
    shifted = qrm_loss(zc + c, mc, zr, mr).item()
    assert shifted == pytest.approx(ref_loss(zc + c, mc, zr, mr, 0.2, 2.0), abs=1e-12)
    # Delta changed by exactly c: same as moving the rejected side by -c
    assert shifted == pytest.approx(qrm_loss(zc, mc, zr - c, mr).item(), abs=1e-12)


def one_pair(delta):
    zc = torch.tensor([[float(delta)]], dtype=torch.float64)
    zr = torch.zeros(1, 1, dtype=torch.float64)
    m = torch.ones(1, 1, dtype=torch.bool)
    return zc, m, zr, m


def test_invariant4_monotone_and_limits():
    deltas = torch.linspace(-50, 50, 201)
    losses = [qrm_loss(*one_pair(d)).item() for d in deltas]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert qrm_loss(*one_pair(1e4)).item() < 1e-12
    d = -1e3
    assert qrm_loss(*one_pair(d)).item() == pytest.approx(2.0 - 0.2 * d, rel=1e-12)


def test_invariant5_padding_values_and_repetition_do_not_matter():
    zc, mc = batch(7)
    zr, mr = batch(8)
    base = qrm_loss(zc, mc, zr, mr).item()
    noisy = zc.clone()
    noisy[~mc] = torch.randn(int((~mc).sum()), dtype=torch.float64) * 1e6
    assert qrm_loss(noisy, mc, zr, mr).item() == pytest.approx(base, abs=1e-12)
    # repeating a response's token scores (same mean) leaves the loss unchanged
    z1 = torch.tensor([[0.0, 1.0, -2.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    m1 = torch.tensor([[False, True, True, False, False, False, False]])
    z2 = torch.tensor([[0.0, 1.0, -2.0, 1.0, -2.0, 1.0, -2.0]], dtype=torch.float64)
    m2 = torch.tensor([[False, True, True, True, True, True, True]])
    r = torch.tensor([[0.0, 0.3]], dtype=torch.float64)
    rm = torch.tensor([[True, True]])
    assert qrm_loss(z1, m1, r, rm).item() == pytest.approx(qrm_loss(z2, m2, r, rm).item(), abs=1e-12)


def test_invariant6_reduces_to_bradley_terry():
    for d in (-3.0, 0.0, 0.4, 5.0):
        assert qrm_loss(*one_pair(d), beta=1.0, gamma=0.0).item() == pytest.approx(
            -math.log(sigmoid(d)), abs=1e-12
        )
        s = torch.tensor([d], dtype=torch.float64)
        assert orm_loss(s, torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(
            -math.log(sigmoid(d)), abs=1e-12
        )


def test_invariant7_normalisation():
    z, mask = batch(9, b=6, seq=12)
    for sub_mean in (False, True):
        r = normalize_token_rewards(z, mask, sub_mean=sub_mean)
        vals = [float(v) for v, m in zip(z.flatten(), mask.flatten()) if m]
        mu = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))  # np.std, ddof 0
        expected = [((v - mu) if sub_mean else v) / std for v in vals]
        assert torch.allclose(r[mask], torch.tensor(expected, dtype=torch.float64), atol=1e-12)
        assert float(r[mask].std(unbiased=False)) == pytest.approx(1.0, abs=1e-12)
        assert (r[~mask] == 0).all()
    assert float(normalize_token_rewards(z, mask, True)[mask].mean()) == pytest.approx(0.0, abs=1e-12)


def test_invariant8_eos_overwrite():
    z, mask = batch(10, b=5, seq=10)
    r = normalize_token_rewards(z, mask)
    out = overwrite_last_with_mean(r, mask)
    for i in range(z.shape[0]):
        idx = [t for t in range(z.shape[1]) if mask[i, t]]
        mean = sum(float(r[i, t]) for t in idx) / len(idx)
        assert float(out[i, idx[-1]]) == pytest.approx(mean, abs=1e-12)
        assert torch.equal(out[i, idx[:-1]], r[i, idx[:-1]])
    assert (out[~mask] == 0).all()
    assert torch.equal(qrm_reinforce_rewards(z, mask), out)
    assert torch.equal(qrm_reinforce_rewards(z, mask, eos_overwrite=False), r)


def test_ppo_rewards_subtract_abs_kl_on_response_tokens():
    z, mask = batch(11)
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(z.shape, generator=g, dtype=torch.float64)
    ref = -torch.rand(z.shape, generator=g, dtype=torch.float64)
    r = qrm_ppo_rewards(z, mask, old, ref, kl_coef=0.01)
    expected = normalize_token_rewards(z, mask) - 0.01 * (old - ref).abs() * mask
    assert torch.allclose(r, expected, atol=1e-15)
    assert (r[~mask] == 0).all()


def test_last_token_scores_and_orm_token_rewards():
    z, mask = batch(12)
    s = last_token_scores(z, mask)
    for i in range(z.shape[0]):
        last = max(t for t in range(z.shape[1]) if mask[i, t])
        assert float(s[i]) == float(z[i, last])
    b = orm_token_rewards(s, mask, "broadcast")
    assert torch.equal(b[mask], s.repeat_interleave(mask.sum(1))) and (b[~mask] == 0).all()
    last = orm_token_rewards(s, mask, "last")
    assert torch.equal(last.sum(1), s) and int((last != 0).sum()) <= z.shape[0]
    assert torch.equal(last_token_scores(last, mask), s)
    with pytest.raises(ValueError, match="mode must be one of"):
        orm_token_rewards(s, mask, "mean")


def test_dpo_alignment_and_official_shift_differ_by_one_position():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g, dtype=torch.float64)
    ids = torch.randint(1, 11, (2, 6), generator=g)
    right = aligned_token_logprobs(logits, ids)
    shifted = aligned_token_logprobs(logits, ids, official_shift=True)
    logp = torch.log_softmax(logits, -1)
    for b in range(2):
        assert float(right[b, 0]) == 0.0
        for t in range(1, 6):
            assert float(right[b, t]) == pytest.approx(float(logp[b, t - 1, ids[b, t]]), abs=1e-12)
    assert torch.equal(shifted[:, :-1], right[:, 1:])  # exactly one position early
    assert torch.allclose(shifted[:, -1], logp[:, -1, 0])  # the last reads the pad id's log-prob
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]]).bool()
    ref = torch.zeros_like(right)
    r = dpo_token_rewards(right, ref, mask, beta=0.1)
    assert torch.allclose(r, 0.1 * right * mask)


def test_dpo_loss_summed_logprobs():
    lw, ll = torch.tensor([-3.0, -2.0]), torch.tensor([-4.0, -1.0])
    rw, rl = torch.tensor([-3.5, -2.5]), torch.tensor([-3.0, -1.5])
    expected = sum(
        -math.log(sigmoid(0.1 * ((a - c) - (b - d))))
        for a, b, c, d in zip(lw.tolist(), ll.tolist(), rw.tolist(), rl.tolist())
    )
    assert dpo_loss(lw, ll, rw, rl, beta=0.1).item() == pytest.approx(expected / 2, abs=1e-6)


def test_implicit_prm_bce():
    lp, mask = batch(13)
    ref, _ = batch(14)
    labels = torch.tensor([1, 0, 1, 0])
    for beta in (1.0, 0.05):
        total = 0.0
        for i in range(4):
            x = beta * float((lp[i][mask[i]] - ref[i][mask[i]]).sum())
            p = sigmoid(x)
            total += -(math.log(p) if labels[i] else math.log(1 - p))
        got = implicit_prm_loss(lp, ref, mask, labels, beta=beta).item()
        assert got == pytest.approx(total / 4, rel=1e-9)


def test_step_prm_mse_on_tanh():
    s, _ = batch(15)
    ends = torch.zeros_like(s, dtype=torch.bool)
    ends[:, [4, 7]] = True
    ratings = torch.zeros_like(s)
    ratings[:, 4], ratings[:, 7] = 1.0, -1.0
    total = sum(
        ((math.tanh(float(s[i, 4])) - 1) ** 2 + (math.tanh(float(s[i, 7])) + 1) ** 2) / 2 for i in range(4)
    )
    assert step_prm_loss(s, ends, ratings).item() == pytest.approx(total / 4, abs=1e-12)


def test_pgtg_loss():
    zc, mc = batch(16)
    zr, mr = batch(17)
    total = 0.0
    for i in range(4):
        w = [sigmoid(float(v)) for v, m in zip(zc[i], mc[i]) if m]
        lo = [sigmoid(float(v)) for v, m in zip(zr[i], mr[i]) if m]
        c = (len(w) + len(lo)) / 2
        total += softplus(c * sum(lo) / len(lo) - c * sum(w) / len(w))
    assert pgtg_loss(zc, mc, zr, mr).item() == pytest.approx(total / 4, abs=1e-12)


def test_bad_inputs_raise_one_clear_error():
    z, mask = batch(18)
    empty = mask.clone()
    empty[2] = False
    with pytest.raises(ValueError, match="mask_rejected row 2 has no response token"):
        qrm_loss(z, mask, z, empty)
    with pytest.raises(ValueError, match=r"mask_chosen shape \(4, 8\) != scores shape \(4, 9\)"):
        qrm_loss(z, mask[:, :-1], z, mask)
    with pytest.raises(ValueError, match="chosen rows"):
        qrm_loss(z, mask, z[:2], mask[:2])
    with pytest.raises(ValueError, match="no response token"):
        normalize_token_rewards(z, empty)
    with pytest.raises(ValueError, match="zero spread"):
        normalize_token_rewards(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores must be"):
        orm_loss(z, z)
