"""Fixtures of the Proxy-KD tests: a seconds-long toy config and stage root under a temporary REPRO_RUNS."""

from dataclasses import replace

import pytest

from papers.proxykd.config import TOY


@pytest.fixture
def tiny_cfg():
    """The toy preset shrunk to seconds: 60 / 120 / 60 sequences of 8 tokens over 12 symbols, one seed,
    one preference iteration, a few epochs."""
    return replace(
        TOY,
        split=replace(TOY.split, n_warmup=60, n_proxy=120, n_student=60),
        proxy=replace(TOY.proxy, batch_size=30, warmup_epochs=2, nll_epochs=1, iterations=1),
        student=replace(TOY.student, batch_size=30, epochs=2, top_k=5),
        eval=replace(TOY.eval, n_test=50),
        data=replace(TOY.data, vocab=12, length=8),
        seeds=(0,),
    )


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"
