"""Spec invariants 6 (telescoping TD / step scores) and 8 (ADB / DLW), against float64 loops."""

import math

import pytest
import torch

from papers.ipvrm.ipvrm import (
    adb_offsets,
    dlw_weights,
    ipvrm_loss,
    ipvrm_online_loss,
    ipvrm_sequence_losses,
    prefix_values,
    prompt_accuracy,
    step_scores,
    td_token_rewards,
)

D = torch.float64


def logsig(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def rollouts(seed=0, b=8, t=6):
    g = torch.Generator().manual_seed(seed)
    pol = -torch.rand(b, t, generator=g, dtype=D) * 2
    ref = -torch.rand(b, t, generator=g, dtype=D) * 2
    mask = torch.ones(b, t, dtype=torch.bool)
    for i in range(b):
        mask[i, t - 1 - i % 3 :] = False
    return pol, ref, mask


# invariant 6
def test_td_telescopes_to_the_final_prefix_value():
    pol, ref, mask = rollouts()
    lr = pol - ref
    td, V = td_token_rewards(lr, mask, 3.0), prefix_values(lr, mask, 3.0)
    for i in range(mask.shape[0]):
        last = max(t for t in range(mask.shape[1]) if mask[i, t])
        assert float(td[i].sum()) == pytest.approx(float(V[i, last]), rel=1e-12)
        assert (td[i][~mask[i]] == 0).all()
    assert (td_token_rewards(pol - pol, mask, 10.0) == 0).all()  # invariant 1: all TD 0 at init


def test_step_scores_telescope():
    g = torch.Generator().manual_seed(3)
    rewards = torch.randn(12, generator=g, dtype=D)
    ends = [2, 3, 7, 11]
    proc, pref = step_scores(rewards, ends, "process"), step_scores(rewards, ends, "prefix")
    start = 0
    for k, end in enumerate(ends):
        assert float(proc[k]) == pytest.approx(sum(float(rewards[i]) for i in range(start, end + 1)))
        assert float(pref[k]) == pytest.approx(sum(float(rewards[i]) for i in range(end + 1)))
        assert float(pref[k]) == pytest.approx(float(proc[: k + 1].sum()))
        start = end + 1
    assert float(proc.sum()) == pytest.approx(float(pref[-1]))


@pytest.mark.parametrize(
    "ends,match", [([], "non-empty"), ([3, 3], "increasing"), ([2, 12], "outside"), ([-1, 2], "outside")]
)
def test_step_scores_bad_boundaries(ends, match):
    with pytest.raises(ValueError, match=match):
        step_scores(torch.zeros(12), ends)
    with pytest.raises(ValueError, match="protocol"):
        step_scores(torch.zeros(12), [1], "mean")


# invariant 8
def test_adb_logit_symmetry_and_clamp():
    mu = torch.tensor([0.1, 0.25, 0.5, 0.8], dtype=D)
    assert torch.allclose(adb_offsets(1 - mu), -adb_offsets(mu))
    assert float(adb_offsets(torch.tensor(0.5))) == 0.0
    assert float(adb_offsets(torch.tensor(1.0))) == pytest.approx(math.log((1 - 1e-6) / 1e-6))
    for m in mu.tolist():
        assert float(adb_offsets(torch.tensor(m))) == pytest.approx(math.log(m / (1 - m)))


GROUPS = [0, 0, 0, 0, 1, 1, 2, 2]
LABELS = torch.tensor([1, 0, 0, 0, 1, 1, 0, 1])


def test_dlw_weights_by_loop():
    raw, renorm = dlw_weights(LABELS, GROUPS, renormalize=False), dlw_weights(LABELS, GROUPS)
    for g in set(GROUPS):
        rows = [i for i, x in enumerate(GROUPS) if x == g]
        mu = sum(int(LABELS[i]) for i in rows) / len(rows)
        want = [(1 - mu) if LABELS[i] else mu for i in rows]
        assert [float(raw[i]) for i in rows] == pytest.approx(want)
        if 0 < mu < 1:
            assert float(renorm[rows].sum()) == pytest.approx(len(rows))
            scale = len(rows) / sum(want)
            assert [float(renorm[i]) for i in rows] == pytest.approx([w * scale for w in want])
        else:  # group 1 is all correct: weight 0 (official code)
            assert all(float(renorm[i]) == 0 and float(raw[i]) == 0 for i in rows)
    assert float(prompt_accuracy(LABELS, GROUPS)[0]) == 0.25


def test_online_loss_matches_loop():
    pol, ref, mask = rollouts(1)
    beta, m = 2.0, 1.0
    w = dlw_weights(LABELS, GROUPS)
    mu = prompt_accuracy(LABELS, GROUPS)
    total = 0.0
    for i in range(8):
        ls = [float(pol[i, t] - ref[i, t]) for t in range(6) if mask[i, t]]
        mu_i = min(max(float(mu[i]), 1e-6), 1 - 1e-6)
        vx, cum, seq = math.log(mu_i / (1 - mu_i)), 0.0, 0.0
        for k, lt in enumerate(ls, start=1):
            cum += lt
            vbar = beta * cum / k
            if LABELS[i]:
                seq -= logsig(vbar - m + vx)
            else:  # log(1 - sigma(v̄ + m + V(x)))
                seq -= logsig(-(vbar + m + vx))
        total += float(w[i]) * seq / len(ls)
    got = ipvrm_online_loss(pol, ref, mask, LABELS, GROUPS, beta=beta, margin=m)
    assert float(got) == pytest.approx(total / 8, rel=1e-12)


def test_online_at_half_accuracy_is_weighted_offline():
    pol, ref, mask = rollouts(2, b=4)
    labels, groups = torch.tensor([1, 0, 0, 1]), [0, 0, 1, 1]  # mu = 0.5 in both groups
    per_seq = ipvrm_sequence_losses(pol, ref, mask, labels, beta=3.0, margin=2.0)
    weights = dlw_weights(labels, groups)
    assert torch.allclose(weights, torch.ones(4, dtype=D))  # 0.5 each, renormalised to 1
    got = ipvrm_online_loss(pol, ref, mask, labels, groups, beta=3.0, margin=2.0)
    assert float(got) == pytest.approx(float((weights * per_seq).mean()), rel=1e-12)
    assert float(got) == pytest.approx(float(ipvrm_loss(pol, ref, mask, labels, 3.0, 2.0)), rel=1e-12)
    plain = ipvrm_online_loss(
        pol, ref, mask, LABELS[:4], [0, 0, 0, 1], 3.0, 2.0, use_adb=False, use_dlw=False
    )
    assert float(plain) == pytest.approx(float(ipvrm_loss(pol, ref, mask, LABELS[:4], 3.0, 2.0)), rel=1e-12)


def test_adb_shifts_the_boundary_the_right_way():
    """Easy prompt (mu = 3/4): a wrong answer's loss rises, a right answer's falls, versus no ADB."""
    pol, ref, mask = rollouts(4, b=4)
    labels, groups = torch.tensor([1, 1, 1, 0]), [0, 0, 0, 0]
    with_adb = ipvrm_sequence_losses(
        pol, ref, mask, labels, 2.0, 1.0, value_offset=adb_offsets(prompt_accuracy(labels, groups))
    )
    without = ipvrm_sequence_losses(pol, ref, mask, labels, 2.0, 1.0)
    assert (with_adb[:3] < without[:3]).all() and with_adb[3] > without[3]


def test_groups_must_match_rows():
    with pytest.raises(ValueError, match="groups must hold one prompt id per row"):
        dlw_weights(LABELS, [0, 1])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        prompt_accuracy(torch.tensor([0, 3]), [0, 0])
