"""Spec invariants 9-12 through qrm's own arms: the `RLConfig` each arm of each preset builds
(`stages.rl_config`) fed to `common.rl`, checked against float64 hand computations. A preset that drifted
from the code's settings (value_coef 0.01, GAE 0.9 / 0.8, clip 0.2, REINFORCE without a ratio) fails here."""

import math

import pytest
import torch

from common.rl import gae, ppo_clip_loss, reinforce_loss, reward_is_q_advantages
from papers.qrm.config import get_config
from papers.qrm.stages import rl_config

SCALES = ("toy", "small", "paper")


def _arm(scale: str, method: str, tmp_path):
    return rl_config(method, get_config(scale), seed=0, out=tmp_path)


@pytest.mark.parametrize("scale", SCALES)
def test_invariant_9_reinforce_gradient_wrt_the_logits(scale, tmp_path):
    """d L / d logits_t = (r_t / n) (pi_t - onehot(a_t)) on response tokens, 0 elsewhere."""
    assert _arm(scale, "REINFORCE+Q-RM", tmp_path).algorithm == "reinforce"
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    r = torch.randn(2, 5, dtype=torch.float64) * mask
    logp = logits.log_softmax(-1).gather(-1, actions[..., None])[..., 0]
    reinforce_loss(logp, r, mask).backward()
    pi, n = logits.detach().softmax(-1), int(mask.sum())
    want = (r / n)[..., None] * (pi - torch.nn.functional.one_hot(actions, 7).double())
    assert torch.allclose(logits.grad, want * mask[..., None], atol=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_invariant_10_reward_is_q_advantage(scale, tmp_path):
    arm = _arm(scale, "PPO+Q-RM", tmp_path)
    assert (arm.algorithm, arm.advantage, arm.value_coef) == ("ppo", "reward_is_q", 0.01)
    mask = torch.tensor([[0, 1, 1, 1]], dtype=torch.bool)
    r, v = torch.tensor([[0.0, 0.5, -1.0, 2.0]]), torch.tensor([[9.0, 3.0, -2.0, 4.0]])
    adv, ret = reward_is_q_advantages(r, torch.zeros_like(r), mask, arm.value_coef)
    assert torch.equal(adv, r * mask) and torch.equal(ret, r * mask)  # V = 0: A = r
    adv, ret = reward_is_q_advantages(r, v, mask, arm.value_coef)
    assert torch.allclose(adv, (r - 0.01 * v) * mask) and torch.equal(ret, r * mask)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", ["PPO+ORM", "PPO+DPO-RM"])
def test_invariant_11_gae_with_a_last_token_reward(scale, method, tmp_path):
    arm = _arm(scale, method, tmp_path)
    assert (arm.advantage, arm.gamma, arm.lam) == ("gae", 0.9, 0.8)
    T = 6
    mask = torch.ones(1, T, dtype=torch.bool)
    r = torch.zeros(1, T, dtype=torch.float64)
    r[0, -1] = 1.7
    adv, _ = gae(r, torch.zeros_like(r), mask, arm.gamma, arm.lam)
    want = torch.tensor([[0.72 ** (T - 1 - t) * 1.7 for t in range(T)]], dtype=torch.float64)
    assert torch.allclose(adv, want, atol=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_invariant_12_clip_zeroes_the_gradient_past_the_favoured_side(scale, tmp_path):
    arm = _arm(scale, "PPO+Q-RM", tmp_path)
    assert arm.clip == 0.2
    mask = torch.ones(1, 4, dtype=torch.bool)
    old = torch.zeros(1, 4, dtype=torch.float64)
    # rho = 1.3 with A > 0 and rho = 0.7 with A < 0: clipped (no gradient); rho = 1.1 / 0.9: inside (gradient)
    logp = torch.tensor([[math.log(1.3), math.log(0.7), math.log(1.1), math.log(0.9)]], dtype=torch.float64)
    logp.requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    ppo_clip_loss(logp, old, adv, mask, arm.clip).backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == 0
    assert torch.allclose(logp.grad[0, 2:], torch.tensor([-1.1 / 4, 0.9 / 4], dtype=torch.float64))
