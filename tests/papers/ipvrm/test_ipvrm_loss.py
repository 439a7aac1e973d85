"""The spec's RM invariants 1-5 and 7 (shared/papers/ipvrm.md, "Invariants for unit tests") for IPVRM,
Implicit PRM and DPO-RM, each against an independent float64 computation written here with loops."""

import math

import pytest
import torch

from papers.ipvrm.ipvrm import (
    MARGIN_OFFICIAL_README,
    MARGIN_PAPER,
    dpo_rm_loss,
    implicit_prm_loss,
    ipvrm_loss,
    ipvrm_loss_token_mean,
    ipvrm_sequence_losses,
    ipvrm_token_losses,
    normalized_prefix_values,
    prefix_values,
    temporal_weights,
)

D = torch.float64


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def batch(seed=0, b=3, t=7):
    """Random log-probs with a left prompt region and right padding of different lengths per row."""
    g = torch.Generator().manual_seed(seed)
    pol = -torch.rand(b, t, generator=g, dtype=D) * 3
    ref = -torch.rand(b, t, generator=g, dtype=D) * 3
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        start, end = 1 + i % 2, t - i
        mask[i, start:end] = True
    return pol, ref, mask


def ref_ipvrm_sequence(pol, ref, mask, label, beta, margin, weighting="uniform", offset=0.0):
    """One row's loss with python floats and loops: the paper's Eq. 9 (and 16-18)."""
    ls = [float(pol[t] - ref[t]) for t in range(len(mask)) if mask[t]]
    T, s = len(ls), 2 * label - 1
    terms, weights, cum = [], [], 0.0
    for k, lt in enumerate(ls, start=1):
        cum += lt
        vbar = beta * cum / k
        terms.append(-logsig(s * (vbar + offset) - margin))
        weights.append({"uniform": 1.0, "late": k / T, "early": 1 - k / T}[weighting])
    if sum(weights) == 0:
        weights = [1.0] * T
    return sum(w * x for w, x in zip(weights, terms)) / sum(weights)


@pytest.mark.parametrize("beta,margin", [(10.0, 5.0), (1.0, 0.0), (0.3, 2.0)])
def test_ipvrm_loss_matches_loop(beta, margin):
    pol, ref, mask = batch()
    labels = torch.tensor([1, 0, 1])
    want = (
        sum(ref_ipvrm_sequence(pol[i], ref[i], mask[i], int(labels[i]), beta, margin) for i in range(3)) / 3
    )
    got = ipvrm_loss(pol, ref, mask, labels, beta=beta, margin=margin)
    assert float(got) == pytest.approx(want, rel=1e-12)


def test_defaults_are_the_papers():
    pol, ref, mask = batch(1)
    labels = torch.tensor([0, 1, 1])
    want = sum(ref_ipvrm_sequence(pol[i], ref[i], mask[i], int(labels[i]), 10.0, 5.0) for i in range(3)) / 3
    assert float(ipvrm_loss(pol, ref, mask, labels)) == pytest.approx(want, rel=1e-12)
    assert MARGIN_PAPER == 5.0 and MARGIN_OFFICIAL_README == 0.0


def test_prefix_values_count_response_tokens_only():
    pol, ref, mask = batch(2)
    lr = pol - ref
    V, vbar = prefix_values(lr, mask, 2.0), normalized_prefix_values(lr, mask, 2.0)
    for i in range(3):
        cum, k = 0.0, 0
        for t in range(mask.shape[1]):
            if not mask[i, t]:
                assert V[i, t] == 0 and vbar[i, t] == 0
                continue
            cum, k = cum + float(lr[i, t]), k + 1
            assert float(V[i, t]) == pytest.approx(2 * cum, rel=1e-12)
            assert float(vbar[i, t]) == pytest.approx(2 * cum / k, rel=1e-12)


# invariant 1: at initialisation (pi_phi = pi_ref) every loss is softplus(m) / log 2
@pytest.mark.parametrize("margin", [0.0, 5.0, 1.5])
def test_at_init_ipvrm_is_softplus_margin(margin):
    pol, _, mask = batch(3)
    for label in (0, 1):
        labels = torch.full((3,), label)
        got = ipvrm_loss(pol, pol.clone(), mask, labels, margin=margin)
        assert float(got) == pytest.approx(math.log1p(math.exp(margin)), rel=1e-12)
        tok = ipvrm_token_losses(torch.zeros(3, 7, dtype=D), labels, mask, margin)
        assert torch.allclose(tok[mask], torch.full_like(tok[mask], math.log1p(math.exp(margin))))


def test_at_init_baselines_are_log2():
    pol, _, mask = batch(4)
    labels = torch.tensor([1, 0, 1])
    assert float(implicit_prm_loss(pol, pol.clone(), mask, labels)) == pytest.approx(math.log(2))
    assert float(dpo_rm_loss(pol, pol, mask, pol.flip(0), pol.flip(0), mask.flip(0))) == pytest.approx(
        math.log(2)
    )


# invariant 2: label symmetry
def test_label_symmetry():
    pol, ref, mask = batch(5)
    ones, zeros = torch.ones(3), torch.zeros(3)
    for fn in (ipvrm_loss, implicit_prm_loss):
        a = fn(pol, ref, mask, ones)
        b = fn(ref, pol, mask, zeros)  # swapping pi_phi and pi_ref negates every l_t
        assert float(a) == pytest.approx(float(b), rel=1e-12)


# invariant 3: the IPVRM gradient (beta/T) sum_{t>=i} g_t / t
@pytest.mark.parametrize("label", [0, 1])
def test_ipvrm_gradient_closed_form(label):
    beta, margin = 1.5, 0.7
    pol, ref, mask = batch(6, b=1, t=9)
    pol = pol.requires_grad_(True)
    ipvrm_loss(pol, ref, mask, torch.tensor([label]), beta=beta, margin=margin).backward()
    pos = [t for t in range(9) if mask[0, t]]
    ls = [float(pol[0, t].detach() - ref[0, t]) for t in pos]
    T = len(ls)
    g, cum = [], 0.0
    for k, lt in enumerate(ls, start=1):
        cum += lt
        vbar = beta * cum / k
        sig = 1 / (1 + math.exp(-(vbar - margin))) if label else 1 / (1 + math.exp(-(vbar + margin)))
        g.append(sig - 1 if label else sig)
    for j, t in enumerate(pos):
        want = beta / T * sum(g[k] / (k + 1) for k in range(j, T))
        assert float(pol.grad[0, t]) == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert all(float(pol.grad[0, t]) == 0 for t in range(9) if not mask[0, t])


# invariant 4: the Implicit PRM gradient beta (sigma(R) - r), the same at every token
@pytest.mark.parametrize("label", [0, 1])
def test_implicit_prm_gradient_is_constant(label):
    beta = 0.05
    pol, ref, mask = batch(7, b=1, t=9)
    pol = pol.requires_grad_(True)
    implicit_prm_loss(pol, ref, mask, torch.tensor([label]), beta=beta).backward()
    R = beta * sum(float(pol[0, t].detach() - ref[0, t]) for t in range(9) if mask[0, t])
    want = beta * (1 / (1 + math.exp(-R)) - label)
    grads = [float(pol.grad[0, t]) for t in range(9) if mask[0, t]]
    assert grads == pytest.approx([want] * len(grads), rel=1e-10)
    # IPVRM is not constant across positions (the contrast the paper draws)
    p2 = pol.detach().clone().requires_grad_(True)
    ipvrm_loss(p2, ref, mask, torch.tensor([label]), beta=1.0, margin=0.5).backward()
    g2 = [float(p2.grad[0, t]) for t in range(9) if mask[0, t]]
    assert max(g2) - min(g2) > 1e-6


# invariant 5: padding and prompt invariance
def test_padding_and_prompt_invariance():
    pol, ref, mask = batch(8)
    labels = torch.tensor([1, 0, 0])
    base = [float(f(pol, ref, mask, labels)) for f in (ipvrm_loss, implicit_prm_loss)]
    pad = torch.zeros(3, 4, dtype=D)
    padded = (torch.cat([pol, pad - 9], 1), torch.cat([ref, pad + 1], 1))
    pmask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    pol2, ref2 = pol.clone(), ref.clone()
    pol2[~mask], ref2[~mask] = -50.0, 3.0  # prompt and pad positions changed
    for k, f in enumerate((ipvrm_loss, implicit_prm_loss)):
        assert float(f(*padded, pmask, labels)) == pytest.approx(base[k], rel=1e-12)
        assert float(f(pol2, ref2, mask, labels)) == pytest.approx(base[k], rel=1e-12)
    # left padding (a longer prompt) shifts positions but not the count t of response tokens
    left = (torch.cat([pad, pol], 1), torch.cat([pad, ref], 1))
    lmask = torch.cat([torch.zeros(3, 4, dtype=torch.bool), mask], 1)
    assert float(ipvrm_loss(*left, lmask, labels)) == pytest.approx(base[0], rel=1e-12)


# invariant 7: margin placement and monotonicity
def test_margin_boundary_and_monotone():
    m = 5.0
    mask = torch.ones(1, 1, dtype=torch.bool)

    def at(v, r):
        return float(ipvrm_token_losses(torch.tensor([[v]], dtype=D), torch.tensor([r]), mask, m)[0, 0])

    assert at(m, 1) == pytest.approx(math.log(2))
    assert at(-m, 0) == pytest.approx(math.log(2))
    grid = [-12 + 0.5 * k for k in range(49)]
    pos = [at(v, 1) for v in grid]
    neg = [at(v, 0) for v in grid]
    assert all(a > b for a, b in zip(pos, pos[1:]))
    assert all(a < b for a, b in zip(neg, neg[1:]))


@pytest.mark.parametrize("weighting", ["late", "early", "uniform"])
def test_temporal_weightings(weighting):
    pol, ref, mask = batch(9)
    labels = torch.tensor([1, 0, 1])
    got = ipvrm_sequence_losses(pol, ref, mask, labels, beta=2.0, margin=1.0, weighting=weighting)
    for i in range(3):
        want = ref_ipvrm_sequence(pol[i], ref[i], mask[i], int(labels[i]), 2.0, 1.0, weighting)
        assert float(got[i]) == pytest.approx(want, rel=1e-12)


def test_early_weighting_one_token_row_and_weight_sums():
    mask = torch.tensor([[False, True, False], [True, True, True]])
    for w in ("uniform", "late", "early"):
        weights = temporal_weights(mask, w)
        assert torch.allclose(weights.sum(1), torch.ones(2, dtype=weights.dtype))
        assert (weights[~mask] == 0).all()
    assert float(temporal_weights(mask, "early")[0, 1]) == 1.0


def test_token_mean_reduction_is_the_codes():
    pol, ref, mask = batch(10)
    labels = torch.tensor([0, 1, 1])
    terms = []
    for i in range(3):
        ls = [float(pol[i, t] - ref[i, t]) for t in range(7) if mask[i, t]]
        cum, s = 0.0, 2 * int(labels[i]) - 1
        for k, lt in enumerate(ls, start=1):
            cum += lt
            terms.append(-logsig(s * 10.0 * cum / k - 0.0))
    got = ipvrm_loss_token_mean(pol, ref, mask, labels)
    assert float(got) == pytest.approx(sum(terms) / len(terms), rel=1e-12)
    # batch of one: equals the paper's per-sequence mean
    one = ipvrm_loss_token_mean(pol[:1], ref[:1], mask[:1], labels[:1], margin=5.0)
    assert float(one) == pytest.approx(float(ipvrm_loss(pol[:1], ref[:1], mask[:1], labels[:1])), rel=1e-12)


def test_implicit_prm_and_dpo_match_loops():
    pol, ref, mask = batch(11)
    labels = torch.tensor([1, 0, 1])
    want = 0.0
    for i in range(3):
        R = 0.05 * sum(float(pol[i, t] - ref[i, t]) for t in range(7) if mask[i, t])
        want -= logsig(R) if labels[i] else logsig(-R)
    assert float(implicit_prm_loss(pol, ref, mask, labels)) == pytest.approx(want / 3, rel=1e-12)
    pol_l, ref_l, mask_l = batch(12)
    want = 0.0
    for i in range(3):
        w = sum(float(pol[i, t] - ref[i, t]) for t in range(7) if mask[i, t])
        lo = sum(float(pol_l[i, t] - ref_l[i, t]) for t in range(7) if mask_l[i, t])
        want -= logsig(0.05 * (w - lo) - 0.3)
    got = dpo_rm_loss(pol, ref, mask, pol_l, ref_l, mask_l, margin=0.3)
    assert float(got) == pytest.approx(want / 3, rel=1e-12)


def test_reference_gets_no_gradient():
    pol, ref, mask = batch(13)
    ref = ref.requires_grad_(True)
    ipvrm_loss(pol.requires_grad_(True), ref, mask, torch.tensor([1, 0, 1])).backward()
    assert ref.grad is None


# bad inputs: one line naming the argument
@pytest.mark.parametrize(
    "change,match",
    [
        (lambda p, r, m, y: (p, r, m, torch.tensor([1, 2, 0])), "labels must be 0 or 1"),
        (lambda p, r, m, y: (p, r, m, torch.tensor([1, 0])), "labels must be"),
        (lambda p, r, m, y: (p, r[:, :5], m, y), "ref_logprobs shape"),
        (lambda p, r, m, y: (p, r, m[:, :5], y), "response_mask shape"),
        (
            lambda p, r, m, y: (p, r, m & torch.tensor([[True], [False], [True]]), y),
            r"response_mask row\(s\) \[1\]",
        ),
        (lambda p, r, m, y: (p[0], r[0], m[0], y), r"\[batch, seq\]"),
    ],
)
def test_bad_inputs_raise_one_line(change, match):
    pol, ref, mask = batch(14)
    args = change(pol, ref, mask, torch.tensor([1, 0, 1]))
    for fn in (ipvrm_loss, implicit_prm_loss):
        with pytest.raises(ValueError, match=match) as e:
            fn(*args)
        assert "\n" not in str(e.value)


def test_bad_hyperparameters():
    pol, ref, mask = batch(15)
    y = torch.tensor([1, 0, 1])
    with pytest.raises(ValueError, match="margin must be >= 0"):
        ipvrm_loss(pol, ref, mask, y, margin=-1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        ipvrm_loss(pol, ref, mask, y, beta=0.0)
    with pytest.raises(ValueError, match="weighting"):
        ipvrm_sequence_losses(pol, ref, mask, y, weighting="middle")
    with pytest.raises(ValueError, match="1 rejected rows"):
        dpo_rm_loss(pol, ref, mask, pol[:1], ref[:1], mask[:1])
