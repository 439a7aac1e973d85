"""Fixtures of the alpha-UMi tests: the mirrored ToolBench files and a seconds-long toy config."""

import json
from dataclasses import replace

import pytest

from common.data import shared_mirror
from papers.umi.config import TOY


def toolbench():
    mirror = shared_mirror()
    if mirror is None or not (mirror / "umi" / "toolbench").is_dir():
        pytest.skip("../shared/data/umi not present")
    return mirror / "umi" / "toolbench"


@pytest.fixture
def tb():
    return toolbench()


@pytest.fixture
def shipped(tb):
    """{name: parsed JSON} of the shipped example files."""
    ex = tb / "train-example"
    files = {"stage1": ex / "raw_data/raw_data_stage_1.json", "stage2": ex / "raw_data/raw_data_stage_2.json"}
    files |= {r: ex / f"train_{r}.json" for r in ("backbone", "planner", "caller", "summarizer")}
    return {k: json.loads(p.read_text()) for k, p in files.items()}


@pytest.fixture
def tiny_cfg():
    return replace(
        TOY,
        seeds=(0,),
        world=replace(TOY.world, n_train=80, n_test=6, n_live=4),
        train=replace(TOY.train, s1=4, s2=2, batch_size=4),
        eval=replace(TOY.eval, max_new_tokens=24),
        real=replace(TOY.real, enabled=False),
    )


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"
