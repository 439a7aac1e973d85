"""The small/paper path on CPU: GSM8K prompts in a chat template, the rule verifier, every RL arm with the
small preset's code variants (top-5 old logits), through the same driver, on a tiny random Qwen2-shaped model
(SmolLM2's tokenizer, loadable offline) and a mirror in the shared layout."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

import common.results
from common.models import build_tiny_causal_lm, load_tokenizer
from papers.lco import pipeline
from papers.lco.config import METHODS, get_config
from papers.lco.data import INSTRUCTION, make_task

REPO = Path(__file__).resolve().parents[3]
QUESTIONS = [
    f"Sam has {n} pens and gets {m} more. How many pens?" for n, m in [(1, 2), (2, 1), (0, 3), (3, 0)]
]


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(common.results, "ROOT", tmp_path / "root")
    (tmp_path / "root" / "papers" / "lco").mkdir(parents=True)
    for name in ("claims.yaml", "published.csv"):
        src = REPO / "papers" / "lco" / name
        (tmp_path / "root" / "papers" / "lco" / name).write_text(src.read_text())
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    for split in ("train", "test"):
        rows = [{"question": q, "answer": "3 pens.\n#### 3"} for q in QUESTIONS]
        (data / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = load_tokenizer("smollm2-135m-instruct")
    model = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    model.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    return tmp_path, str(tmp_path / "policy"), str(data)


def test_gsm8k_task_uses_the_chat_template(tiny):
    _, policy, data = tiny
    task = make_task("gsm8k", policy, 2, 3, data)
    assert len(task.train) == 4 and len(task.val) == 2 and len(task.test) == 3
    assert QUESTIONS[0] in task.train.prompts[0] and INSTRUCTION in task.train.prompts[0]
    assert task.train.prompts[0] != QUESTIONS[0]  # templated
    assert task.is_correct("so \\boxed{3} and 3", "3") and not task.is_correct("it is 4", "3")


@pytest.mark.slow
def test_small_driver_end_to_end(tiny):
    root, policy, data = tiny
    small = get_config("small")
    assert small.loss.logits_topk == 5
    rl = replace(
        small.rl,
        policy=policy,
        chunks=1,
        prompts_per_chunk=2,
        samples_per_prompt=2,
        max_tokens=6,
        val_problems=2,
        test_problems=2,
        updates_per_chunk=2,
        forward_batch_size=2,
        eval_every=1,
        sampled_n=2,
    )
    cfg = replace(small, rl=rl, backend="hf")
    out = pipeline.reproduce(cfg, data_dir=data)
    with open(out / "reproduced.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["benchmark"] for r in rows} == {"GSM8K"} and {r["table"] for r in rows} == {"scaled"}
    assert {r["method"] for r in rows} == set(METHODS) | {"SFT"}
    assert {r["metric"] for r in rows} >= {"Pass@1", "Pass@1 (lr x3)"}
    runs = json.loads((out / "rl_curves.json").read_text())["runs"]
    assert len(runs) == 5 + 2  # every method at x1, PPO and LCO-KLD at x3 (the preset's factor_methods)
    assert all(r["curve"][-1]["step"] == 2 for r in runs)  # two updates per chunk
