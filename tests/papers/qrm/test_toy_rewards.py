"""Toy RL arms' rewards: leave-one-out group baseline, the oracle, the DPO-RM arm's alignment, bad inputs."""

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.rl import Rollout
from common.scoring import gsm8k_is_correct
from common.synthetic.tokenizer import world_tokenizer
from common.synthetic.world import make_splits
from papers.qrm.config import PPOConfig, ReinforceConfig
from papers.qrm.qrm import qrm_reinforce_rewards
from papers.qrm.reward_models import DPORewardModel
from papers.qrm.toy_rewards import (
    answer_lookup,
    loo_group_baseline,
    make_reward_fn,
    oracle_token_rewards,
    std_normalise,
)


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


def _rollout(tok, problems, texts, groups) -> Rollout:
    prompt_ids = [tok(problems[g].prompt())["input_ids"] for g in groups]
    rows = [
        p + tok(" " + t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        for p, t in zip(prompt_ids, texts)
    ]
    width = max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    attn = torch.zeros_like(ids)
    resp = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, rows)):
        ids[i, : len(r)] = torch.tensor(r)
        attn[i, : len(r)] = 1
        resp[i, len(p) : len(r)] = True
    return Rollout(prompt_ids, ids, attn, resp, torch.zeros(ids.shape), list(texts), list(groups))


def test_loo_group_baseline_matches_float64_reference():
    torch.manual_seed(0)
    r = torch.randn(5, 7)
    mask = torch.zeros(5, 7, dtype=torch.bool)
    for i, (a, b) in enumerate([(1, 5), (2, 7), (0, 3), (3, 6), (1, 2)]):
        mask[i, a:b] = True
    groups = [0, 0, 0, 1, 2]  # a group of 3, one of 1, one of 1
    out = loo_group_baseline(r, mask, groups)
    rd = r.double()
    seq = [rd[i][mask[i]].mean().item() for i in range(5)]
    for i in range(5):
        others = [seq[j] for j in range(5) if groups[j] == groups[i] and j != i]
        base = sum(others) / len(others) if others else 0.0
        expect = torch.where(mask[i], rd[i] - base, torch.zeros(7, dtype=torch.float64))
        assert torch.allclose(out[i].double(), expect, atol=1e-6)
    # token-level differences inside a sequence are kept
    assert torch.allclose((out[0] - r[0])[mask[0]], (out[0] - r[0])[mask[0]][0].expand(4))
    with pytest.raises(ValueError, match="group ids"):
        loo_group_baseline(r, mask, [0, 1])


def test_oracle_rewards_are_the_std_normalised_correctness_on_every_token():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    ok = torch.tensor([1.0, 0.0, 1.0, 1.0])
    r = oracle_token_rewards(ok, mask)
    std = ok.double().std(unbiased=False).item()
    for i in range(4):
        assert torch.allclose(r[i][mask[i]], torch.full((int(mask[i].sum()),), ok[i].item() / std))
        assert (r[i][~mask[i]] == 0).all()
    centred = oracle_token_rewards(ok, mask, sub_mean=True)
    assert abs(float(std_normalise(ok, sub_mean=True).mean())) < 1e-6
    assert centred[1, 2] < 0 < centred[0, 1]
    with pytest.raises(ValueError, match="does not fit mask"):
        oracle_token_rewards(ok[:2], mask)


def test_oracle_reward_fn_grades_each_row_against_its_own_problem(tok):
    problems = make_splits()["train"][:3]
    right = [f"{p.answer - 0}" for p in problems]
    texts = [f"x\n#### {right[0]}", f"x\n#### {int(right[0]) + 1}", f"x\n#### {right[2]}", "no answer"]
    groups = [0, 0, 2, 2]
    ro = _rollout(tok, problems, texts, groups)
    cfg = ReinforceConfig()
    fn = make_reward_fn("reinforce", "oracle", cfg, None, answers=answer_lookup(tok, problems))
    ok = torch.tensor([float(gsm8k_is_correct(t, str(problems[g].answer))) for t, g in zip(texts, groups)])
    assert ok.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert torch.allclose(fn(ro), oracle_token_rewards(ok, ro.response_mask))
    grouped = make_reward_fn(
        "reinforce", "oracle", ReinforceConfig(baseline="group"), None, answer_lookup(tok, problems)
    )(ro)
    # each group has one right and one wrong answer: the LOO baseline makes them +-std-normalised 1
    s = 1 / ok.std(unbiased=False)
    for i, sign in enumerate([1, -1, 1, -1]):
        assert torch.allclose(
            grouped[i][ro.response_mask[i]], sign * s.expand(int(ro.response_mask[i].sum()))
        )
    with pytest.raises(KeyError, match="not one of the training problems"):
        answer_lookup(tok, problems[:1])(ro.prompt_ids[2])


def test_dpo_reward_fn_uses_aligned_log_ratios_through_the_qrm_buffer(tok):
    problems = make_splits()["train"][:2]
    ro = _rollout(tok, problems, ["a b = 3.\n#### 3", "so 4 + 1 = 5.\n#### 5"], [0, 1])
    base = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    dpo = DPORewardModel(base)
    with torch.no_grad():
        for p in dpo.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rewards = make_reward_fn("reinforce", "dpo", ReinforceConfig(), dpo, dpo_beta=0.1)(ro)
    with torch.no_grad():  # independent float64: log pi(a_t | s_t) read from the logits at t - 1
        lp = (
            dpo.policy(input_ids=ro.input_ids, attention_mask=ro.attention_mask)
            .logits.double()
            .log_softmax(-1)
        )
        lr = (
            dpo.reference(input_ids=ro.input_ids, attention_mask=ro.attention_mask)
            .logits.double()
            .log_softmax(-1)
        )
    ratio = torch.zeros(ro.input_ids.shape, dtype=torch.float64)
    for b in range(2):
        for t in ro.response_mask[b].nonzero().flatten().tolist():
            a = ro.input_ids[b, t]
            ratio[b, t] = 0.1 * (lp[b, t - 1, a] - lr[b, t - 1, a])
    expect = qrm_reinforce_rewards(ratio.float(), ro.response_mask)
    assert rewards.shape == ro.input_ids.shape
    assert torch.allclose(rewards, expect, atol=1e-5)
    shifted = make_reward_fn("reinforce", "dpo", ReinforceConfig(), dpo, dpo_beta=0.1, official_shift=True)(
        ro
    )
    assert not torch.allclose(shifted, rewards)


def test_bad_reward_settings_fail_with_one_line(tok):
    with pytest.raises(ValueError, match="unknown reward kind"):
        make_reward_fn("reinforce", "prm", ReinforceConfig(), None)
    with pytest.raises(ValueError, match="baseline must be one of"):
        make_reward_fn("reinforce", "orm", ReinforceConfig(baseline="batch"), None)
    make_reward_fn("ppo", "orm", PPOConfig(), None)  # PPO has no baseline field: the code's rewards
