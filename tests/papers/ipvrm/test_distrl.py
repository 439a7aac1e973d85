"""DistRL: spec invariants 9-12 and 14 and the sampled-token advantage of both variants, against float64
loops and autograd."""

import math

import pytest
import torch

from papers.ipvrm.distrl import (
    candidate_branch_loss,
    candidate_mask,
    candidate_td_advantages,
    clipped_surrogate_loss,
    discounted_suffix_sums,
    distrl_sampled_advantages,
    final_position_mask,
    grpo_outcome_advantages,
    prefix_value_std,
    token_branch_loss,
    topk_with_forced_sampled,
)

D = torch.float64
GROUPS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
LABELS = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1, 0, 1])


def td_batch(seed=0, b=10, t=6):
    g = torch.Generator().manual_seed(seed)
    td = torch.randn(b, t, generator=g, dtype=D)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        mask[i, 1 : t - i % 3] = True
    return torch.where(mask, td, torch.zeros_like(td)), mask


# invariant 9
def test_grpo_advantage_loop_zero_mean_and_constant_groups():
    adv = grpo_outcome_advantages(LABELS, GROUPS)
    for g in set(GROUPS):
        rows = [i for i, x in enumerate(GROUPS) if x == g]
        r = [float(LABELS[i]) for i in rows]
        mu = sum(r) / len(r)
        sd = max(math.sqrt(sum((x - mu) ** 2 for x in r) / len(r)), 1e-6)
        assert [float(adv[i]) for i in rows] == pytest.approx([(x - mu) / sd for x in r])
        assert abs(float(adv[rows].sum())) < 1e-12
    assert (adv[4:8] == 0).all()  # all-correct group


# invariant 10
def test_gae_gamma_lambda_one_and_zero():
    td, mask = td_batch()
    one, zero = discounted_suffix_sums(td, mask, 1.0), discounted_suffix_sums(td, mask, 0.0)
    half = discounted_suffix_sums(td, mask, 0.5)
    for i in range(td.shape[0]):
        pos = [t for t in range(td.shape[1]) if mask[i, t]]
        for j, t in enumerate(pos):
            assert float(one[i, t]) == pytest.approx(sum(float(td[i, u]) for u in pos[j:]))
            assert float(zero[i, t]) == pytest.approx(float(td[i, t]))
            want = sum(0.5 ** (k - j) * float(td[i, pos[k]]) for k in range(j, len(pos)))
            assert float(half[i, t]) == pytest.approx(want)
    assert (one[~mask] == 0).all()


def test_prefix_value_std_by_loop():
    td, mask = td_batch(1)
    values = []
    for i in range(td.shape[0]):
        cum = 0.0
        for t in range(td.shape[1]):
            if mask[i, t]:
                cum += float(td[i, t])
                values.append(cum)
    mu = sum(values) / len(values)
    want = math.sqrt(sum((v - mu) ** 2 for v in values) / len(values))
    assert float(prefix_value_std(td, mask)) == pytest.approx(want, rel=1e-12)
    assert float(prefix_value_std(torch.zeros_like(td), mask)) == 1e-6


def _whiten(xs):
    mu = sum(xs) / len(xs)
    var = sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)
    return [(x - mu) / math.sqrt(var + 1e-8) for x in xs]


def test_sampled_advantages_code_variant_by_loop():
    td, mask = td_batch(2)
    got = distrl_sampled_advantages(td, mask, LABELS, GROUPS, "code")
    grpo = grpo_outcome_advantages(LABELS, GROUPS)
    valid = [(i, t) for i in range(10) for t in range(6) if mask[i, t]]
    mean = sum(float(td[i, t]) for i, t in valid) / len(valid)
    sigma = float(prefix_value_std(td, mask))
    gae = {}
    for i in range(10):
        pos = [t for t in range(6) if mask[i, t]]
        for j, t in enumerate(pos):
            gae[(i, t)] = sum((float(td[i, u]) - mean) / sigma for u in pos[j:])
    white = dict(zip(valid, _whiten([gae[k] for k in valid])))
    for i, t in valid:
        assert float(got[i, t]) == pytest.approx(float(grpo[i]) + 0.05 * white[(i, t)], rel=1e-10)
    assert (got[~mask] == 0).all()


def test_sampled_advantages_paper_variant_by_loop():
    td, mask = td_batch(3)
    got = distrl_sampled_advantages(td, mask, LABELS, GROUPS, "paper", gamma_lambda=0.9)
    grpo = grpo_outcome_advantages(LABELS, GROUPS)
    for g in set(GROUPS):
        rows = [i for i, x in enumerate(GROUPS) if x == g]
        xs = [float(td[i, t]) for i in rows for t in range(6) if mask[i, t]]
        mu = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs))
        for i in rows:
            pos = [t for t in range(6) if mask[i, t]]
            for j, t in enumerate(pos):
                gae = sum(
                    0.9 ** (k - j) * (float(td[i, pos[k]]) - mu) / (sd + 1e-6) for k in range(j, len(pos))
                )
                assert float(got[i, t]) == pytest.approx(float(grpo[i]) + gae, rel=1e-10)


# invariant 14 and the code's top-k
def test_topk_forces_the_sampled_token_into_slot_zero():
    logits = torch.tensor([[[0.0, 5.0, 4.0, 3.0, 2.0, 1.0], [0.0, 5.0, 4.0, 3.0, 2.0, 1.0]]])
    sampled = torch.tensor([[3, 0]])  # in the top-3 / outside it
    got = topk_with_forced_sampled(logits, sampled, 3)
    assert got[0, 0].tolist() == [3, 2, 1]  # swapped with slot 0
    assert got[0, 1].tolist() == [0, 1, 2]  # inserted, the others shifted, the 3rd dropped
    assert topk_with_forced_sampled(logits, torch.tensor([[1, 1]]), 3)[0, 0].tolist() == [1, 2, 3]


def test_candidate_mask_rules():
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(3, 5, 4, generator=g, dtype=D) * 0.3
    probs[:, :, 0] = 0.01  # the sampled token is unlikely
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    cand = candidate_mask(probs, mask, 0.1)
    final = final_position_mask(mask)
    for i in range(3):
        last = max(t for t in range(5) if mask[i, t])
        assert final[i].tolist() == [t == last for t in range(5)]
        for t in range(5):
            valid = bool(mask[i, t]) and t != last
            assert bool(cand[i, t, 0]) == valid
            for k in range(1, 4):
                assert bool(cand[i, t, k]) == (valid and float(probs[i, t, k]) > 0.1)
    paper = candidate_mask(probs, mask, 0.1, force_sampled=False)
    assert not paper[..., 0].any()


# invariant 11: the candidate-branch gradient at rho = 1
@pytest.mark.parametrize("full_cover", [False, True])
def test_candidate_gradient_at_ratio_one(full_cover):
    V = 6
    g = torch.Generator().manual_seed(5)
    z = torch.randn(V, generator=g, dtype=D).requires_grad_(True)
    pi = torch.softmax(z.detach(), -1)
    ids = torch.arange(V) if full_cover else torch.tensor([2, 0, 4])
    adv = torch.randn(len(ids), generator=g, dtype=D)
    if full_cover:
        adv = torch.full((V,), 0.7, dtype=D)
    logp = torch.log_softmax(z, -1)[ids]
    loss = candidate_branch_loss(
        logp[None, None],
        logp.detach()[None, None],
        adv[None, None],
        torch.ones(1, 1, len(ids), dtype=torch.bool),
        torch.ones(1, 1, dtype=torch.bool),
    )
    loss.backward()
    in_c = {int(j): float(a) for j, a in zip(ids, adv)}
    base = sum(float(pi[j]) * a for j, a in in_c.items())
    for j in range(V):
        want = -float(pi[j]) * (in_c.get(j, 0.0) - base)
        assert float(z.grad[j]) == pytest.approx(want, abs=1e-12)
    if full_cover:
        assert float(z.grad.abs().max()) < 1e-12


def test_candidate_aggregations_by_loop():
    g = torch.Generator().manual_seed(6)
    B, T, K = 2, 4, 3
    lp_old = torch.log(torch.rand(B, T, K, generator=g, dtype=D) * 0.5 + 0.05)
    lp = lp_old + 0.4 * torch.randn(B, T, K, generator=g, dtype=D)
    adv = torch.randn(B, T, K, generator=g, dtype=D)
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)  # unequal T: per-row 1/T matters
    cand = candidate_mask(lp_old.exp(), mask, 0.2)

    def term(i, t, k, lo, hi):
        rho, a = math.exp(float(lp[i, t, k] - lp_old[i, t, k])), float(adv[i, t, k])
        loss = max(-a * rho, -a * min(max(rho, 1 - lo), 1 + hi))
        return min(loss, -3 * a) if a < 0 else loss

    kept = [(i, t, k) for i in range(B) for t in range(T) for k in range(K) if cand[i, t, k]]
    paper = (
        sum(
            sum(math.exp(float(lp_old[i, t, k])) * term(i, t, k, 0.2, 0.28) for (a, t, k) in kept if a == i)
            / int(mask[i].sum())
            for i in range(B)
        )
        / B
    )
    num = sum(math.exp(float(lp_old[i, t, k])) * term(i, t, k, 0.2, 0.2) for i, t, k in kept)
    den = sum(math.exp(float(lp_old[i, t, k])) for i, t, k in kept)
    assert float(candidate_branch_loss(lp, lp_old, adv, cand, mask)) == pytest.approx(paper, rel=1e-12)
    code = candidate_branch_loss(lp, lp_old, adv, cand, mask, clip_high=0.2, aggregation="code")
    assert float(code) == pytest.approx(num / den, rel=1e-12)


def test_candidate_td_advantages():
    rm = torch.tensor([[[-1.0, -2.0]]], dtype=D)
    old = torch.tensor([[[-1.5, -1.0]]], dtype=D)
    got = candidate_td_advantages(rm, old, 10.0, torch.tensor(2.0, dtype=D))
    assert got.tolist() == [[[2.5, -5.0]]]
    assert (candidate_td_advantages(old, old, 10.0, 1.0) == 0).all()  # invariant 1


# invariant 12: clipping and dual clip
def test_clip_zeroes_gradient_outside_and_dual_clip_caps():
    for a, rho, zero in [(1.0, 1.5, True), (1.0, 0.5, False), (-1.0, 0.5, True), (-1.0, 1.1, False)]:
        r = torch.tensor(rho, dtype=D, requires_grad=True)
        clipped_surrogate_loss(r, torch.tensor(a, dtype=D), 0.2, 0.28, dual_clip=None).backward()
        assert (float(r.grad) == 0) == zero
    r = torch.tensor(5.0, dtype=D, requires_grad=True)
    loss = clipped_surrogate_loss(r, torch.tensor(-2.0, dtype=D), dual_clip=3.0)
    assert float(loss.detach()) == 6.0  # -c A, not -A rho = 10
    loss.backward()
    assert float(r.grad) == 0
    assert (
        float(clipped_surrogate_loss(torch.tensor(1.25, dtype=D), torch.tensor(1.0, dtype=D))) == -1.25
    )  # inside 1.28
    assert float(
        clipped_surrogate_loss(torch.tensor(1.25, dtype=D), torch.tensor(1.0, dtype=D), 0.2, 0.2)
    ) == pytest.approx(-1.2)


def test_token_branch_is_token_mean():
    g = torch.Generator().manual_seed(7)
    old = -torch.rand(2, 5, generator=g, dtype=D)
    new = old + 0.3 * torch.randn(2, 5, generator=g, dtype=D)
    adv = torch.randn(2, 5, generator=g, dtype=D)
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=torch.bool)
    terms = []
    for i in range(2):
        for t in range(5):
            if mask[i, t]:
                rho, a = math.exp(float(new[i, t] - old[i, t])), float(adv[i, t])
                loss = max(-a * rho, -a * min(max(rho, 0.8), 1.28))
                terms.append(min(loss, -3 * a) if a < 0 else loss)
    assert float(token_branch_loss(new, old, adv, mask)) == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_bad_inputs():
    td, mask = td_batch()
    with pytest.raises(ValueError, match="variant"):
        distrl_sampled_advantages(td, mask, LABELS, GROUPS, "mixed")
    with pytest.raises(ValueError, match="aggregation"):
        candidate_branch_loss(
            td[..., None], td[..., None], td[..., None], mask[..., None], mask, aggregation="x"
        )
    with pytest.raises(ValueError, match="k must be in"):
        topk_with_forced_sampled(torch.zeros(1, 2, 4), torch.zeros(1, 2), 5)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        clipped_surrogate_loss(torch.ones(1), torch.ones(1), dual_clip=0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        token_branch_loss(td, td[:, :3], td, mask)
