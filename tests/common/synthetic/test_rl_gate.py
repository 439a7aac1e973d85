"""The RL testbed's gate: the oracle reward's GRPO advantages, the per-seed run, the pass rule."""

from dataclasses import replace

import pytest
import torch

from common.rl import Rollout
from common.synthetic import rl_gate
from common.synthetic.world import make_splits


def test_oracle_reward_is_grpo_advantages_of_correctness(toy_tokenizer):
    tok = toy_tokenizer
    train = make_splits()["train"][:2]
    texts = [
        f"x\n#### {train[0].answer}",
        "x\n#### -1",
        f"y\n#### {train[1].answer}",
        f"z\n#### {train[1].answer}",
    ]
    prompt_ids = [tok(train[g].prompt())["input_ids"] for g in (0, 0, 1, 1)]
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 2:5] = True
    ro = Rollout(
        prompt_ids,
        torch.zeros(4, 6, dtype=torch.long),
        torch.ones(4, 6),
        mask,
        torch.zeros(4, 6),
        texts,
        [0, 0, 1, 1],
    )
    r = rl_gate.oracle_reward(tok, train, "grpo")(ro)
    assert ro.metrics["correct"] == 0.75  # logged before the advantage
    sd = 0.5**0.5  # unbiased std of (1, 0)
    assert r[0, 2:5].tolist() == pytest.approx([0.5 / (sd + 1e-4)] * 3) and r[1, 2].item() < 0
    assert r[2:].abs().max() == 0 and (r[:, :2] == 0).all()  # both right: no signal; prompt positions 0


def test_gate_needs_every_seed_past_both_thresholds():
    ok = {"delta": {"greedy": 6.0, "sampled": 11.0}}
    assert rl_gate.gate([ok, ok])["gate"] == "passes"
    assert rl_gate.gate([ok, {"delta": {"greedy": 6.0, "sampled": 9.5}}])["gate"] == "fails"


def test_one_seed_runs_end_to_end_on_a_tiny_policy(toy_tokenizer, tiny_lm, tmp_path, monkeypatch):
    folder = tmp_path / "policy"
    tiny_lm.save_pretrained(folder)
    toy_tokenizer.save_pretrained(folder)
    monkeypatch.setattr(rl_gate, "get_base_model", lambda size: folder)
    cfg = replace(
        rl_gate.GateConfig(),
        chunks=2,
        prompts_per_chunk=2,
        samples_per_prompt=2,
        val_problems=4,
        sampled_n=1,
        max_tokens=6,
        eval_every=1,
        warm_chunks=0,
    )
    out = rl_gate.run_seed(cfg, seed=0, work=tmp_path / "work")
    assert set(out) >= {"sft", "rl", "delta", "curve"} and len(out["curve"]) == 3  # chunk 0, 1, 2
    assert out["delta"]["greedy"] == pytest.approx(out["rl"]["greedy"] - out["sft"]["greedy"])
    assert all("correct" in row for row in out["curve"][1:])


def test_gate_table_has_one_row_per_seed_and_the_verdict():
    runs = [
        {
            "seed": s,
            "sft": {"greedy": 12.0, "sampled": 22.0, "pass@4": 47.0, "pass@8": 65.0},
            "rl": {"greedy": 60.0 + s, "sampled": 40.0},
            "delta": {"greedy": 48.0 + s, "sampled": 18.0},
        }
        for s in (0, 1)
    ]
    verdict = rl_gate.gate(runs) | {"config": {"lr": 3e-4}, "split": "validation"}
    text = rl_gate.gate_table(verdict, runs)
    assert (
        text.count("\n| ") == 2
        and "| 1 | 12.0 | 22.0 | 47.0 | 65.0 | 61.0 | 40.0 | +49.00 | +18.00 |" in text
    )
    assert "**passes**" in text and "validation" in text
