"""The real-data static eval with a tiny random HF model: the three roles on our HF loop, and on vLLM
engines (one per distinct role model, as the paper scale serves them), give the same greedy predictions."""

from dataclasses import replace

import pytest

from common.generation import resolve_backend
from papers.umi.pipeline import real_eval


@pytest.fixture
def tiny_dir(tiny_lm, toy_tokenizer, tmp_path):
    folder = tmp_path / "tiny"
    tiny_lm.save_pretrained(folder)
    toy_tokenizer.save_pretrained(folder)
    return folder


def _cfg(tiny_cfg, folder, backend: str, train: bool):
    real = replace(
        tiny_cfg.real,
        enabled=True,
        model=str(folder),
        limit=3,
        max_input_tokens=96,
        max_new_tokens=6,
        backend=backend,
        train=train,
        train_steps=2,
        train_batch=2,
    )
    return replace(tiny_cfg, toy=False, real=real)


def test_auto_backend_is_the_hf_loop_on_the_cpu():
    assert resolve_backend("auto") == "hf"  # no CUDA here: the measured rule (RESULTS.md)
    with pytest.raises(ValueError, match="valid: auto, hf, vllm"):
        resolve_backend("tgi")


@pytest.mark.vllm
@pytest.mark.parametrize("train", [False, True], ids=["zero-shot", "glpft"])
def test_vllm_role_engines_predict_what_the_hf_loop_predicts(tiny_cfg, tiny_dir, runs, train):
    got = {}
    for backend in ("hf", "vllm"):
        out = real_eval(_cfg(tiny_cfg, tiny_dir, backend, train), None, runs / backend, force=False)
        got[backend] = out
    assert got["hf"]["static"]["n steps"] >= 3  # the stratified subsample rounds up per stratum
    assert got["vllm"]["examples"] == got["hf"]["examples"]
    assert got["vllm"]["static"] == got["hf"]["static"]
    saved = sorted(p.name for p in (runs / "vllm").rglob("vllm-*") if p.is_dir())
    assert saved == (["vllm-0", "vllm-1", "vllm-2"] if train else [])  # three trained roles, three engines
