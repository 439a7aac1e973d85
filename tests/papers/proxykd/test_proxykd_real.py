"""The real-model path end to end on a tiny random HF model: GSM8K train questions with their reference
solutions as the text-only teacher, HF proxy and student (one code path with the toy), greedy accuracy
on the mirrored test sets with the code's graders (proxy fully fine-tuned, student with LoRA)."""

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from common.data import shared_mirror
from common.models import build_tiny_causal_lm
from papers.proxykd import pipeline
from papers.proxykd.config import SMALL, EvalConfig
from papers.proxykd.data import TEACHER_SUFFIX, reference_asker

DATA = shared_mirror()  # ../shared/data beside the checkout, or None
pytestmark = pytest.mark.skipif(
    DATA is None or not (DATA / "proxykd").is_dir(), reason="../shared/data is not beside the checkout"
)


def test_reference_teacher_strips_calculator_marks():
    row = {"question": "Q?", "answer": "72", "rationale": "48/2 = <<48/2=24>>24.\nSo 72."}
    ((text, error),) = reference_asker([row])([row["question"] + TEACHER_SUFFIX], [0])
    assert error is None and text == "48/2 = 24.\nSo 72.\nTherefore, the answer is 72."


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
        eval=EvalConfig(sets=("gsm8k", "arc"), limit=3, max_new_tokens=6, proxies=False),
        data=replace(SMALL.data, n_prompts=40),
        run=replace(SMALL.run, arms=("sft", "proxykd", "plain_kl")),
    )
    paper = tmp_path / "repo" / "papers" / "proxykd"
    paper.mkdir(parents=True)
    for name in ("published.csv", "claims.yaml"):
        (paper / name).write_text((Path(pipeline.__file__).parent / name).read_text())
    out = pipeline.reproduce(cfg, data_dir=str(DATA), results_root=tmp_path / "repo")
    rows = list(csv.DictReader((out / "reproduced.csv").read_text().splitlines()))
    got = {(r["method"], r["benchmark"], r["metric"]) for r in rows}
    for method in ("Vanilla black-box KD", "Proxy-KD", "w/o weighted KL (plain KL)"):
        for bench in ("GSM8K", "ARC"):
            assert (method, bench, "accuracy") in got and (method, bench, "accuracy (answered)") in got
    assert ("proxy: NLL + DPO", "D_s (gsm8k)", "top-1 = teacher token") in got
    assert all(0 <= float(r["value"]) <= 100 for r in rows)
