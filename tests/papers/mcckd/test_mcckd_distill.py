"""MCC-KD training paths: span alignment on an overfit model (invariant 8), learning, T5, LoRA, dev selection."""

import json

import pytest
import torch

from common.models import add_lora, build_tiny_causal_lm
from common.synthetic.tokenizer import world_tokenizer
from common.synthetic.world import DEFAULT_WORLD, make_splits, valid_rationales
from common.train import TrainConfig
from papers.mcckd.distill import (
    answer_kl,
    ce_loss_fn,
    greedy_texts,
    item_collate,
    mcckd_loss_fn,
    pair_items,
    single_items,
    to_seq2seq,
    train_and_select,
)
from papers.mcckd.mcckd import gather_span_logits
from papers.mcckd.rationales import encode_example, normalise_rationale


@pytest.fixture(scope="module")
def tok():
    return world_tokenizer(DEFAULT_WORLD)


@pytest.fixture(scope="module")
def questions(tok):
    out = []
    for p in make_splits(DEFAULT_WORLD)["train"][:6]:
        texts = valid_rationales(p, 3, seed=0)
        out.append(
            [
                encode_example(
                    tok,
                    p.prompt(),
                    " " + normalise_rationale(t, str(p.answer)),
                    str(p.answer),
                    "answer_tokens",
                )
                for t in texts
            ]
        )
    return [q for q in out if len(q) >= 2 and len({e["span"][1] - e["span"][0] for e in q}) == 1]


def tiny_lm(tok, seed=0):
    return build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=seed, tokenizer=tok)


def test_span_alignment_on_an_overfit_model(tok, questions):
    example = questions[0][0]
    model = tiny_lm(tok)
    batch = item_collate(tok.pad_token_id)([{"a": example}])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = ce_loss_fn()
    for _ in range(150):
        loss, _ = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.05
    with torch.no_grad():
        logits = model(input_ids=batch["a"]["input_ids"]).logits
    s, e = example["span"]
    shifted, mask = gather_span_logits(logits, batch["a"]["spans"], e - s, shift=1)
    assert mask.all() and shifted.argmax(-1)[0].tolist() == example["input_ids"][s:e]  # invariant 8
    unshifted, _ = gather_span_logits(logits, batch["a"]["spans"], e - s, shift=0)
    assert unshifted.argmax(-1)[0].tolist() != example["input_ids"][s:e]


def test_items_are_seeded_and_matched(questions):
    pairs = pair_items(questions, replicas=3, seed=0)
    assert pairs == pair_items(questions, replicas=3, seed=0) and pairs != pair_items(questions, 3, seed=1)
    assert len(pairs) == 3 * len(questions) and all(p["a"] is not p["b"] for p in pairs)
    assert len(single_items(questions, replicas=3, seed=0)) == 3 * len(questions)


def test_mcckd_learns_and_selects_the_best_dev_checkpoint(tok, questions, tmp_path):
    model = tiny_lm(tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = pair_items(questions, replicas=4, seed=0)
    kl0 = answer_kl(model, items[:8], tok.pad_token_id)
    scores = iter([0.2, 0.9, 0.5])
    snapshots = []

    def dev_score(m):
        snapshots.append({n: p.detach().clone() for n, p in m.named_parameters()})
        return next(scores)

    config = TrainConfig(
        output_dir=str(tmp_path / "run"), max_steps=30, batch_size=4, lr=3e-3, progress=False
    )
    out = train_and_select(model, items, mcckd_loss_fn(1.0, 1.3), config, tok.pad_token_id, dev_score, 10)
    assert out["best_step"] == 20 and [s for s, _ in out["dev_curve"]] == [10, 20, 30]
    loaded = dict(model.named_parameters())
    assert all(torch.equal(loaded[n], snapshots[1][n]) for n in snapshots[1])  # the best checkpoint's weights
    assert all(not torch.equal(before[n], loaded[n]) for n in before)  # every parameter moved
    losses = json.loads((tmp_path / "run" / "metrics.json").read_text())["losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # the loss falls
    assert answer_kl(model, items[:8], tok.pad_token_id) < kl0  # answers agree more across rationales


def test_t5_encoder_decoder_path(tok, questions, tiny_t5):
    model = tiny_t5(tok)
    seq2seq = [[to_seq2seq(ex) for ex in q] for q in questions]
    ex, orig = seq2seq[0][0], questions[0][0]
    s, e = ex["span"]
    assert ex["labels"][s:e] == orig["input_ids"][orig["span"][0] : orig["span"][1]]  # span moved into labels
    batch = item_collate(tok.pad_token_id)(pair_items(seq2seq, 1, 0)[:4])
    loss_fn = mcckd_loss_fn(0.5, 1.3, encoder_decoder=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first, _ = loss_fn(model, batch)
    for _ in range(20):
        loss, metrics = loss_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < first.item() and metrics["kl"] >= 0
    texts = greedy_texts(model, tok, ["Question: a?\nAnswer:"], max_tokens=4, encoder_decoder=True)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_lora_student_trains_only_adapters(tok, questions):
    model = add_lora(tiny_lm(tok), r=4, alpha=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    batch = item_collate(tok.pad_token_id)(pair_items(questions, 1, 0)[:4])
    loss, _ = mcckd_loss_fn(0.1, 1.3)(model, batch)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)
