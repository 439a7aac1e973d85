"""A miniature run of the IPVRM toy pipeline (SFT, both RMs with Part A, every RL arm), a valid
reproduced.csv whose rows the claims read, plots, cached reruns; the preset and the one-line errors."""

import csv
import json
import shutil
from dataclasses import replace

import pytest

import common.results
from common.claims import evaluate_claims
from common.config import ConfigError, apply_overrides
from common.reproduce import main as reproduce_main
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
        bon=replace(toy.bon, problems=6, samples=16, ns=(4, 16)),
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
    policy = [r for r in rows if r["benchmark"] == "toy-arith" and not r["metric"].startswith("BoN")]
    assert {r["method"] for r in policy} == set(RL_METHODS) | {"SFT"}
    rms = {"IPVRM", "Implicit PRM", "DPO-RM"}
    assert {r["method"] for r in rows if r["benchmark"] == "toy-processbench"} == rms
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["cpu_s"] > 0 and set(prov["part_b"]) >= {"passed", "rm_score_deltas", "calibration"}
    assert (out / "rl_rm_score.png").exists() and (out / "rl_verifier_accuracy.png").exists()
    results = {c.id: c for c in evaluate_claims("ipvrm", "toy", root)}
    for cid in (
        "ipvrm_processbench_beats_implicit_prm",
        "ipvrm_processbench_beats_dpo_rm",
        "distrl_raises_rm_score",
        "grpo_vr_beats_sft",
        "ipvrm_bon_beats_implicit_prm",
        "bon16_dpo_rm_beats_random",
    ):
        assert results[cid].stats is not None and results[cid].stats.n == 2, cid
    bon = [r for r in rows if r["metric"].startswith("BoN")]
    methods = rms | {"Random pick (Pass@1)", "Oracle pick (pass@N)"}
    assert {r["method"] for r in bon} == methods
    assert {r["metric"] for r in bon} == {"BoN@4 acc", "BoN@16 acc", "BoN avg acc"}
    value = {(r["method"], r["setting"], r["metric"]): float(r["value"]) for r in bon}
    for (method, setting, metric), v in value.items():  # the oracle bounds every pick
        assert v <= value[("Oracle pick (pass@N)", setting, metric)] + 1e-9, (method, setting, metric)
    assert set(prov["bon"]["calibration"]) >= {"N", "IPVRM", "above_random_in_every_seed"}
    assert prov["bon"]["calibration"]["grader_agreement"] == 1.0  # math-verify agrees with the verifier
    before = (out / "reproduced.csv").read_text()
    work = root / "runs" / "ipvrm" / "toy"
    runs = sorted(p.name for p in work.iterdir())
    pipeline.reproduce(cfg)  # every stage cached: same rows, no new stage folders
    assert (out / "reproduced.csv").read_text() == before
    assert sorted(p.name for p in work.iterdir()) == runs
    # a killed Best-of-N stage (result not written) is recomputed to the same rows on the next run
    (killed,) = [p for p in work.iterdir() if p.name.startswith("bon-IPVRM-s1-")]
    (killed / "result.json").unlink()
    pipeline.reproduce(cfg)
    assert (killed / "result.json").exists() and (out / "reproduced.csv").read_text() == before


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
        (["bon.ns=[4, 128]"], "bon.ns has N = 128, more than the bon.samples = 64 candidates"),
        (["bon.ns=[]"], "bon.ns must be a non-empty list"),
    ):
        with pytest.raises((ConfigError, ValueError), match=message) as err:
            apply_overrides(get_config("toy"), sets)
        assert "\n" not in str(err.value)
    assert reproduce_main(["ipvrm", "--set", "rm.lr=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ipvrm: rm.lr must be > 0") and "\n" not in err
