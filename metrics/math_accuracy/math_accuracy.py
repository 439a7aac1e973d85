"""MATH answer accuracy through math-verify, as an `evaluate` module (a thin wrapper).

One implementation: every item is graded by `common.scoring.math_is_correct` (math-verify parses both
sides and calls `verify(gold, pred)`; when either side cannot be parsed, the normalised last `\\boxed{}`
answer is compared with the normalised gold). Any thread keeps math-verify's time limits: off the main
thread each item goes to one worker process (see `common.scoring`), so the main thread is faster.

    import evaluate
    metric = evaluate.load("metrics/math_accuracy/math_accuracy.py")   # a local path: works offline
    metric.compute(predictions=["so \\boxed{\\frac{1}{2}}"], references=["\\frac{1}{2}"])
    # {'accuracy': 1.0, 'n': 1}

Needs the repository importable (`pip install -e .` of the checkout, or run from its root).
"""

import datasets
import evaluate

from common.metric_inputs import CheckedColumns
from common.scoring import math_is_correct

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs (the final answer boxed, or the last expression).
    references (list of str): gold answers as LaTeX strings, e.g. the `answer` field of MATH-500.
Returns:
    accuracy (float): share of predictions math-verify finds equal to the gold answer.
    n (int): items graded.
"""
_CITATION = """@article{hendrycks2021math, title={Measuring Mathematical Problem Solving With the MATH Dataset},
author={Hendrycks, Dan and others}, journal={NeurIPS}, year={2021}}"""
NAME = "math_accuracy"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MathAccuracy(CheckedColumns, evaluate.Metric):
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
        correct = sum(math_is_correct(p, r) for p, r in zip(predictions, references))
        return {"accuracy": correct / n if n else 0.0, "n": n}
