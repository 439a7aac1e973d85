"""metrics/processbench_f1: loads by path offline and equals papers.ipvrm.processbench on the real rows.

Real data: the ProcessBench mirror ../shared/data/ipvrm/processbench/ (Qwen/ProcessBench, 3,400 samples; its
SOURCE.md is ../shared/data/ipvrm/SOURCE.md); spec vectors: shared/papers/ipvrm.md invariant 13.
"""

from __future__ import annotations

import os
import random
from functools import cache
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
evaluate = pytest.importorskip("evaluate")

from common.data import shared_mirror  # noqa: E402
from papers.ipvrm.processbench import (  # noqa: E402
    SPLITS,
    evaluate_subsets,
    predict_first_error,
    processbench_f1,
    read_processbench,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = shared_mirror()
needs_data = pytest.mark.skipif(
    DATA is None or not (DATA / "ipvrm" / "processbench").is_dir(),
    reason="../shared/data/ipvrm/processbench (the ProcessBench mirror) is not beside the checkout",
)


@cache
def metric():
    return evaluate.load(str(ROOT / "metrics" / "processbench_f1" / "processbench_f1.py"))


@cache
def rows() -> dict[str, list[dict]]:
    return {split: read_processbench(split, DATA) for split in SPLITS}


def noisy_prediction(row: dict, rng: random.Random) -> int:
    """The label, -1, a random step, or one step late: a mix of right and wrong answers."""
    roll = rng.random()
    if roll < 0.45:
        return row["label"]
    if roll < 0.65:
        return -1
    if roll < 0.85:
        return rng.randrange(len(row["steps"]))
    return min(row["label"] + 1, len(row["steps"]) - 1)


def step_scores_for(prediction: int, n_steps: int) -> list[float]:
    """Scores whose first step below 0.5 is `prediction` (none when it is -1)."""
    return [0.0 if k == prediction else 1.0 for k in range(n_steps)]


@needs_data
def test_equals_the_plain_function_on_the_real_subsets():
    subsets = rows()
    counts = {s: (len(r), sum(x["label"] == -1 for x in r)) for s, r in subsets.items()}
    assert counts["gsm8k"] == (400, 193)  # spec "Evaluation": 400 samples, 193 correct
    rng = random.Random(0)
    preds = {s: [noisy_prediction(row, rng) for row in r] for s, r in subsets.items()}
    flat_preds = [p for s in SPLITS for p in preds[s]]
    flat_labels = [row["label"] for s in SPLITS for row in subsets[s]]
    names = [s for s in SPLITS for _ in subsets[s]]
    got = metric().compute(predictions=flat_preds, references=flat_labels, subsets=names)
    assert {k: got[k] for k in ("acc_erroneous", "acc_correct", "f1")} == processbench_f1(
        flat_preds, flat_labels
    )
    assert got["n"] == 3400
    for split in SPLITS:
        want = processbench_f1(preds[split], [row["label"] for row in subsets[split]])
        assert got["subsets"][split] == {**want, "n": len(subsets[split])}
        assert 10 < got["subsets"][split]["f1"] < 90
    # the same predictions as thresholded step scores, through the project's protocol code
    scored = {
        s: (
            [step_scores_for(p, len(row["steps"])) for p, row in zip(preds[s], subsets[s])],
            [row["label"] for row in subsets[s]],
        )
        for s in SPLITS
    }
    assert [predict_first_error(x, 0.5) for x in scored["math"][0]] == preds["math"]
    protocol = evaluate_subsets(scored, protocol="calibrated", thresholds=[0.5])
    assert got["average"] == pytest.approx(protocol["average"]["f1"], abs=1e-12)
    assert got["subsets"]["math"]["f1"] == protocol["math"]["f1"]


@needs_data
def test_spec_invariant_13_on_the_real_gsm8k_subset():
    labels = [row["label"] for row in rows()["gsm8k"]]
    never = metric().compute(predictions=[-1] * len(labels), references=labels)
    assert (never["acc_correct"], never["acc_erroneous"], never["f1"]) == (100.0, 0.0, 0.0)
    perfect = metric().compute(predictions=labels, references=labels)
    assert perfect["f1"] == 100.0
    rng = random.Random(1)
    for _ in range(20):
        preds = [noisy_prediction(row, rng) for row in rows()["gsm8k"]]
        got = metric().compute(predictions=preds, references=labels)
        assert got["f1"] <= min(100.0, 2 * min(got["acc_erroneous"], got["acc_correct"])) + 1e-9


def test_a_small_vector_by_hand():
    got = metric().compute(predictions=np.array([2, -1, -1, 1]), references=[2, -1, 0, 0])  # arrays too
    assert got == {
        "acc_erroneous": pytest.approx(100 / 3),
        "acc_correct": 100.0,
        "f1": pytest.approx(50.0),
        "n": 4,
    }


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"predictions": [1], "references": [1, -1]},
            "columns of unequal length: predictions=1, references=2",
        ),
        ({"predictions": [1, "x"], "references": [1, -1]}, r"predictions\[1\] is str 'x', expected int"),
        ({"predictions": [1, -1], "references": [1.0, -1]}, r"references\[0\] is float 1.0, expected int"),
        ({"predictions": [1, -1], "references": [True, -1]}, r"references\[0\] is bool True, expected int"),
        (
            {"predictions": [1, -3], "references": [1, -1]},
            r"predictions\[1\] is -3, expected -1 or a step index >= 0",
        ),
        ({"predictions": [1, -1], "references": [1, 0]}, r"labels need both correct \(-1\) and erroneous"),
        (
            {"predictions": [1, -1], "references": [1, -1], "subsets": ["a"]},
            "columns of unequal length: predictions=2, references=2, subsets=1",
        ),
        (
            {"predictions": [1, -1], "references": [1, -1], "subsets": ["a", "b"]},
            r"subset 'a': labels need both correct \(-1\) and erroneous",
        ),
    ],
)
def test_bad_input_is_one_clear_line(inputs, message):
    with pytest.raises(ValueError, match=rf"^processbench_f1: {message}") as info:
        metric().compute(**inputs)
    assert "\n" not in str(info.value)
