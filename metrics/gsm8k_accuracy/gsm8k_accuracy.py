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

from common.metric_inputs import CheckedColumns
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gsm8kAccuracy(CheckedColumns, evaluate.Metric):
    metric_name = NAME
    column_kinds = {"predictions": "str", "references": "str"}

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        n = len(predictions)
        strict = sum(gsm8k_is_correct(p, r, mode="strict") for p, r in zip(predictions, references))
        flexible = sum(gsm8k_is_correct(p, r, mode="flexible") for p, r in zip(predictions, references))
        return {
            "strict_accuracy": strict / n if n else 0.0,
            "flexible_accuracy": flexible / n if n else 0.0,
            "n": n,
        }
