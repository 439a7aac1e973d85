"""The arithmetic-world task (opt-in toy): the toy teacher answers by sampling, text only; the proxy and
student are HF models. Here the three base models are tiny random ones (no base-model training)."""

import csv
from dataclasses import replace
from pathlib import Path

from common.models import build_tiny_causal_lm
from papers.proxykd import pipeline
from papers.proxykd.config import ARITH, TOY

SHRINK = (
    "data.n_prompts=40",
    "split.n_warmup=4",
    "split.n_proxy=18",
    "split.n_student=18",
    "eval.n_test=6",
    "teacher.max_tokens=8",
    "proxy.max_tokens=8",
    "proxy.batch_size=6",
    "proxy.warmup_epochs=1",
    "proxy.nll_epochs=1",
    "proxy.iterations=1",
    "student.batch_size=6",
    "student.epochs=1",
)


def test_the_arith_task_runs_every_arm_through_the_hf_path(toy_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    dirs = {}
    for i, size in enumerate(("teacher", "mid", "student")):
        dirs[size] = tmp_path / size / "model"
        build_tiny_causal_lm(
            "tiny-student", len(toy_tokenizer), seed=i, tokenizer=toy_tokenizer
        ).save_pretrained(dirs[size])
        toy_tokenizer.save_pretrained(dirs[size])
    monkeypatch.setattr("common.synthetic.base_models.get_base_model", lambda size: dirs[size])
    monkeypatch.setattr(pipeline, "ARITH", ARITH + SHRINK)
    paper = tmp_path / "repo" / "papers" / "proxykd"
    paper.mkdir(parents=True)
    for name in ("published.csv", "claims.yaml"):
        (paper / name).write_text((Path(pipeline.__file__).parent / name).read_text())
    cfg = replace(TOY, data=replace(TOY.data, sources=("arith",)), seeds=(0,))
    out = pipeline.reproduce(cfg, results_root=tmp_path / "repo")
    rows = list(csv.DictReader((out / "reproduced.csv").read_text().splitlines()))
    arms = {r["method"] for r in rows if r["benchmark"] == "toy-arith" and r["metric"] == "accuracy"}
    assert {"Proxy-KD", "White-box KD (true teacher)", "Student before distillation"} <= arms
    assert len(arms) == 9 + 3  # the arms of config.ARITH and the three proxies
    assert (out / "proxy_alignment_arith.png").exists()
