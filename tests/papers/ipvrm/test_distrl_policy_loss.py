"""DistRLPolicyLoss (the `common.rl_loop.PolicyLoss` seam) on a tiny causal LM: it equals the pure
functions composed by hand on the same tensors, it trains every parameter, and with pi_phi = pi_old its
candidate branch is exactly zero (invariant 1: all TD advantages 0)."""

import copy
from types import SimpleNamespace

import pytest
import torch

from common.rl import Rollout
from papers.ipvrm.distrl import (
    DistRLPolicyLoss,
    candidate_branch_loss,
    candidate_mask,
    distrl_reward_fn,
    distrl_sampled_advantages,
    prefix_value_std,
    token_branch_loss,
)

V, S = 7, 6


class TinyLM(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(V, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, V)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids).cumsum(dim=1)  # causal: position t sees tokens <= t
        return SimpleNamespace(logits=self.out(torch.tanh(self.mix(h))))


def make_rollout():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (4, S), generator=g)
    response = torch.zeros(4, S, dtype=torch.bool)
    response[0, 2:6] = True
    response[1, 2:5] = True
    response[2, 3:6] = True
    response[3, 2:4] = True
    attention = torch.ones(4, S, dtype=torch.long)
    attention[1, 5] = 0
    attention[3, 4:] = 0
    return Rollout(
        prompt_ids=[[0, 1]] * 4,
        input_ids=ids,
        attention_mask=attention,
        response_mask=response,
        logp_old=torch.zeros(4, S),
        texts=["a", "b", "c", "d"],
        prompt_index=[0, 0, 1, 1],
    )


def logprobs(model, ro):
    with torch.no_grad():
        return model(ro.input_ids, ro.attention_mask).logits[:, :-1].float().log_softmax(-1)


def test_equals_the_pure_functions_composed_by_hand():
    policy, rm, ro = TinyLM(1), TinyLM(2), make_rollout()
    loss_fn = DistRLPolicyLoss(rm, beta=2.0, top_k=3, p_min=0.1)
    loss_fn.prepare(policy, ro)
    labels = torch.tensor([1, 0, 1, 1])
    reward = distrl_reward_fn(loss_fn, lambda r: labels)
    adv = reward(ro)
    idx = torch.tensor([0, 1, 2, 3])
    got = loss_fn(policy, ro, idx, adv[idx])

    old, phi = logprobs(policy, ro), logprobs(rm, ro)
    mask = ro.response_mask[:, 1:]
    ids = loss_fn.state["ids"]
    assert (ids[..., 0] == ro.input_ids[:, 1:]).all()  # the sampled token is slot 0
    td = 2.0 * (phi.gather(-1, ids[..., :1])[..., 0] - old.gather(-1, ids[..., :1])[..., 0])
    for i in range(4):  # 0 at the last response token
        last = max(t for t in range(S - 1) if mask[i, t])
        td[i, last] = 0.0
    td = torch.where(mask, td, torch.zeros_like(td))
    sigma = prefix_value_std(td, mask)
    full_td = torch.cat([torch.zeros(4, 1), td], dim=1)
    want_adv = distrl_sampled_advantages(full_td, ro.response_mask, labels, ro.prompt_index, "code").float()
    assert torch.allclose(adv, want_adv)
    cand_old = old.gather(-1, ids)
    cand_adv = 2.0 * (phi.gather(-1, ids) - cand_old) / sigma
    cand = candidate_mask(cand_old.exp(), mask, 0.1)
    tok = token_branch_loss(cand_old[..., 0], cand_old[..., 0], want_adv[:, 1:], mask)
    dist = candidate_branch_loss(cand_old, cand_old, cand_adv, cand, mask)
    assert cand[..., 1:].any() and abs(float(dist)) > 1e-4  # the candidate branch is exercised
    assert float(got.detach()) == pytest.approx(float(tok + 0.1 * dist), rel=1e-5)
    assert ro.metrics["correct"] == 0.75


def test_trains_every_parameter_and_rm_equal_old_zeroes_candidate_branch():
    policy, ro = TinyLM(3), make_rollout()
    rm = copy.deepcopy(policy)
    loss_fn = DistRLPolicyLoss(rm, top_k=3, p_min=0.05)
    loss_fn.prepare(policy, ro)
    assert (loss_fn.state["advantages"] == 0).all() and (loss_fn.state["sampled_td"] == 0).all()
    assert loss_fn.state["candidates"].any()
    idx = torch.arange(4)
    adv = torch.randn(4, S)
    with_alpha = loss_fn(policy, ro, idx, adv)
    only_tok = DistRLPolicyLoss(rm, alpha=0.0, top_k=3)
    only_tok.prepare(policy, ro)
    assert float(with_alpha.detach()) == pytest.approx(
        float(only_tok(policy, ro, idx, adv).detach()), abs=1e-7
    )
    policy.zero_grad()
    with_alpha.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())


def test_loss_before_prepare_and_bad_options():
    with pytest.raises(RuntimeError, match="prepare"):
        DistRLPolicyLoss(TinyLM(0))(TinyLM(0), make_rollout(), torch.arange(2), torch.zeros(2, S))
    with pytest.raises(ValueError, match="aggregation"):
        DistRLPolicyLoss(TinyLM(0), aggregation="mean")
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        DistRLPolicyLoss(TinyLM(0), alpha=-1)


def test_before_td_hook_runs_first():
    calls = []
    policy, rm, ro = TinyLM(4), TinyLM(5), make_rollout()
    loss_fn = DistRLPolicyLoss(rm, before_td=lambda r: calls.append(len(r)))
    loss_fn.prepare(policy, ro)
    assert calls == [4]
