"""ProcessBench scored by a real LM pair (SmolLM2-135M-Instruct, the real mirror): step boundaries in the
official input format, the per-token reward, both protocols, and the stage's floor when RM = reference."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from common.models import load_causal_lm, load_tokenizer
from papers.ipvrm.config import RealProcessBenchConfig
from papers.ipvrm.processbench import SPLITS
from papers.ipvrm.processbench_lm import encode_sample, processbench_stage, sample_rows, score_rows

SMOL = "smollm2-135m-instruct"
DATA = Path(__file__).resolve().parents[4] / "shared" / "data"  # the real mirror beside the checkout


@pytest.fixture(scope="module")
def smol():
    return load_tokenizer(SMOL), load_causal_lm(SMOL, dtype=torch.float32, device="cpu").eval()


def test_each_step_ends_on_its_last_token_and_the_response_starts_at_step_1(smol):
    tok, _ = smol
    row = sample_rows("gsm8k", 1, 0, DATA)[0]
    ids, start, ends = encode_sample(tok, row["question"], row["steps"])
    assert tok.decode(ids[start : start + 6]).startswith("Step 1:")
    assert len(ends) == len(row["steps"]) and ends == sorted(set(ends)) and ends[-1] < len(ids)
    for i, (end, step) in enumerate(zip(ends, row["steps"]), start=1):
        text = tok.decode(ids[start : end + 1])
        assert text.rstrip().endswith(step.strip()[-3:]), (i, text[-40:])
        assert f"Step {i + 1}:" not in text  # nothing of the next step


@pytest.mark.slow
def test_scores_telescope_and_an_identical_reference_gives_zero(smol):
    tok, model = smol
    rows = sample_rows("math", 2, 1, DATA)
    same = score_rows(model, model, tok, rows, coef=1.0)
    assert all(s == 0.0 for scores in same["process"] for s in scores)
    other = load_causal_lm(SMOL, dtype=torch.float32, device="cpu").eval()
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.mul_(0.5)  # a different reference
    scored = score_rows(model, other, tok, rows, coef=1.0)
    for process, prefix, row in zip(scored["process"], scored["prefix"], rows):
        assert len(process) == len(row["steps"]) and any(abs(s) > 0 for s in process)
        assert sum(process) == pytest.approx(prefix[-1], abs=1e-9)  # invariant 6: telescoping


@pytest.mark.slow
def test_stage_samples_every_subset_and_rm_equal_to_ref_is_a_floor(tmp_path):
    real = replace(RealProcessBenchConfig(), per_subset=2, seed=3)
    out = processbench_stage(real, tmp_path, False, str(DATA))
    assert out["n"] == {s: 2 for s in SPLITS}
    for protocol in ("process", "prefix"):
        for threshold in ("calibrated", "oracle"):
            assert out[protocol][threshold]["average"]["f1"] == 0.0  # no signal: F1 0, as the README says
    assert processbench_stage(real, tmp_path, False, str(DATA)) == out  # cached
