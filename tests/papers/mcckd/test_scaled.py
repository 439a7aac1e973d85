"""MCC-KD's real-data path on the CPU: tiny random students (SmolLM2 tokenizer) on real SVAMP questions.

End to end through the one driver (records, both arms, dev selection, ID + OOD rows in a temp results
dir), resume after an interruption, the teacher stage with a tiny HF teacher on GSM8K train questions,
and the bad inputs.
"""

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.config import apply_overrides
from common.models import add_lora, build_tiny_causal_lm, load_causal_lm, load_tokenizer, smollm2_dir
from papers.mcckd import stages
from papers.mcckd.config import SVAMP_CPU, get_config
from papers.mcckd.data import MissingTrainData, real_task, train_questions
from papers.mcckd.distill import decode, in_child
from papers.mcckd.pipeline import reproduce
from papers.mcckd.rationales import TooFewRationales, make_records, mark_final_answer, score

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
LIMITS = [
    "data.train_sets=[svamp]",
    "data.limit_train=8",
    "data.limit_dev=3",
    "data.limit_test=3",
    "run.backend=hf",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random 2-layer Qwen2 with the SmolLM2 tokenizer, saved as a model folder (student and teacher)."""
    tok = load_tokenizer(smollm2_dir())
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def small_cfg(tiny_dir, *sets: str):
    student = [f"student.model={tiny_dir}", "student.lora=true", "student.lora_r=4", "student.lora_alpha=4"]
    student += ["student.lr=3e-3", "student.steps=2", "student.questions_per_step=2", "student.eval_every=1"]
    student += ["student.max_new_tokens=6", "student.replicas=2", "seeds=[0]"]
    return apply_overrides(get_config("small"), [*student, *LIMITS, *sets])


def test_small_driver_end_to_end_and_resume(tiny_dir, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    cfg = small_cfg(tiny_dir)
    real_ce = stages.ce_loss_fn

    def dying_ce(*args):
        loss_fn, seen = real_ce(*args), []

        def loss(model, batch):
            seen.append(1)
            if len(seen) == 2:
                raise RuntimeError("killed during training")
            return loss_fn(model, batch)

        return loss

    def run():
        return reproduce(cfg, data_dir=str(SHARED), results_root=tmp_path / "repo")

    with monkeypatch.context() as m:  # first run: MCC-KD (the sweep's one arm) done; dies in CoT-KD's step 2
        m.setattr(stages, "ce_loss_fn", dying_ce)
        with pytest.raises(RuntimeError, match="killed during training"):
            run()
    capsys.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="common.train")

    def killed(*args, **kwargs):
        raise RuntimeError("killed during test decoding")

    with monkeypatch.context() as m:  # second run: resumes training, dies after CoT-KD's dev selection
        m.setattr(stages, "decode", killed)
        with pytest.raises(RuntimeError, match="killed"):
            run()
    assert "(resuming at step 1 from" in caplog.text  # common.train logs the resume point
    root = tmp_path / "runs" / "mcckd" / "small" / "svamp"
    cot = [a for a in root.iterdir() if a.name.startswith("CoT-KD")]
    assert len(cot) == 1 and (cot[0] / "best.safetensors").exists() and not (cot[0] / "metrics.json").exists()

    calls = []
    real_train = stages.train_and_select
    monkeypatch.setattr(
        stages, "train_and_select", lambda *a, **k: calls.append(a[3].output_dir) or real_train(*a, **k)
    )
    out = run()
    assert calls == []  # both arms were trained before: neither is retrained

    assert out == tmp_path / "repo" / "papers" / "mcckd" / "results" / "small"
    rows = list(csv.DictReader((out / "reproduced.csv").open()))
    assert len(rows) == 2 * 3 * 2  # methods x (SVAMP ID, GSM8K + ASDiv OOD) x (strict, flexible)
    assert {(r["table"], r["benchmark"]) for r in rows} == {
        ("ID", "SVAMP"),
        ("OOD", "GSM8K"),
        ("OOD", "ASDiv"),
    }
    assert {r["setting"] for r in rows} == {"train SVAMP seed 0"}
    assert {r["method"] for r in rows} == {"CoT-KD", "MCC-KD"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["data"]["limit_train"] == 8  # the resolved config is stored
    summary = prov["tasks"]["svamp"]["summary"]
    assert {k for k in summary if "wins" not in k} == {
        f"{m} {b}" for m in ("CoT-KD", "MCC-KD") for b in ("SVAMP", "GSM8K", "ASDiv")
    }
    assert summary["MCC-KD SVAMP"][0] == float(next(r["value"] for r in rows if r["method"] == "MCC-KD"))
    stats = prov["tasks"]["svamp"]["data_stats"]
    assert stats["questions"] == 8 and stats["encoded_questions"] >= 1
    for arm in prov["tasks"]["svamp"]["arms"]:
        assert arm["best_step"] in (1, 2) and [s for s, _ in arm["dev_curve"]] == [1, 2] and arm["steps"] == 2
    for arm in sorted(root.iterdir()):
        best = load_file(str(arm / "best.safetensors"))  # LoRA: only the adapters are saved
        assert best and all("lora_" in n for n in best)
        assert any(
            bool(t.abs().sum() > 0) for n, t in best.items() if "lora_B" in n
        )  # B starts at 0: it moved
        lines = (arm / "samples-gsm8k.jsonl").read_text().splitlines()
        assert len(lines) == 3 and set(json.loads(lines[0])) == {"id", "label", "output"}
        losses = json.loads((arm / "train" / "metrics.json").read_text())["losses"]
        assert len(losses) == 2 and all(x == x for x in losses)
    assert not (Path(stages.__file__).parent / "results" / "small").exists()


def test_teacher_sampling_with_a_tiny_hf_teacher(tiny_dir, tmp_path):
    cfg = small_cfg(tiny_dir, "data.train_sets=[gsm8k]", "data.limit_train=3", f"teacher.model={tiny_dir}")
    cfg = apply_overrides(
        cfg, ["teacher.samples=3", "teacher.temperature=1.0", "teacher.max_tokens=5", "teacher.chunk=2"]
    )
    task = real_task(cfg, SHARED, "gsm8k")
    assert [q["id"] for q in task.train] == ["gsm8k-train-0", "gsm8k-train-1", "gsm8k-train-2"]
    path = tmp_path / "teacher.jsonl"
    first = stages.teacher_samples(task, cfg, path)
    assert list(first) == [q["id"] for q in task.train] and all(len(v) == 3 for v in first.values())
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:10])  # killed while writing the last line
    again = stages.teacher_samples(task, cfg, path)
    assert again == first  # resumed: two kept, the torn one re-sampled with the same seed
    assert len(path.read_text().splitlines()) == 3
    child = tmp_path / "child.jsonl"  # what the CUDA path does: sample in a spawned process, read here
    in_child(stages.teacher_samples, task, cfg, child)
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
    hf = decode(model, tok, [prompts[:2], prompts[2:]], 8, False, tmp_path / "m", backend="hf")
    vllm = decode(model, tok, [prompts[:2], prompts[2:]], 8, False, tmp_path / "m", backend="vllm")
    assert vllm == hf and not (tmp_path / "m").exists()


def test_teacher_stage_only(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    teacher = [f"teacher.model={tiny_dir}", "teacher.samples=2", "teacher.max_tokens=4"]
    cfg = small_cfg(tiny_dir, "data.train_sets=[gsm8k]", "data.limit_train=2", *teacher)
    out = reproduce(replace(cfg, run=replace(cfg.run, stop_after="teacher")), data_dir=str(SHARED))
    files = list(out.glob("gsm8k-*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == 2
    with pytest.raises(SystemExit, match="none of 2 training questions"):  # a random teacher is never right
        reproduce(cfg, data_dir=str(SHARED), results_root=tmp_path / "repo")


def test_missing_asdiv_train_is_one_clear_line(tmp_path):
    with pytest.raises(MissingTrainData) as err:
        train_questions("asdiv", SHARED)
    assert "ASDiv/train.json is absent" in str(err.value) and "\n" not in str(err.value)
    cfg = apply_overrides(get_config("small"), ["data.train_sets=[csqa]", "data.limit_train=2"])
    with pytest.raises(SystemExit, match=r"^mcckd small: mcckd: no CSQA training questions[^\n]*$"):
        reproduce(cfg, data_dir=str(SHARED))
    with pytest.raises(SystemExit, match=r"^mcckd small: unknown MCC-KD dataset 'mathqa'; valid: gsm8k, "):
        reproduce(apply_overrides(get_config("small"), ["data.train_sets=[mathqa]"]))


def test_records_need_two_rationales_and_csqa_uses_letters():
    fil = get_config("small").filters
    args = (fil.k, fil.jaccard_threshold, fil.dedup, fil.answer_template)
    rows = [{"id": "q", "question": "1+1?", "answer": "2", "rationales": ["1+1=2", "so 3"]}]
    with pytest.raises(TooFewRationales, match="none of 1 training questions keeps >= 2"):
        make_records(rows, "number", *args)
    choice = [{"id": "c", "question": "Q? Answer Choices:\nA. x\nB. y\n", "answer": "B"}]
    choice[0]["rationales"] = ["It is y, so the answer is (B).", "y fits: B", "the answer is A", "B."]
    records, stats = make_records(choice, "letter", *args)
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
    fil = get_config("small").filters
    records, stats = make_records(rows, "number", fil.k, fil.jaccard_threshold, fil.dedup)
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
    sets = ["data.limit_train=4", "data.limit_dev=2", "data.limit_test=2", "data.eval_sets=[svamp]"]
    out = reproduce(small_cfg(tmp_path / "t5", *sets), data_dir=str(SHARED), results_root=tmp_path / "repo")
    prov = json.loads((out / "provenance.json").read_text())
    arms = prov["tasks"]["svamp"]["arms"]
    assert [a["method"] for a in arms] == ["CoT-KD", "MCC-KD"] and all(a["steps"] == 2 for a in arms)
    assert set(arms[0]["tests"]) == {"svamp"}


@pytest.mark.slow
def test_real_svamp_smoke(tmp_path, monkeypatch):
    """The SVAMP_CPU run (SmolLM2-135M + LoRA on the 700 released questions), cut to one step."""
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    tiny = ["student.steps=1", "student.eval_every=1", "student.questions_per_step=1", "student.lora_r=2"]
    tiny += ["data.limit_dev=1", "data.limit_test=1", "student.max_new_tokens=4"]
    cfg = apply_overrides(get_config("small"), [*SVAMP_CPU, *tiny])
    out = reproduce(cfg, data_dir=str(SHARED), results_root=tmp_path / "repo")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["tasks"]["svamp"]["data_stats"]["records"] == 642
    assert [a["method"] for a in prov["tasks"]["svamp"]["arms"]] == ["CoT-KD", "MCC-KD"]
