"""A miniature run of the Q-RM toy pipeline: every stage, a valid reproduced.csv matching claims.yaml."""

import csv
from dataclasses import replace

import pytest

from common.models import build_tiny_causal_lm
from common.results import evaluate_claims, load_claims
from common.synthetic.tokenizer import world_tokenizer
from papers.qrm import pipeline
from papers.qrm.config import EvalConfig, get_config


@pytest.fixture
def mini(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    tok = world_tokenizer()
    policy = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    policy.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    toy = get_config("toy")
    cfg = replace(
        toy,
        policy=str(tmp_path / "policy"),
        rm=replace(toy.rm, backbone=str(tmp_path / "policy"), max_steps=3, batch_size=4),
        reinforce=replace(toy.reinforce, chunks=2, chunk_size=4, minibatch_size=2, max_tokens=8),
        ppo=replace(toy.ppo, chunks=2, chunk_size=4, minibatch_size=2, max_tokens=8),
        eval=EvalConfig(max_tokens=8, eval_every=1, sampled_n=2),
        seeds=(0,),
        gru_seeds=(0,),
        gru_iterations=30,
        gru_rm_steps=5,
        train_problems=40,
        val_problems=6,
        test_problems=6,
    )
    return cfg, tmp_path


def test_miniature_pipeline_writes_rows_matching_the_claims(mini):
    cfg, root = mini
    (root / "papers" / "qrm").mkdir(parents=True)
    for name in ("claims.yaml", "published.csv"):
        (root / "papers" / "qrm" / name).write_text((pipeline.ROOT / "papers" / "qrm" / name).read_text())
    out = pipeline.reproduce("toy", cfg=cfg, root=root)
    with open(out / "reproduced.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for claim in load_claims("qrm", root):
        block = claim["toy"]
        if "unavailable" in block:
            continue
        for method in (block["method"], block["baseline"]):
            hits = [
                r
                for r in rows
                if r["method"] == method and all(r[k] == v for k, v in block["filter"].items())
            ]
            assert len(hits) == 1 and 0 <= float(hits[0]["value"]) <= 1, (claim["id"], method)
    results = {c.id: c for c in evaluate_claims("qrm", "toy", root)}
    assert results["reinforce_qrm_beats_orm"].reproduced_delta is not None
    assert (out / "curves_reinforce.png").exists() and (out / "curves_ppo.png").exists()
    assert (out / "gru_check.png").exists() and (out / "provenance.json").exists()
    assert results["reinforce_qrm_beats_dpo_rm"].reproduced_delta is not None
    methods = {r["method"] for r in rows if r["metric"] == "pass@1 (sampled, T=1)"}
    assert {"SFT", "REINFORCE+oracle", "REINFORCE+DPO-RM"} <= methods
    rms = {r["method"] for r in rows if r["metric"] == "pairwise accuracy" and r["setting"] != "gru check"}
    assert rms == {"Q-RM", "ORM", "DPO-RM"}
    # rerun: every stage is cached, same rows
    again = pipeline.reproduce("toy", cfg=cfg, root=root)
    with open(again / "reproduced.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows


def test_unknown_method_fails_with_one_line(mini):
    cfg, root = mini
    with pytest.raises(ValueError, match="unknown method"):
        pipeline.reproduce("toy", cfg=replace(cfg, methods=("REINFORCE+PRM",), gru_check=False), root=root)


def test_small_and_paper_scales_run_the_scaled_driver(monkeypatch, tmp_path):
    from papers.qrm import scaled

    assert get_config("paper").policy == "meta-llama/Llama-3.2-3B-Instruct"
    seen = []

    def fake(cfg, force, data_dir, root=None):
        seen.append((cfg.scale, force, data_dir))
        if cfg.scale == "paper":
            raise ValueError("qrm: no pairs were built\nsecond line")
        return tmp_path

    monkeypatch.setattr(scaled, "reproduce_scaled", fake)
    assert pipeline.reproduce("small", force=True, data_dir="d") == tmp_path
    with pytest.raises(SystemExit, match=r"^qrm --scale paper: qrm: no pairs were built$"):
        pipeline.reproduce("paper")
    assert seen == [("small", True, "d"), ("paper", False, None)]
    with pytest.raises(ValueError, match="unknown scale"):
        get_config("huge")
