"""The driver on a seconds-long toy: every arm, cached stages, resumable targets, one-line errors."""

import csv
import json
import os
import socket
import time
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from common.claims import evaluate_claims
from common.config import apply_overrides
from common.data import shared_mirror
from papers.proxykd import pipeline
from papers.proxykd.config import PRESETS, TeacherConfig, get_config
from papers.proxykd.data import markov_task
from papers.proxykd.proxy import proxy_stage
from papers.proxykd.stages import ARMS, split_rows, targets_stage, teacher_stage
from papers.proxykd.teacher import endpoint_asker
from tests.common.fake_openai import MODEL_ID, FakeOpenAI


def _copy_paper_files(root):
    """The published table and claims in a scratch repo root, so the results never touch the checkout."""
    src = pipeline.Path(pipeline.__file__).parent
    dst = root / "papers" / "proxykd"
    dst.mkdir(parents=True)
    for name in ("published.csv", "claims.yaml"):
        (dst / name).write_text((src / name).read_text())
    return dst


def test_reproduce_runs_every_arm_and_a_rerun_trains_nothing(tiny_cfg, runs, tmp_path):
    paper = _copy_paper_files(tmp_path / "repo")
    out = pipeline.reproduce(tiny_cfg, results_root=tmp_path / "repo")
    assert out == paper / "results" / "toy"
    rows = list(csv.DictReader((out / "reproduced.csv").read_text().splitlines()))
    methods = {r["method"] for r in rows}
    assert {ARMS[a][0] for a in tiny_cfg.run.arms} <= methods
    assert {"proxy: warm-up SFT", "proxy: NLL only", "proxy: NLL + DPO"} <= methods
    assert all(r["setting"] == "markov seed 0" for r in rows)
    sft = [r for r in rows if r["method"] == "Vanilla black-box KD" and r["metric"] == "KL relative to SFT"]
    assert [float(r["value"]) for r in sft] == [1.0]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["scale"] == "toy" and prov["seeds"] == [0] and "summary" in prov
    assert (out / "proxy_alignment_markov.png").stat().st_size > 0
    verdicts = {c.id: c for c in evaluate_claims("proxykd", "toy", root=tmp_path / "repo")}
    assert verdicts["proxykd_beats_blackbox_kd"].stats.n == 1  # one seed: inconclusive by construction
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.json")}
    assert len(stamps) == len(tiny_cfg.run.arms) == 8
    again = time.perf_counter()
    pipeline.reproduce(tiny_cfg, results_root=tmp_path / "repo")
    assert time.perf_counter() - again < 10
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("metrics.json")} == stamps
    assert list(csv.DictReader((out / "reproduced.csv").read_text().splitlines())) == rows


def test_targets_resume_from_their_chunks_and_the_proxy_moved(tiny_cfg, runs):
    task = markov_task(tiny_cfg, 0)
    rows = teacher_stage(task, tiny_cfg, runs)
    d_w, d_p, d_s = split_rows(rows, tiny_cfg.split, 0)
    proxies = proxy_stage(task, tiny_cfg, d_w, d_p, 0, runs)
    warm, aligned = (load_file(str(proxies[k] / "model.safetensors")) for k in ("warmup", "aligned"))
    assert all(not torch.equal(warm[n], aligned[n]) for n in warm)  # every parameter moved
    assert set(proxies) == {"warmup", "nll", "nll_only", "aligned"}
    enc = [task.encode(r["prompt"], r["answer"]) for r in d_s]
    folder = runs / "targets-test"
    first = targets_stage(task, tiny_cfg, proxies["aligned"], enc, folder)
    assert len(first["top_ids"]) == len(d_s) and first["top_ids"][0].shape == (9, 5)
    (folder / "part-00000.pt").unlink()  # a killed run: the chunk is recomputed, the same
    second = targets_stage(task, tiny_cfg, proxies["aligned"], enc, folder)
    assert all(torch.equal(a, b) for a, b in zip(first["top_logits"], second["top_logits"]))
    assert first["mean_logp"] == second["mean_logp"]


def test_bad_inputs_are_one_line(tiny_cfg, runs, tmp_path, monkeypatch):
    _copy_paper_files(tmp_path / "repo")
    with pytest.raises(
        SystemExit, match=r"^proxykd toy: student.top_k=20 must be in 1\.\.12 \(the vocabulary\)$"
    ):
        pipeline.reproduce(
            replace(tiny_cfg, student=replace(tiny_cfg.student, top_k=20)), results_root=tmp_path
        )
    chain_task = markov_task(tiny_cfg, 0)

    def some_fail(prompts, indices):
        good = chain_task.ask(prompts, indices)
        return [(None, "boom") if i % 3 == 0 else r for i, r in zip(indices, good)]

    monkeypatch.setattr(pipeline, "markov_task", lambda c, seed: replace(chain_task, ask=some_fail))
    monkeypatch.setenv("REPRO_RUNS", str(runs / "fresh"))  # no answers cached by the run above
    cfg = replace(tiny_cfg, teacher=replace(tiny_cfg.teacher, min_answered=0.5))
    with pytest.raises(
        SystemExit, match=r"^proxykd toy: the split asks for 240 answers, the teacher gave 160$"
    ) as err:
        pipeline.reproduce(cfg, results_root=tmp_path)
    assert "\n" not in str(err.value)


def test_a_dead_endpoint_is_one_line_and_an_endpoint_teacher_feeds_the_stages(
    tiny_cfg, runs, monkeypatch, tmp_path
):
    chain_task = markov_task(tiny_cfg, 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    teacher = replace(
        TeacherConfig(), endpoint=dead, model=MODEL_ID, max_retries=0, timeout_s=2, chunk=1000, concurrency=4
    )
    cfg = replace(tiny_cfg, teacher=teacher)
    monkeypatch.setattr(
        pipeline, "markov_task", lambda c, seed: replace(chain_task, ask=endpoint_asker(c.teacher))
    )
    with pytest.raises(SystemExit) as err:
        pipeline.reproduce(cfg, results_root=tmp_path)
    assert str(err.value).startswith(f"proxykd toy: proxykd teacher {MODEL_ID}: 0 of 240 prompts answered")
    # a live server that answers in the chain's text and fails 3 calls: the stages get the rest
    texts = iter(chain_task.ask([""] * 240, range(240)))
    with FakeOpenAI(mode="flaky", fail_first=3, reply=lambda p: next(texts)[0]) as server:
        live = replace(teacher, endpoint=server.url, min_answered=0.95)
        task = replace(chain_task, ask=endpoint_asker(live))
        rows = teacher_stage(task, replace(cfg, teacher=live), runs)
    assert len(rows) == 237 and all(len(r["answer"].split()) == 8 for r in rows)


def test_presets_carry_the_spec_values_and_overrides_are_checked():
    paper = get_config("paper")
    assert (paper.split.warmup, paper.split.proxy, paper.split.student) == (0.10, 0.45, 0.45)
    assert paper.student.top_k == 10 and paper.student.alpha == 100.0 and paper.proxy.iterations == 16
    assert paper.proxy.lr == paper.student.lr == 1e-5 and paper.student.epochs == 1.0
    toy = get_config("toy")
    assert (toy.split.n_warmup, toy.split.n_proxy, toy.split.n_student) == (500, 2000, 500)
    assert toy.proxy.beta == 0.1 and toy.proxy.iterations == 2 and toy.seeds == (0, 1, 2)
    assert toy.run.torch_threads == 1
    assert set(PRESETS) == {"toy", "small", "paper"}
    assert apply_overrides(toy, ["student.weight_scale=0.4"]).student.weight_scale == 0.4
    with pytest.raises(ValueError, match="unknown scale"):
        get_config("huge")


@pytest.mark.skipif(
    os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs the hub offline (HF_HUB_OFFLINE=1)"
)
def test_the_small_preset_offline_stops_with_one_line_naming_the_model(runs):
    data = shared_mirror()
    if data is None:
        pytest.skip("../shared/data is not beside the checkout")
    small = get_config("small")
    # the data is read first: ../shared/data has no MMLU, so the run stops on that file before any model
    with pytest.raises(
        SystemExit, match=r"^proxykd small: .*mmlu/test.jsonl: file not found .*eval set 'mmlu'"
    ):
        pipeline.reproduce(small, data_dir=str(data))
    five = replace(small, eval=replace(small.eval, sets=small.eval.sets[:-1]))
    with pytest.raises(
        SystemExit, match=r"^proxykd small: tokenizer 'Qwen/Qwen2.5-0.5B-Instruct' could not be loaded"
    ):
        pipeline.reproduce(five, data_dir=str(data))
