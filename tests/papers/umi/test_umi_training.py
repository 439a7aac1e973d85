"""Loss masking and left truncation (spec invariants), the loss, and a does-it-learn run of the toy model."""

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.train import IGNORE_INDEX, TrainConfig, shifted_cross_entropy
from papers.umi.data import role_datasets
from papers.umi.training import encode_pair, encode_samples, train_sft
from papers.umi.world import TOY_TEMPLATES, MiniToolBench, WordTokenizer


@pytest.fixture(scope="module")
def toy():
    trajs = MiniToolBench(0).trajectories(60, "train")
    samples = role_datasets(trajs, "toy", templates=TOY_TEMPLATES)
    tok = WordTokenizer(s["input"] + s["target"] for rows in samples.values() for s in rows)
    return samples, tok


def test_loss_masking_counts_the_target_plus_eos(toy):
    samples, tok = toy
    for s in samples["planner"][:20] + samples["caller"][:20]:
        ex = encode_pair(tok, s["input"], s["target"], max_len=10_000)
        supervised = [t for t in ex["labels"] if t != IGNORE_INDEX]
        assert len(supervised) == len(tok.encode(s["target"] + "</s>")) - 1
        assert supervised[-1] == tok.eos_token_id
        n_in = len(tok.encode(s["input"]))
        assert all(t == IGNORE_INDEX for t in ex["labels"][:n_in])
        assert ex["input_ids"][n_in:] == supervised


def test_left_truncation_keeps_the_last_tokens_and_the_whole_target(toy):
    samples, tok = toy
    s = max(samples["caller"], key=lambda s: len(s["input"]))
    full = encode_pair(tok, s["input"], s["target"], max_len=10_000)
    cut = encode_pair(tok, s["input"], s["target"], max_len=40)
    assert len(full["input_ids"]) > 40 and len(cut["input_ids"]) == 40
    assert cut["input_ids"] == full["input_ids"][-40:]
    n_target = len(tok.encode(s["target"] + "</s>")) - 1
    assert sum(t != IGNORE_INDEX for t in cut["labels"]) == n_target


def test_loss_is_mean_ce_over_supervised_positions_and_zero_when_certain():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1]])
    logits = torch.full((1, 4, 5), -1e4)
    logits[0, 1, 3] = logits[0, 2, 1] = 1e4
    loss, n = shifted_cross_entropy(logits, labels)
    assert n == 2 and loss.item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(1, 4, 5)
    loss, _ = shifted_cross_entropy(logits, labels)
    lp = logits.log_softmax(-1)
    assert loss.item() == pytest.approx(-(lp[0, 1, 3] + lp[0, 2, 1]).item() / 2, rel=1e-5)


def test_tiny_planner_learns(toy, tmp_path):
    samples, tok = toy
    data = encode_samples(tok, samples["planner"], 256)
    model = build_tiny_causal_lm(
        "tiny-student",
        len(tok),
        seed=0,
        tokenizer=tok,
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=192,
    )
    cfg = TrainConfig(
        output_dir=str(tmp_path), max_steps=30, batch_size=8, lr=3e-3, progress=False, report_to="none"
    )
    losses = train_sft(model, data, cfg, tok.pad_token_id).losses
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
