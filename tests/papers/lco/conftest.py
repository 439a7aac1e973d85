"""A miniature LCO workspace: a temporary runs dir and paper folder (claims.yaml, published.csv) and an
untrained tiny policy saved at `<root>/policy`."""

import shutil

import pytest

import common.results
from common.models import build_tiny_causal_lm
from common.synthetic.tokenizer import world_tokenizer


@pytest.fixture
def mini_root(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    (tmp_path / "papers" / "lco").mkdir(parents=True)
    for name in ("claims.yaml", "published.csv"):
        shutil.copy(common.results.ROOT / "papers" / "lco" / name, tmp_path / "papers" / "lco" / name)
    monkeypatch.setattr(common.results, "ROOT", tmp_path)
    tok = world_tokenizer()
    policy = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    policy.save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    return tmp_path
