"""A miniature run of the LCO pipeline: the stability check and every RL arm on the toy world, a valid
reproduced.csv whose rows the claims read, plots, cached reruns; the presets and the one-line errors."""

import csv
import json
from dataclasses import replace

import pytest

from common.claims import evaluate_claims
from common.config import ConfigError, apply_overrides
from common.reproduce import main as reproduce_main
from common.synthetic.rl_gate import GateConfig
from papers.lco import pipeline
from papers.lco.config import METHODS, get_config, regime


@pytest.fixture
def mini(mini_root):
    tmp_path = mini_root
    toy = get_config("toy")
    rl = replace(
        toy.rl,
        policy=str(tmp_path / "policy"),
        chunks=2,
        prompts_per_chunk=2,
        samples_per_prompt=2,
        max_tokens=6,
        val_problems=4,
        test_problems=4,
        warm_chunks=0,
        seeds=(0,),
        eval_every=1,
        sampled_n=2,
    )
    stability = replace(toy.stability, seeds=(0, 1), iterations=10)
    cfg = replace(toy, stability=stability, rl=rl, dense=replace(toy.dense, enabled=False), workers=1)
    return cfg, tmp_path


@pytest.mark.slow
def test_miniature_pipeline_writes_rows_the_claims_read(mini):
    cfg, root = mini
    out = pipeline.reproduce(cfg)
    with open(out / "reproduced.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows if r["benchmark"] == "toy-arith"}
    assert methods == set(METHODS) | {"SFT"}
    assert {r["benchmark"] for r in rows} == {"toy-arith", "toy-gru (lr 0.01)", "toy-gru (lr 0.003)"}
    assert {r["metric"] for r in rows if r["benchmark"] == "toy-arith"} >= {
        "pass@1",
        "pass@1 (lr x3)",
        "pass@1 (val)",
        "sampled pass@1 (val)",
        "sampled pass@1 (val, lr x3)",
    }
    results = {c.id: c for c in evaluate_claims("lco", "toy", root)}
    for cid in ("lco_beats_ppo_aggressive_lr", "lco_more_stable_than_ppo", "lco_beats_importance_sampled_pg"):
        assert results[cid].stats is not None and results[cid].stats.n == 2, cid
    assert results["lco_gradient_norm_shrinks"].stats.n == 4  # LCO-KLD at both lrs x 2 seeds
    for cid in ("grpo_improves_on_sft_arith", "lco_kld_beats_ppo_arith", "lco_kld_draws_down_less_arith"):
        assert results[cid].stats is not None and results[cid].verdict == "inconclusive", cid  # one seed
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["stability_criteria"]) == {
        "1_aggressive_accuracy",
        "2_aggressive_drawdown",
        "3_normal_accuracy",
        "4_beats_pg_is",
        "5_grad_norm_falls",
    }
    assert prov["regime"]["chunks"] == 2 and prov["regime"]["lr"] == GateConfig().lr
    for png in (
        "stability_accuracy.png",
        "stability_grad_norm.png",
        "arith_val_pass1.png",
        "arith_grad_norm.png",
    ):
        assert (out / png).stat().st_size > 1000
    curves = json.loads((out / "rl_curves.json").read_text())["runs"]
    assert all(len(r["curve"]) == 3 and "grad_norm" in r["curve"][-1] for r in curves)
    sft = json.loads((out / "rl_curves.json").read_text())["sft"]
    assert all(r["curve"][0] | sft["eval"] == r["curve"][0] for r in curves)  # chunk 0 is the SFT evaluation
    before = (out / "reproduced.csv").read_text()
    pipeline.reproduce(cfg)  # every stage cached: the same table
    assert (out / "reproduced.csv").read_text() == before
    pipeline.reproduce(cfg, force=True)  # every stage recomputed: same seeds, the same table
    assert (out / "reproduced.csv").read_text() == before


def test_regime_is_read_from_the_gate_at_run_time():
    rl = regime(get_config("toy").rl)
    gate = GateConfig()
    for name in ("chunks", "prompts_per_chunk", "samples_per_prompt", "lr", "warm_chunks", "advantage"):
        assert getattr(rl, name) == getattr(gate, name)
    assert rl.policy == gate.policy


def test_presets_and_bad_config_stop_with_one_line(capsys):
    assert get_config("small").rl.policy == "Qwen/Qwen2.5-0.5B-Instruct"
    assert get_config("paper").deepspeed_config == "papers/lco/configs/zero3.yaml"
    for sets, message in (
        (["rl.methods=[LCO-XYZ]"], "unknown method 'LCO-XYZ'"),
        (["loss.beta=0"], "beta must be > 0"),
        (["loss.anchor=new"], "unknown anchor"),
        (["rl.task=svamp"], "unknown task"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            apply_overrides(get_config("toy"), sets)
        assert "\n" not in str(err.value)
    assert reproduce_main(["lco", "--set", "loss.beta=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lco: beta must be > 0") and "\n" not in err
