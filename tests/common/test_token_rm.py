"""common.token_rm: the Q-RM loss against an independent float64 computation, the causal-LM Q-RM's and the
DPO-RM's vocabulary scores against their token scores, and a small does-it-learn for the causal-LM Q-RM."""

import math
import random

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.synthetic.tokenizer import world_tokenizer
from common.token_rm import (
    CausalLMTokenRM,
    DPORewardModel,
    RMTrainConfig,
    pairwise_accuracy,
    qrm_loss,
    train_qrm,
)


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


def _lm(tok, seed=0):
    return build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=seed, tokenizer=tok)


def test_qrm_loss_matches_an_independent_float64_computation():
    g = torch.Generator().manual_seed(3)
    zw, zl = (torch.randn(4, 6, generator=g, dtype=torch.float64) * 3 for _ in range(2))
    mw, ml = (torch.rand(4, 6, generator=g) > 0.4 for _ in range(2))
    mw[:, 2], ml[:, 5] = True, True
    for beta, gamma in ((0.2, 2.0), (1.0, 0.0), (0.7, -1.5)):
        per_pair = []
        for i in range(4):
            mean_w = sum(float(zw[i, t]) for t in range(6) if mw[i, t]) / int(mw[i].sum())
            mean_l = sum(float(zl[i, t]) for t in range(6) if ml[i, t]) / int(ml[i].sum())
            x = beta * (mean_w - mean_l) - gamma
            per_pair.append(-math.log(1.0 / (1.0 + math.exp(-x))))  # -log sigma(x)
        got = qrm_loss(zw, mw, zl, ml, beta, gamma)
        assert got.dtype == torch.float64
        assert float(got) == pytest.approx(sum(per_pair) / 4, rel=1e-13, abs=1e-13)


def test_vocab_scores_agree_with_token_scores(tok):
    ids = torch.tensor([tok("Question: Tom has 3 coins.\nAnswer: 3 + 1 = 4.")["input_ids"]])
    attn = torch.ones_like(ids)
    rm = CausalLMTokenRM(_lm(tok).double())
    logphi = rm.vocab_logprobs(ids, attn)  # [1, S-1, V]
    assert torch.allclose(logphi.exp().sum(-1), torch.ones(1, ids.shape[1] - 1, dtype=logphi.dtype))
    with torch.no_grad():
        z = rm(ids, attn)
    assert z[0, 0] == 0 and torch.allclose(z[:, 1:], logphi.gather(-1, ids[:, 1:, None])[..., 0])
    dpo = DPORewardModel(_lm(tok).double(), reference=_lm(tok, seed=1).double())
    ratio = dpo.vocab_log_ratio(ids, attn)
    resp = torch.zeros_like(ids, dtype=torch.bool)
    resp[:, 5:] = True
    per_token = dpo.token_rewards(ids, attn, resp, beta=1.0)
    assert torch.allclose(per_token[:, 5:], ratio.gather(-1, ids[:, 1:, None])[:, 4:, 0])
    same = DPORewardModel(_lm(tok).double())  # reference = a copy: the log-ratio is 0 everywhere
    assert torch.equal(same.vocab_log_ratio(ids, attn), torch.zeros_like(ratio))


def _digit_pairs(n: int, seed: int) -> list[dict]:
    """Chosen answers use the digits 1-4, rejected ones 6-9 (a signal a few steps can find)."""
    rng = random.Random(seed)
    names = ["Tom", "Ana", "Kim", "Lee", "Max", "Sam"]
    pairs = []
    for _ in range(n):
        prompt = f"Question: {rng.choice(names)} has {rng.randint(2, 9)} coins.\nAnswer:"
        good = " ".join(str(rng.randint(1, 4)) for _ in range(4))
        bad = " ".join(str(rng.randint(6, 9)) for _ in range(4))
        pairs.append({"prompt": prompt, "chosen": " " + good, "rejected": " " + bad})
    return pairs


def test_causal_lm_qrm_learns_to_rank_heldout_pairs(tok):
    train, heldout = _digit_pairs(64, seed=0), _digit_pairs(40, seed=1)
    rm = CausalLMTokenRM(_lm(tok))
    before_params = {n: p.detach().clone() for n, p in rm.named_parameters()}
    before = pairwise_accuracy(rm, tok, heldout, "mean", max_len=64)
    cfg = RMTrainConfig(lr=1e-3, batch_size=16, max_steps=12, max_len=64, seed=0, mixed_precision="no")
    losses = train_qrm(rm, tok, train, cfg, progress=False)
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert all(not torch.equal(p.detach(), before_params[n]) for n, p in rm.named_parameters())
    after = pairwise_accuracy(rm, tok, heldout, "mean", max_len=64)
    assert after >= 0.8 and after > before, (before, after)  # chance 0.5; 40 pairs
