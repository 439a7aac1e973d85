"""The real-model path end to end on a tiny random HF model: GSM8K train questions with their reference
solutions as the text-only teacher, HF proxy and student (one code path with the toy), greedy accuracy
on the mirrored test sets with the code's graders (proxy fully fine-tuned, student with LoRA)."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from common.data import DataError, load_rows, shared_mirror
from common.models import build_tiny_causal_lm
from papers.proxykd import pipeline
from papers.proxykd.config import SMALL, EvalConfig
from papers.proxykd.data import DATASETS, TEACHER_SUFFIX, real_task, reference_asker

DATA = shared_mirror()  # ../shared/data beside the checkout, or None
pytestmark = pytest.mark.skipif(
    DATA is None or not (DATA / "proxykd").is_dir(), reason="../shared/data is not beside the checkout"
)


def test_reference_teacher_strips_calculator_marks():
    row = {"question": "Q?", "answer": "72", "rationale": "48/2 = <<48/2=24>>24.\nSo 72."}
    ((text, error),) = reference_asker([row])([row["question"] + TEACHER_SUFFIX], [0])
    assert error is None and text == "48/2 = 24.\nSo 72.\nTherefore, the answer is 72."


MMLU = [
    {
        "question": "What is 2 + 2?",
        "subject": "elementary_mathematics",
        "choices": ["3", "4", "5", "6"],
        "answer": 1,
    },
    {
        "question": "H2O is?",
        "subject": "high_school_chemistry",
        "choices": ["salt", "gold", "water", "air"],
        "answer": 2,
    },
    {
        "question": "Capital of France?",
        "subject": "geography",
        "choices": ["Paris", "Rome", "Oslo", "Bern"],
        "answer": 0,
    },
]


def _mirror_with_mmlu(root: Path, records: list) -> Path:
    """../shared/data's gsm8k and proxykd folders plus an mmlu/test.jsonl in cais/mmlu's fields."""
    root.mkdir()
    for name in ("gsm8k", "proxykd"):
        (root / name).symlink_to(DATA / name)
    (root / "mmlu").mkdir()
    (root / "mmlu" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_mmlu_rows_build_the_zero_shot_prompt_and_the_letter(tmp_path):
    rows = load_rows(DATASETS["proxykd-mmlu"], "test", _mirror_with_mmlu(tmp_path / "m", MMLU))
    assert [r["answer"] for r in rows] == ["B", "C", "A"]
    assert rows[0]["question"] == (
        "The following is a multiple choice question about elementary mathematics.\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:"
    )
    assert rows[1]["category"] == "high_school_chemistry"


@pytest.mark.parametrize(
    ("bad", "field"),
    [({"choices": ["a", "b", "c"]}, "choices"), ({"answer": 4}, "answer"), ({"answer": "B"}, "answer")],
)
def test_a_bad_mmlu_row_names_the_file_row_and_field(tmp_path, bad, field):
    root = _mirror_with_mmlu(tmp_path / "m", [MMLU[0], {**MMLU[1], **bad}])
    with pytest.raises(DataError, match=rf"mmlu/test.jsonl row 2: .*{field}"):
        load_rows(DATASETS["proxykd-mmlu"], "test", root)


def test_an_eval_set_missing_from_the_mirror_says_how_to_leave_it_out(tmp_path):
    root = _mirror_with_mmlu(tmp_path / "m", [])
    (root / "mmlu" / "test.jsonl").unlink()
    cfg = replace(SMALL, data=replace(SMALL.data, n_prompts=2))  # the data is read before any model
    with pytest.raises(DataError) as e:
        real_task(cfg, str(root), asker=reference_asker([]))
    assert "mmlu/test.jsonl: file not found" in str(e.value)
    assert str(e.value).endswith(
        "(eval set 'mmlu'; leave it out with --set eval.sets=[gsm8k,arc,csqa,bbh,agieval])"
    )


def test_the_real_path_runs_every_stage_on_a_tiny_hf_model(toy_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    model_dir = tmp_path / "tiny"
    build_tiny_causal_lm("tiny-student", len(toy_tokenizer), seed=0, tokenizer=toy_tokenizer).save_pretrained(
        model_dir
    )
    toy_tokenizer.save_pretrained(model_dir)
    cfg = replace(
        SMALL,
        teacher=replace(SMALL.teacher, model="gsm8k-reference"),
        proxy=replace(
            SMALL.proxy, model=str(model_dir), lora=False, lr=1e-3, batch_size=4, iterations=1, max_tokens=6
        ),
        student=replace(SMALL.student, model=str(model_dir), lora=True, lr=1e-3, batch_size=4, alpha=1.0),
        eval=EvalConfig(sets=("gsm8k", "arc", "mmlu"), limit=3, max_new_tokens=6, proxies=False),
        data=replace(SMALL.data, n_prompts=40),
        run=replace(SMALL.run, arms=("sft", "proxykd", "plain_kl")),
    )
    paper = tmp_path / "repo" / "papers" / "proxykd"
    paper.mkdir(parents=True)
    for name in ("published.csv", "claims.yaml"):
        (paper / name).write_text((Path(pipeline.__file__).parent / name).read_text())
    mirror = _mirror_with_mmlu(tmp_path / "mirror", MMLU)
    out = pipeline.reproduce(cfg, data_dir=str(mirror), results_root=tmp_path / "repo")
    rows = list(csv.DictReader((out / "reproduced.csv").read_text().splitlines()))
    got = {(r["method"], r["benchmark"], r["metric"]) for r in rows}
    for method in ("Vanilla black-box KD", "Proxy-KD", "w/o weighted KL (plain KL)"):
        for bench in ("GSM8K", "ARC", "MMLU"):
            assert (method, bench, "accuracy") in got and (method, bench, "accuracy (answered)") in got
    assert ("proxy: NLL + DPO", "D_s (gsm8k)", "top-1 = teacher token") in got
    assert all(0 <= float(r["value"]) <= 100 for r in rows)
