"""Multiple-choice letter accuracy, as an `evaluate` module (a thin wrapper).

One implementation: the chosen letter is `common.scoring.extract_choice` (the last explicit "answer is X"
statement; else a reply opening with a delimited letter; else a single parenthesised letter; None when the
reply names none or several). An item is correct when that letter equals the gold letter; a reply with
no letter is wrong and is also counted in `no_choice_rate`.

    import evaluate
    metric = evaluate.load("metrics/mcq_accuracy/mcq_accuracy.py")   # a local path: works offline
    metric.compute(predictions=["The answer is (B)."], references=["B"], choices="ABCD")
    # {'accuracy': 1.0, 'no_choice_rate': 0.0, 'n': 1}

Needs the repository importable (`pip install -e .` of the checkout, or run from its root).
"""

import datasets
import evaluate

from common.metric_inputs import CheckedColumns
from common.scoring import extract_choice

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs.
    references (list of str): gold option letters, upper case ("A", "B", ...).
    choices (str, optional): the option letters the prompt offered, default "ABCDE".
Returns:
    accuracy (float): share of predictions whose extracted letter equals the gold letter.
    no_choice_rate (float): share of predictions from which no single letter could be extracted.
    n (int): items graded.
"""
_CITATION = ""
NAME = "mcq_accuracy"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class McqAccuracy(CheckedColumns, evaluate.Metric):
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

    def _compute(self, predictions, references, choices="ABCDE"):
        if not isinstance(choices, str) or not choices:
            raise ValueError(f"{NAME}: choices should be a non-empty string of letters, got {choices!r}")
        for i, ref in enumerate(references):
            if ref not in choices:
                raise ValueError(f"{NAME}: references[{i}] is {ref!r}, not one of the choices {choices!r}")
        chosen = [extract_choice(p, choices) for p in predictions]
        n = len(predictions)
        correct = sum(c == r for c, r in zip(chosen, references))
        return {
            "accuracy": correct / n if n else 0.0,
            "no_choice_rate": sum(c is None for c in chosen) / n if n else 0.0,
            "n": n,
        }
