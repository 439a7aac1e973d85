"""LCO's run_rl pieces: the verifier's token rewards, `LCOPolicyLoss` on a tiny LM (checked in float64 against
the closed form of invariant 4), the code's top-k and detached-anchor variants, PPO's critic."""

import math

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.rl import Rollout, group_advantages
from common.synthetic.tokenizer import world_tokenizer
from papers.lco.arms import LCOPolicyLoss, ValueCritic, verifier_reward


@pytest.fixture(scope="module")
def setup():
    tok = world_tokenizer()
    model = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok).double().eval()
    prompts = ["Question: 1 + 2 = ?\nAnswer:", "Question: 3 + 4 = ?\nAnswer:"]
    texts = [" 3\n#### 3", " 8\n#### 8", " 7\n#### 7", " 7\n#### 1"]
    index = [0, 0, 1, 1]
    rows, prompt_ids, starts = [], [], []
    for i, text in zip(index, texts):
        p = tok(prompts[i])["input_ids"]
        rows.append(p + tok(text, add_special_tokens=False)["input_ids"])
        prompt_ids.append(p)
        starts.append(len(p))
    width = max(map(len, rows))
    ids = torch.full((4, width), tok.pad_token_id)
    attn = torch.zeros(4, width, dtype=torch.long)
    resp = torch.zeros(4, width, dtype=torch.bool)
    for r, (row, s) in enumerate(zip(rows, starts)):
        ids[r, : len(row)], attn[r, : len(row)], resp[r, s : len(row)] = torch.tensor(row), 1, True
    ro = Rollout(prompt_ids, ids, attn, resp, torch.zeros(4, width), texts, index)
    return tok, model, prompts, ro


def grade(text, answer):
    return text.strip().endswith(f"#### {answer}")


def test_verifier_reward_kinds(setup):
    tok, _, prompts, ro = setup
    answers = ["3", "7"]
    signed = torch.tensor([1.0, -1.0, 1.0, -1.0])
    raw = verifier_reward(tok, prompts, answers, grade, "raw")(ro)
    assert torch.equal(raw, signed[:, None] * ro.response_mask) and ro.metrics["correct"] == 0.5
    terminal = verifier_reward(tok, prompts, answers, grade, "terminal")(ro)
    last = ro.response_mask.cumsum(1).argmax(1)
    assert torch.equal(terminal.sum(1), signed) and torch.equal(terminal.abs().argmax(1), last)
    grpo = verifier_reward(tok, prompts, answers, grade, "grpo")(ro)
    expected = group_advantages(signed, ro.prompt_index, "grpo")
    assert torch.allclose(grpo, expected[:, None].float() * ro.response_mask)
    with pytest.raises(ValueError, match="kind 'ppo'"):
        verifier_reward(tok, prompts, answers, grade, "ppo")


def test_kld_loss_at_the_old_policy_equals_the_closed_form(setup):
    _, model, _, ro = setup
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0], dtype=torch.float64)[:, None] * ro.response_mask
    beta = 0.7
    loss_fn = LCOPolicyLoss("kld", beta)
    with torch.no_grad():
        loss_fn.prepare(model, ro)
    idx = torch.arange(4)
    loss = loss_fn(model, ro, idx, adv)
    # independent: KL(p* || pi_old) = p*(a) A/beta - log(1 - q + q e^{A/beta}) at each response token
    logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask).logits[:, :-1].double()
    q_all = logits.softmax(-1).gather(-1, ro.input_ids[:, 1:, None])[..., 0]
    terms = []
    for b, t in ro.response_mask[:, 1:].nonzero().tolist():
        a, q = float(adv[b, t + 1]) / beta, float(q_all[b, t].detach())
        norm = 1 - q + q * math.exp(a)
        terms.append(q * math.exp(a) / norm * a - math.log(norm))
    # the loss is float32 (the model's dtype): 1e-6 held on AVX2 kernels and missed by 1.4e-6 on AVX512
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad()


def test_topk_and_code_anchor_variants(setup):
    _, model, _, ro = setup
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)[:, None] * ro.response_mask
    idx, vocab = torch.arange(4), model.config.vocab_size
    full, top_all = LCOPolicyLoss("kld", 1.0), LCOPolicyLoss("kld", 1.0, logits_topk=vocab)
    with torch.no_grad():
        for f in (full, top_all):
            f.prepare(model, ro)
        # top-k over the whole vocabulary is the full target (up to the fp16 storage of the code)
        assert float(top_all(model, ro, idx, adv)) == pytest.approx(
            float(full(model, ro, idx, adv)), abs=1e-3
        )
        code = LCOPolicyLoss("mse", 0.5, negative_beta_scale=100.0, anchor="current")
        code.prepare(model, ro)
        # the code's MSE: loss = mean over response tokens of (A / beta_eff)^2 whatever the parameters are
        a = adv[:, 1:][ro.response_mask[:, 1:]]
        expected = torch.where(a > 0, (a / 0.5) ** 2, (a / 50.0) ** 2).mean()
        assert float(code(model, ro, idx, adv)) == pytest.approx(float(expected), rel=1e-6)
        paper = LCOPolicyLoss("lch", 0.5)
        paper.prepare(model, ro)  # at the old policy: logcosh(-A/beta) per response token
        expected = torch.log(torch.cosh(a / 0.5)).mean()
        assert float(paper(model, ro, idx, adv)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(RuntimeError, match="prepare"):
        LCOPolicyLoss("kld", 1.0)(model, ro, idx, adv)
    with pytest.raises(ValueError, match="unknown variant 'ppo'"):
        LCOPolicyLoss("ppo", 1.0)


def test_value_critic_starts_at_zero(setup):
    _, model, _, ro = setup
    critic = ValueCritic(model)
    v = critic(ro.input_ids, ro.attention_mask)
    assert v.shape == ro.input_ids.shape and v.abs().max() == 0
