"""The RL arms' token rewards: Q-RM / ORM maths vs float64, row batching, the oracle, the DPO-RM's alignment."""

from dataclasses import replace

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.rl import Rollout
from common.scoring import gsm8k_is_correct
from common.synthetic.tokenizer import world_tokenizer
from papers.qrm.config import get_config
from papers.qrm.data import toy_task
from papers.qrm.qrm import qrm_reinforce_rewards
from papers.qrm.reward_models import DPORewardModel
from papers.qrm.rewards import make_reward_fn, oracle_token_rewards, outcome_token_rewards, problem_lookup

TOY = get_config("toy")
PLAIN = replace(TOY, reinforce=replace(TOY.reinforce, baseline="none"))  # the code's REINFORCE rewards


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


@pytest.fixture(scope="module")
def train():
    return toy_task(
        replace(TOY, data=replace(TOY.data, train_problems=3, val_problems=2, test_problems=2))
    ).train


def _rollout(tok, train, texts, groups) -> Rollout:
    prompt_ids = [tok(train.prompts[g])["input_ids"] for g in groups]
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


class FixedScorer(torch.nn.Module):
    """Z[b, t] = a fixed table (a stand-in RM whose scores the test knows)."""

    def __init__(self, z):
        super().__init__()
        self.z = z

    def forward(self, input_ids, attention_mask):
        rows = [self.z[int(i)] for i in input_ids[:, 0]]  # row identity carried by the first token
        return torch.stack(rows)[:, : input_ids.shape[1]].float()


def _synthetic(z):
    b, t = z.shape
    mask = torch.zeros(b, t, dtype=torch.bool)
    lengths = [t - 1 - i % 3 for i in range(b)]
    for i, n in enumerate(lengths):
        mask[i, 2:n] = True
    ids = torch.arange(b)[:, None].expand(b, t).clone()
    logp_old, logp_ref = -torch.rand(b, t, dtype=torch.float64), -torch.rand(b, t, dtype=torch.float64)
    ro = Rollout(
        [[0, 0]] * b,
        ids,
        torch.ones(b, t, dtype=torch.long),
        mask,
        logp_old.float() * mask,
        [""] * b,
        list(range(b)),
    )
    ro.logp_ref = logp_ref.float() * mask
    return ro, mask, lengths


@pytest.mark.parametrize("method", ["REINFORCE+Q-RM", "REINFORCE+ORM", "PPO+Q-RM", "PPO+ORM"])
def test_reward_maths_match_an_independent_float64_computation(method):
    torch.manual_seed(0)
    z = torch.randn(7, 9, dtype=torch.float64)
    ro, mask, lengths = _synthetic(z)
    got = make_reward_fn(method, replace(PLAIN, forward_batch_size=3), FixedScorer(z))(ro).double()
    one_pass = make_reward_fn(method, replace(PLAIN, forward_batch_size=None), FixedScorer(z))(ro)
    assert torch.equal(got.float(), one_pass)  # row batching changes nothing
    kl = (ro.logp_old.double() - ro.logp_ref.double()).abs()
    want = torch.zeros_like(z)
    if method.endswith("Q-RM"):
        std = z[mask].std(unbiased=False)
        for i, n in enumerate(lengths):
            r = z[i, 2:n] / std
            if method.startswith("REINFORCE"):
                r[-1] = r.mean()  # EOS overwrite (spec invariant 8)
            else:
                r = r - 0.01 * kl[i, 2:n]
            want[i, 2:n] = r
    else:
        last = torch.stack([z[i, n - 1] for i, n in enumerate(lengths)])
        # the code's buffer: S copied to every response token, divided by the std over those tokens
        tokens = torch.cat([last[i].expand(n - 2) for i, n in enumerate(lengths)])
        s = last / tokens.std(unbiased=False)
        for i, n in enumerate(lengths):
            if method.startswith("REINFORCE"):
                want[i, 2:n] = s[i]
            else:
                want[i, 2:n] = -0.01 * kl[i, 2:n]
                want[i, n - 1] += s[i]
    assert torch.allclose(got, want, atol=1e-5)


def test_oracle_rewards_are_the_correctness_over_the_token_std_on_every_token():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    ok = torch.tensor([1.0, 0.0, 1.0, 1.0])
    r = oracle_token_rewards(ok, mask)
    per_token = torch.cat([ok[i].double().expand(int(mask[i].sum())) for i in range(4)])  # 2+2+4+1 tokens
    std = per_token.std(unbiased=False).item()
    for i in range(4):
        assert torch.allclose(r[i][mask[i]], torch.full((int(mask[i].sum()),), ok[i].item() / std))
        assert (r[i][~mask[i]] == 0).all()
    centred = oracle_token_rewards(ok, mask, sub_mean=True)
    assert abs(float(centred[mask].double().mean())) < 1e-6  # standardised over the response tokens
    assert centred[1, 2] < 0 < centred[0, 1]
    assert torch.equal(oracle_token_rewards(torch.ones(4), mask), torch.zeros(4, 4))  # no spread: no signal
    with pytest.raises(ValueError, match="does not fit mask"):
        oracle_token_rewards(ok[:2], mask)


def test_ppo_outcome_reward_keeps_the_normalised_score_on_the_last_token_only():
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    s = torch.tensor([2.0, -1.0])
    r = outcome_token_rewards(s, mask, "last")
    std = torch.tensor([2.0, 2.0, -1.0, -1.0, -1.0], dtype=torch.float64).std(unbiased=False).item()
    want = torch.zeros(2, 4)
    want[0, 2], want[1, 3] = 2.0 / std, -1.0 / std
    assert torch.allclose(r, want)


def test_oracle_reward_fn_grades_each_row_against_its_own_problem(tok, train):
    right = train.answers
    texts = [f"x\n#### {right[0]}", f"x\n#### {int(right[0]) + 1}", f"x\n#### {right[2]}", "no answer"]
    groups = [0, 0, 2, 2]
    ro = _rollout(tok, train, texts, groups)
    fn = make_reward_fn("REINFORCE+oracle", PLAIN, None, tok, train)
    ok = torch.tensor([float(gsm8k_is_correct(t, right[g])) for t, g in zip(texts, groups)])
    assert ok.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert torch.allclose(fn(ro), oracle_token_rewards(ok, ro.response_mask))
    assert ro.metrics == {"correct": 0.5, "reward_raw": 0.5}  # before normalisation (logged by run_rl)
    grouped = make_reward_fn("REINFORCE+oracle", TOY, None, tok, train)(ro)  # toy: leave-one-out baseline
    # each group has one right and one wrong answer: the LOO baseline makes them +-(1 / token std)
    tokens = torch.cat([ok[i].expand(int(ro.response_mask[i].sum())) for i in range(4)])
    s = 1 / tokens.double().std(unbiased=False)
    for i, sign in enumerate([1, -1, 1, -1]):
        assert torch.allclose(
            grouped[i][ro.response_mask[i]].double(), sign * s.expand(int(ro.response_mask[i].sum()))
        )
    one = replace(train, prompts=train.prompts[:1], questions=train.questions[:1], answers=train.answers[:1])
    with pytest.raises(KeyError, match="not one of the training problems"):
        problem_lookup(tok, one)(ro.prompt_ids[2])


def test_dpo_reward_fn_uses_aligned_log_ratios_through_the_qrm_buffer(tok, train):
    ro = _rollout(tok, train, ["a b = 3.\n#### 3", "so 4 + 1 = 5.\n#### 5"], [0, 1])
    base = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    dpo = DPORewardModel(base)
    with torch.no_grad():
        for p in dpo.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rewards = make_reward_fn("REINFORCE+DPO-RM", PLAIN, dpo)(ro)
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
    shifted = make_reward_fn(
        "REINFORCE+DPO-RM", replace(PLAIN, rm=replace(PLAIN.rm, dpo_official_shift=True)), dpo
    )(ro)
    assert not torch.allclose(shifted, rewards)


def test_bad_reward_settings_fail_with_one_line():
    with pytest.raises(ValueError, match="unknown method"):
        make_reward_fn("REINFORCE+PRM", TOY, None)
    with pytest.raises(ValueError, match="baseline must be one of"):
        make_reward_fn(
            "REINFORCE+ORM", replace(TOY, reinforce=replace(TOY.reinforce, baseline="batch")), None
        )
    make_reward_fn("PPO+ORM", TOY, None)  # PPO has no baseline field: the code's rewards
