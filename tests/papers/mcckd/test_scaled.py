"""MCC-KD small/paper driver on the CPU: tiny random students (SmolLM2 tokenizer) on real SVAMP questions.

End to end (records, both arms, dev selection, ID + OOD rows in a temp results dir), resume after an
interruption, the teacher stage with a tiny HF teacher on GSM8K train questions, and the bad inputs.
"""

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from papers.mcckd.scaled import ScaledConfig, reproduce_scaled
from papers.mcckd.scaled_data import (
    MissingTrainData,
    make_records,
    mark_final_answer,
    teacher_samples,
    train_questions,
)
from papers.mcckd.scaled_eval import decode, in_child, score
from safetensors.torch import load_file

from common.models import add_lora, build_tiny_causal_lm, load_causal_lm, load_tokenizer, smollm2_dir
from papers.mcckd import scaled
from papers.mcckd.config import TeacherConfig, get_config
from papers.mcckd.rationales import TooFewRationales

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random 2-layer Qwen2 with the SmolLM2 tokenizer, saved as a model folder (student and teacher)."""
    tok = load_tokenizer(smollm2_dir())
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def small_cfg(tiny_dir):
    cfg = get_config("small")
    student = replace(
        cfg.student,
        model=str(tiny_dir),
        lora=True,
        lora_r=4,
        lora_alpha=4,
        lr=3e-3,
        steps=2,
        questions_per_step=2,
        eval_every=1,
        max_new_tokens=6,
        replicas=2,
    )
    return replace(cfg, student=student, seeds=(0,))


SC = ScaledConfig(train_sets=("svamp",), limit_train=8, limit_dev=3, limit_test=3, backend="hf")


def test_small_driver_end_to_end_and_resume(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    cfg = small_cfg(tiny_dir)
    real_ce = scaled.ce_loss_fn

    def dying_ce(*args):
        loss_fn, seen = real_ce(*args), []

        def loss(model, batch):
            seen.append(1)
            if len(seen) == 2:
                raise RuntimeError("killed during training")
            return loss_fn(model, batch)

        return loss

    with monkeypatch.context() as m:  # first run: dies in CoT-KD's step 2, after the step-1 checkpoint
        m.setattr(scaled, "ce_loss_fn", dying_ce)
        with pytest.raises(RuntimeError, match="killed during training"):
            reproduce_scaled(cfg, data_dir=str(SHARED), sc=SC, results_root=tmp_path / "repo")
    capsys.readouterr()

    def killed(*args, **kwargs):
        raise RuntimeError("killed during test decoding")

    with monkeypatch.context() as m:  # second run: resumes training, dies after CoT-KD's dev selection
        m.setattr(scaled, "decode", killed)
        with pytest.raises(RuntimeError, match="killed"):
            reproduce_scaled(cfg, data_dir=str(SHARED), sc=SC, results_root=tmp_path / "repo")
    assert "(resuming at step 1 from" in capsys.readouterr().out
    arms = sorted((tmp_path / "runs" / "mcckd" / "small" / "svamp").iterdir())
    assert [a.name.split("-s0-")[0] for a in arms] == ["CoT-KD"]
    assert (arms[0] / "best.safetensors").exists() and not (arms[0] / "metrics.json").exists()

    calls = []
    real_train = scaled.train_and_select
    monkeypatch.setattr(
        scaled, "train_and_select", lambda *a, **k: calls.append(a[3].output_dir) or real_train(*a, **k)
    )
    out = reproduce_scaled(cfg, data_dir=str(SHARED), sc=SC, results_root=tmp_path / "repo")
    assert len(calls) == 1 and "MCC-KD" in calls[0]  # the finished CoT-KD arm was not retrained

    assert out == tmp_path / "repo" / "papers" / "mcckd" / "results" / "small"
    rows = list(csv.DictReader((out / "reproduced.csv").open()))
    assert len(rows) == 2 * 3 * 2  # methods x (SVAMP ID, GSM8K + ASDiv OOD) x (strict, flexible)
    assert {(r["table"], r["benchmark"]) for r in rows} == {
        ("ID", "SVAMP"),
        ("OOD", "GSM8K"),
        ("OOD", "ASDiv"),
    }
    assert {r["setting"] for r in rows} == {"train SVAMP seed 0"} and {r["method"] for r in rows} == {
        "CoT-KD",
        "MCC-KD",
    }
    prov = json.loads((out / "provenance.json").read_text())
    summary = prov["sets"]["svamp"]["summary"]
    assert set(summary) == {f"{m} {b}" for m in ("CoT-KD", "MCC-KD") for b in ("SVAMP", "GSM8K", "ASDiv")}
    assert summary["MCC-KD SVAMP"][0] == float(next(r["value"] for r in rows if r["method"] == "MCC-KD"))
    stats = prov["sets"]["svamp"]["data_stats"]
    assert stats["questions"] == 8 and stats["encoded_questions"] >= 1
    for arm in prov["sets"]["svamp"]["arms"]:
        assert arm["best_step"] in (1, 2) and [s for s, _ in arm["dev_curve"]] == [1, 2] and arm["steps"] == 2
    for arm in sorted((tmp_path / "runs" / "mcckd" / "small" / "svamp").iterdir()):
        best = load_file(str(arm / "best.safetensors"))  # LoRA: only the adapters are saved
        assert best and all("lora_" in n for n in best)
        assert any(
            bool(t.abs().sum() > 0) for n, t in best.items() if "lora_B" in n
        )  # B starts at 0: it moved
        lines = (arm / "samples-gsm8k.jsonl").read_text().splitlines()
        assert len(lines) == 3 and set(json.loads(lines[0])) == {"id", "label", "output"}
        losses = json.loads((arm / "train" / "metrics.json").read_text())["losses"]
        assert len(losses) == 2 and all(x == x for x in losses)
    assert not (Path(scaled.__file__).parent / "results" / "small").exists()


def test_teacher_sampling_with_a_tiny_hf_teacher(tiny_dir, tmp_path):
    questions = train_questions("gsm8k", SHARED, limit=3)
    assert [q["id"] for q in questions] == ["gsm8k-train-0", "gsm8k-train-1", "gsm8k-train-2"]
    teacher = TeacherConfig(model=str(tiny_dir), samples=3, temperature=1.0, max_tokens=5)
    path = tmp_path / "teacher.jsonl"
    first = teacher_samples(questions, "number", teacher, path, backend="hf", chunk=2)
    assert list(first) == [q["id"] for q in questions] and all(len(v) == 3 for v in first.values())
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:10])  # killed while writing the last line
    again = teacher_samples(questions, "number", teacher, path, backend="hf", chunk=2)
    assert again == first  # resumed: two kept, the torn one re-sampled with the same seed
    assert len(path.read_text().splitlines()) == 3
    child = tmp_path / "child.jsonl"  # what the CUDA path does: sample in a spawned process, read here
    in_child(teacher_samples, questions, "number", teacher, child, "hf", 0, 2)
    assert child.read_text() == path.read_text()


@pytest.mark.slow
def test_vllm_decoding_of_a_merged_lora_student_matches_hf(tiny_dir, tmp_path):
    tok = load_tokenizer(tiny_dir)
    model = add_lora(load_causal_lm(tiny_dir, dtype=torch.float32), r=4, alpha=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(n)))
    prompts = [r["question"] + "\n" for r in train_questions("svamp", SHARED, limit=4)]
    hf = decode(model, tok, prompts, 8, False, tmp_path / "m", backend="hf")
    vllm = decode(model, tok, prompts, 8, False, tmp_path / "m", backend="vllm")
    assert vllm == hf and not (tmp_path / "m").exists()


def test_teacher_stage_only(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    cfg = replace(small_cfg(tiny_dir), teacher=TeacherConfig(model=str(tiny_dir), samples=2, max_tokens=4))
    sc = replace(SC, train_sets=("gsm8k",), limit_train=2)
    out = reproduce_scaled(cfg, data_dir=str(SHARED), sc=sc, stage="teacher")
    files = list(out.glob("gsm8k-*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 2
    with pytest.raises(
        TooFewRationales, match="none of 2 training questions"
    ):  # a random teacher is never right
        reproduce_scaled(cfg, data_dir=str(SHARED), sc=sc, results_root=tmp_path / "repo")


def test_missing_asdiv_train_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(MissingTrainData) as err:
        train_questions("asdiv", SHARED)
    assert "ASDiv/train.json is absent" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SystemExit):
        scaled.main(["--train-sets", "csqa", "--data-dir", str(SHARED), "--limit", "2"])
    msg = capsys.readouterr().err
    assert msg.startswith("error: mcckd: no CSQA training questions") and msg.count("\n") == 1
    with pytest.raises(ValueError, match="unknown MCC-KD dataset 'mathqa'"):
        reproduce_scaled(get_config("small"), sc=ScaledConfig(train_sets=("mathqa",)))


def test_records_need_two_rationales_and_csqa_uses_letters():
    rows = [{"id": "q", "question": "1+1?", "answer": "2", "rationales": ["1+1=2", "so 3"]}]
    with pytest.raises(TooFewRationales, match="none of 1 training questions keeps >= 2"):
        make_records("svamp", rows, get_config("small").filters)
    choice = [{"id": "c", "question": "Q? Answer Choices:\nA. x\nB. y\n", "answer": "B"}]
    choice[0]["rationales"] = ["It is y, so the answer is (B).", "y fits: B", "the answer is A", "B."]
    records, stats = make_records("csqa", choice, get_config("small").filters)
    assert stats["correct_mean"] == 3 and records[0]["output"][0].endswith("Therefore, the answer is B .")
    assert score(["so the answer is (B)", "A"], ["B", "B"], "letter") == {"strict": 0.5, "flexible": 0.5}


def test_teacher_answer_sentence_becomes_the_one_common_sentence():
    texts = [
        "3 + 4 = 7 apples.\nTherefore, the answer is 7.",
        "4 + 3 = 7. Therefore, the answer is $7.00.",
        "So the answer is 8.",
    ]
    marked = [mark_final_answer(t) for t in texts]
    assert marked == ["3 + 4 = 7 apples.\n#### 7", "4 + 3 = 7.\n#### $7.00", "\n#### 8"]
    assert mark_final_answer("no closing sentence, 5") == "no closing sentence, 5"
    rows = [{"id": "g", "question": "q", "answer": "7", "rationales": marked}]
    records, stats = make_records("gsm8k", rows, get_config("small").filters)
    assert stats["correct_mean"] == 2
    assert records[0]["output"] == [
        "3 + 4 = 7 apples.\nTherefore, the answer is 7 .",
        "4 + 3 = 7.\nTherefore, the answer is 7 .",
    ]


def test_flan_t5_style_student_trains_and_is_scored(tmp_path, monkeypatch, tiny_t5):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    tok = load_tokenizer(smollm2_dir())
    tiny_t5(tok).save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    cfg = small_cfg(tmp_path / "t5")
    sc = replace(SC, limit_train=4, limit_dev=2, limit_test=2, eval_sets=("svamp",))
    out = reproduce_scaled(cfg, data_dir=str(SHARED), sc=sc, results_root=tmp_path / "repo")
    prov = json.loads((out / "provenance.json").read_text())
    arms = prov["sets"]["svamp"]["arms"]
    assert [a["method"] for a in arms] == ["CoT-KD", "MCC-KD"] and all(a["steps"] == 2 for a in arms)
    assert set(arms[0]["tests"]) == {"svamp"}


def test_cli_overrides_reach_the_driver(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(scaled, "reproduce_scaled", lambda *a: seen.update(args=a) or tmp_path)
    argv = ["--student", "smollm2-135m-instruct", "--teacher", "t", "--steps", "7", "--seeds", "1", "2"]
    argv += ["--limit", "5", "--train-sets", "svamp", "--backend", "hf", "--results-root", str(tmp_path)]
    assert scaled.main(argv) == 0 and f"done: {tmp_path}" in capsys.readouterr().out
    cfg, force, data_dir, sc, root, stage = seen["args"]
    assert (cfg.student.model, cfg.student.steps, cfg.seeds, cfg.student.lora) == (
        "smollm2-135m-instruct",
        7,
        (1, 2),
        True,
    )
    assert (cfg.teacher.model, cfg.teacher.endpoint) == ("t", None)
    assert (sc.limit_train, sc.limit_dev, sc.limit_test, sc.train_sets, sc.backend) == (
        5,
        5,
        5,
        ("svamp",),
        "hf",
    )
    assert (force, data_dir, root, stage) == (False, None, tmp_path, "all")
