"""Reward models: pair encoding, does-it-learn on the toy world's pairs, save/load, LoRA, DPO-RM alignment."""

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.synthetic.flaws import preference_pairs
from common.synthetic.tokenizer import world_tokenizer
from common.synthetic.world import make_splits
from papers.qrm.reward_models import (
    DPORewardModel,
    RMTrainConfig,
    TokenScorer,
    encode_pairs,
    pair_collate,
    pairwise_accuracy,
    pairwise_margins,
    response_token_scores,
    train_dpo_reward_model,
    train_implicit_prm,
    train_reward_model,
    world_preference_pairs,
)


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer()


@pytest.fixture(scope="module")
def pairs():
    splits = make_splits()
    train = world_preference_pairs(preference_pairs(splits["train"][:600], seed=0))
    heldout = world_preference_pairs(preference_pairs(splits["validation"][:200], seed=0))
    return train, heldout


def tiny_lm(tok, seed=0):
    return build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=seed, tokenizer=tok)


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_encode_pairs_masks_the_response_and_eos_and_truncates_the_response(tok):
    pair = {
        "prompt": "Question: Kim has 3 cards.\nAnswer:",
        "chosen": " 3 + 1 = 4.",
        "rejected": " 3 + 2 = 5.",
    }
    (row,) = encode_pairs(tok, [pair])
    prompt = tok(pair["prompt"])["input_ids"]
    chosen = tok(pair["chosen"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert row["chosen_ids"] == prompt + chosen
    assert row["chosen_mask"] == [0] * len(prompt) + [1] * len(chosen)
    (cut,) = encode_pairs(tok, [pair], max_len=len(prompt) + 3)
    assert cut["chosen_ids"] == prompt + chosen[:3] and sum(cut["chosen_mask"]) == 3
    with pytest.raises(ValueError, match="fills max_len"):
        encode_pairs(tok, [pair], max_len=len(prompt))
    with pytest.raises(ValueError, match="pair 0 has no string 'rejected'"):
        encode_pairs(tok, [{"prompt": "a", "chosen": "b"}])
    batch = pair_collate(tok.pad_token_id)([row, cut])
    assert batch["input_ids"].shape[0] == 4 and batch["response_mask"][0].sum() == len(chosen)


def test_qrm_training_learns_on_the_toy_pairs(tok, pairs):
    # From a random backbone, 40 steps do not generalise reliably (held-out accuracy 0.43-0.67 over seeds,
    # and the per-batch loss moves less than its batch-to-batch noise), so the test reads the whole
    # training set before and after: 64 pairs seen 10 times each must be ranked well above chance.
    # Measured over backbone seeds 0-3: training-pair accuracy 0.72-0.78 after.
    train = pairs[0][:64]
    scorer = TokenScorer.from_model(tiny_lm(tok), seed=0)
    before = snapshot(scorer)
    margins_before = pairwise_margins(scorer, tok, train, "mean", max_len=256)
    cfg = RMTrainConfig(lr=1e-3, batch_size=16, max_steps=40, max_len=256)
    losses = train_reward_model(scorer, tok, train, "qrm", cfg, progress=False)
    assert len(losses) == 40
    assert losses[0] == pytest.approx(2.1269, abs=0.01)  # untrained: Delta ~ 0, loss ~ log(1 + e^2)
    moved = {n: not torch.equal(p.detach(), before[n]) for n, p in scorer.named_parameters()}
    assert all(moved.values()), [n for n, m in moved.items() if not m]
    margins = pairwise_margins(scorer, tok, train, "mean", max_len=256)
    mean_gain = sum(margins) / len(margins) - sum(margins_before) / len(margins_before)
    assert mean_gain > 0.3, mean_gain  # seed 0: +1.03 (pooled-score units)
    acc = sum(m > 0 for m in margins) / len(margins)
    assert pairwise_accuracy(scorer, tok, train, "mean", max_len=256) == acc
    assert acc >= 0.65, acc  # chance is 0.5 (64 pairs: 0.65 is 2.4 sigma above it)


@pytest.mark.parametrize("objective", ["orm", "pgtg"])
def test_orm_and_pgtg_objectives_train(tok, pairs, objective):
    scorer = TokenScorer.from_model(tiny_lm(tok), seed=0)
    head = scorer.head.weight.detach().clone()
    cfg = RMTrainConfig(lr=1e-3, batch_size=8, max_steps=5, max_len=256)
    losses = train_reward_model(scorer, tok, pairs[0][:64], objective, cfg, progress=False)
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(head, scorer.head.weight)
    with pytest.raises(ValueError, match="objective must be one of"):
        train_reward_model(scorer, tok, pairs[0][:8], "dpo", cfg, progress=False)


def test_save_load_round_trip_gives_identical_scores(tok, pairs, tmp_path):
    for rank in (None, 4):
        scorer = TokenScorer.from_model(tiny_lm(tok), lora_rank=rank, seed=3)
        if rank:  # make the adapters non-trivial (B starts at zero)
            train_reward_model(
                scorer,
                tok,
                pairs[0][:32],
                "qrm",
                RMTrainConfig(lr=1e-2, batch_size=8, max_steps=2),
                progress=False,
            )
        scorer.save(tmp_path / f"rm{rank}", tokenizer=tok)
        loaded = TokenScorer.load(tmp_path / f"rm{rank}")
        batch = pair_collate(tok.pad_token_id)(encode_pairs(tok, pairs[1][:4]))
        args = (batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        assert torch.equal(response_token_scores(scorer, *args), response_token_scores(loaded, *args))
    with pytest.raises(FileNotFoundError, match="not a saved TokenScorer"):
        TokenScorer.load(tmp_path)


def test_response_token_scores_are_zero_outside_the_response(tok, pairs):
    scorer = TokenScorer.from_model(tiny_lm(tok))
    batch = pair_collate(tok.pad_token_id)(encode_pairs(tok, pairs[1][:3]))
    z = response_token_scores(scorer, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    assert z.shape == batch["input_ids"].shape and z.dtype == torch.float32
    assert (z[~batch["response_mask"]] == 0).all() and (z[batch["response_mask"]] != 0).all()


def test_lora_path_trains_only_adapters_and_head(tok, pairs):
    scorer = TokenScorer.from_model(tiny_lm(tok), lora_rank=4, seed=0)
    trainable = {n for n, p in scorer.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n == "head.weight" for n in trainable)
    before = snapshot(scorer)
    cfg = RMTrainConfig(lr=1e-3, batch_size=8, max_steps=3, max_len=256)
    train_reward_model(scorer, tok, pairs[0][:48], "qrm", cfg, progress=False)
    for n, p in scorer.named_parameters():
        assert torch.equal(p.detach(), before[n]) != (n in trainable), n


def test_dpo_rm_alignment_official_shift_and_training(tok, pairs):
    dpo = DPORewardModel(tiny_lm(tok, seed=1))
    batch = pair_collate(tok.pad_token_id)(encode_pairs(tok, pairs[1][:2]))
    ids, attn, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    before = snapshot(dpo.policy)
    losses = train_dpo_reward_model(
        dpo,
        tok,
        pairs[0][:64],
        RMTrainConfig(lr=1e-3, batch_size=8, max_steps=6, max_len=256),
        progress=False,
    )
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start
    assert sum(losses[-2:]) / 2 < losses[0]
    assert all(not torch.equal(p.detach(), before[n]) for n, p in dpo.policy.named_parameters())
    assert all(not p.requires_grad for p in dpo.reference.parameters())
    right = dpo.token_rewards(ids, attn, resp, beta=0.1)
    shifted = dpo.token_rewards(ids, attn, resp, beta=0.1, official_shift=True)
    assert (right[~resp] == 0).all() and (right[resp] != 0).all()
    for b in range(ids.shape[0]):
        pos = resp[b].nonzero().flatten()
        # the official reading at token t is the correct reward of token t+1: one position early
        assert torch.allclose(shifted[b, pos[:-1]], right[b, pos[1:]], atol=1e-6)
        assert not torch.allclose(shifted[b, pos], right[b, pos])
    with torch.no_grad():
        lp = torch.log_softmax(dpo.policy(input_ids=ids, attention_mask=attn).logits, -1)
        ref = torch.log_softmax(dpo.reference(input_ids=ids, attention_mask=attn).logits, -1)
    t = int(resp[0].nonzero()[0])
    expected = 0.1 * (lp[0, t - 1, ids[0, t]] - ref[0, t - 1, ids[0, t]])
    assert float(right[0, t]) == pytest.approx(float(expected), abs=1e-5)


def test_implicit_prm_loss_matches_float64_and_learns(tok, pairs):
    prm = DPORewardModel(tiny_lm(tok, seed=2))
    rows = pairs[0][:64]
    batch = pair_collate(tok.pad_token_id)(encode_pairs(tok, rows[:4], max_len=256))
    ids, attn, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    with torch.no_grad():
        logp, ref = prm(ids, attn, resp, per_token=True)
        summed = prm(ids, attn, resp)
    assert torch.allclose(logp.sum(1), summed[0], atol=1e-5) and (logp[~resp] == 0).all()
    before = snapshot(prm.policy)
    cfg = RMTrainConfig(lr=1e-4, batch_size=8, max_steps=16, max_len=256, implicit_beta=1.0)
    losses = train_implicit_prm(prm, tok, rows[:16], cfg, progress=False)  # 8 passes over 16 pairs
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # log-ratio 0 at the start: BCE = log 2
    assert sum(losses[-4:]) / 4 < 0.62  # measured ~0.50
    assert any(not torch.equal(p.detach(), before[n]) for n, p in prm.policy.named_parameters())
    # the trained loss on a fixed batch equals an independent float64 BCE of the summed log-ratios
    with torch.no_grad():
        lp = torch.log_softmax(prm.policy(input_ids=ids, attention_mask=attn).logits.double(), -1)
        rf = torch.log_softmax(prm.reference(input_ids=ids, attention_mask=attn).logits.double(), -1)
    tok_lp = lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    tok_rf = rf[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    m = resp[:, 1:].double()
    x = ((tok_lp - tok_rf) * m).sum(1)
    y = torch.tensor([1.0] * 4 + [0.0] * 4, dtype=torch.float64)  # 4 chosen rows, then 4 rejected
    expected = -(y * torch.nn.functional.logsigmoid(x) + (1 - y) * torch.nn.functional.logsigmoid(-x)).mean()
    from papers.qrm.qrm import implicit_prm_loss

    with torch.no_grad():
        got = implicit_prm_loss(*prm(ids, attn, resp, per_token=True), resp, y.float())
    assert float(got) == pytest.approx(float(expected), abs=1e-5)
