"""A miniature run of the IPVRM toy pipeline (SFT, both RMs with Part A, every RL arm), a valid
reproduced.csv whose rows the claims read, plots, cached reruns; the preset and the one-line errors."""

import csv
import json
import shutil
from dataclasses import replace

import pytest

import common.results
from common.config import ConfigError, apply_overrides
from common.reproduce import main as reproduce_main
from common.results import evaluate_claims
from papers.ipvrm import pipeline
from papers.ipvrm.config import RL_METHODS, get_config


@pytest.fixture
def mini(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    (tmp_path / "papers" / "ipvrm").mkdir(parents=True)
    for name in ("claims.yaml", "published.csv"):
        shutil.copy(common.results.ROOT / "papers" / "ipvrm" / name, tmp_path / "papers" / "ipvrm" / name)
    monkeypatch.setattr(common.results, "ROOT", tmp_path)
    toy = get_config("toy")
    cfg = replace(
        toy,
        sft=replace(toy.sft, steps=20, batch=16, val_prompts=8),
        rm=replace(toy.rm, seeds=(0, 1), steps=3, batch=8, train_rows=64, eval_rows=40, val_rows=40),
        rl=replace(
            toy.rl,
            seeds=(0, 1),
            chunks=2,
            prompts_per_chunk=4,
            samples_per_prompt=2,
            train_prompts=32,
            eval_prompts=8,
            mixed_only=False,
        ),
        processbench=replace(toy.processbench, enabled=False),  # tests/papers/ipvrm/test_processbench_lm.py
        workers=1,
    )
    return cfg, tmp_path


@pytest.mark.slow
def test_miniature_pipeline_writes_rows_the_claims_read(mini, monkeypatch):
    cfg, root = mini
    monkeypatch.setattr("papers.ipvrm.stages.TEST_PROMPTS_N", 8)
    out = pipeline.reproduce(cfg)
    with open(out / "reproduced.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows if r["benchmark"] == "toy-arith"} == set(RL_METHODS) | {"SFT"}
    assert {r["method"] for r in rows if r["benchmark"] == "toy-processbench"} == {"IPVRM", "Implicit PRM"}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["cpu_s"] > 0 and set(prov["part_b"]) >= {"passed", "rm_score_deltas", "calibration"}
    assert (out / "rl_rm_score.png").exists() and (out / "rl_verifier_accuracy.png").exists()
    results = {c.id: c for c in evaluate_claims("ipvrm", "toy", root)}
    for cid in ("ipvrm_processbench_beats_implicit_prm", "distrl_raises_rm_score", "grpo_vr_beats_sft"):
        assert results[cid].stats is not None and results[cid].stats.n == 2, cid
    before = (out / "reproduced.csv").read_text()
    runs = sorted(p.name for p in (root / "runs" / "ipvrm" / "toy").iterdir())
    pipeline.reproduce(cfg)  # every stage cached: same rows, no new stage folders
    assert (out / "reproduced.csv").read_text() == before
    assert sorted(p.name for p in (root / "runs" / "ipvrm" / "toy").iterdir()) == runs


def test_preset_and_bad_config_stop_with_one_line(capsys):
    assert get_config("toy").rl.seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="only the toy preset"):
        get_config("small")
    for sets, message in (
        (["rl.methods=[PPO]"], "unknown rl.methods entry 'PPO'"),
        (["rm.kinds=[Q-RM]"], "unknown rm.kinds entry"),
        (["sft.lr=0"], "sft.lr must be > 0"),
        (["rl.samples_per_prompt=1"], "samples_per_prompt must be >= 2"),
        (["rl.rm_seed=7"], "rl.rm_seed 7 is not one of rm.seeds"),
        (["world.step_tokens=fancy"], "step_tokens"),
        (["sft.preset=huge"], "sft.preset 'huge'"),
    ):
        with pytest.raises((ConfigError, ValueError), match=message) as err:
            apply_overrides(get_config("toy"), sets)
        assert "\n" not in str(err.value)
    assert reproduce_main(["ipvrm", "--set", "rm.lr=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ipvrm: rm.lr must be > 0") and "\n" not in err
