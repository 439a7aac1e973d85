"""GSM8K answer accuracy, strict and flexible, as an `evaluate` module (a thin wrapper).

One implementation: every item is graded by `common.scoring.gsm8k_is_correct` (the project's grader).
strict reads the number after the last `####` of the prediction; flexible takes its last number anywhere.
Both are reported, as lm-evaluation-harness does: they disagree on free-form outputs.

    import evaluate
    metric = evaluate.load("metrics/gsm8k_accuracy/gsm8k_accuracy.py")   # a local path: works offline
    metric.compute(predictions=["... #### 18"], references=["... #### 18"])
    # {'strict_accuracy': 1.0, 'flexible_accuracy': 1.0, 'n': 1}

Needs the repository importable (`pip install -e .` of the checkout, or run from its root).
"""

import datasets
import evaluate

from common.scoring import gsm8k_is_correct

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs.
    references (list of str): gold answers, a full GSM8K solution ("... #### 18") or a bare number ("18").
Returns:
    strict_accuracy (float): share of predictions whose `#### <n>` answer equals the gold number.
    flexible_accuracy (float): share whose last number equals the gold number.
    n (int): items graded.
"""
_CITATION = """@article{cobbe2021gsm8k, title={Training Verifiers to Solve Math Word Problems},
author={Cobbe, Karl and others}, journal={arXiv preprint arXiv:2110.14168}, year={2021}}"""
NAME = "gsm8k_accuracy"


def check_columns(name: str, **columns) -> None:
    """One clear line (ValueError) for columns of unequal length or a non-string entry."""
    lengths = {key: len(value) for key, value in columns.items() if value is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{name}: columns of unequal length: " + ", ".join(f"{k}={v}" for k, v in lengths.items())
        )
    for key, value in columns.items():
        for i, x in enumerate(value or []):
            if not isinstance(x, str):
                raise ValueError(f"{name}: {key}[{i}] is {type(x).__name__} {x!r:.40}, expected str")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gsm8kAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references, checked first (one clear line on bad input)."""
        check_columns(NAME, predictions=predictions, references=references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and reference, checked first."""
        check_columns(NAME, predictions=[prediction], references=[reference])
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references):
        n = len(predictions)
        strict = sum(gsm8k_is_correct(p, r, mode="strict") for p, r in zip(predictions, references))
        flexible = sum(gsm8k_is_correct(p, r, mode="flexible") for p, r in zip(predictions, references))
        return {
            "strict_accuracy": strict / n if n else 0.0,
            "flexible_accuracy": flexible / n if n else 0.0,
            "n": n,
        }
