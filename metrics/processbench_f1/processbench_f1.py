"""ProcessBench F1 (earliest-error identification), as an `evaluate` module (a thin wrapper).

One implementation: the numbers are `papers.ipvrm.processbench.processbench_f1` (ProcessBench run_eval.py,
issue #6): over the erroneous samples (label >= 0) acc_erroneous = share whose predicted earliest error
step equals the label, over the correct samples (label == -1) acc_correct = share predicted -1, and F1 =
their harmonic mean (0 when both are 0), all x100 as the papers' tables. It is not a precision/recall F1.

    import evaluate
    metric = evaluate.load("metrics/processbench_f1/processbench_f1.py")   # a local path: works offline
    metric.compute(predictions=[2, -1, -1], references=[2, -1, 0])
    # {'acc_erroneous': 50.0, 'acc_correct': 100.0, 'f1': 66.66..., 'n': 3}

A prediction is the 0-based index of the first erroneous step, -1 for "no error". A scalar-score PRM turns
step scores into one with a threshold: `papers.ipvrm.processbench.predict_first_error` (and
`best_threshold` for the calibrated / oracle protocols). An optional `subsets=[...]` (each sample's
subset, e.g. "gsm8k") adds the per-subset metrics and `average`, the mean F1 over the subsets (the papers'
Avg column); each subset needs both correct and erroneous samples. Needs the repository importable
(`pip install -e .` of the checkout, or run from its root).
"""

import datasets
import evaluate

from common.metric_inputs import CheckedColumns, check_columns
from papers.ipvrm.processbench import processbench_f1

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): the predicted earliest erroneous step (0-based), -1 for none.
    references (list of int): each sample's `label`, the earliest erroneous step or -1 (a correct process).
    subsets (list of str, optional): each sample's subset, for per-subset metrics and their mean F1.
Returns:
    acc_erroneous, acc_correct, f1 (float, x100): over all samples pooled.
    n (int): samples scored.
    subsets (dict, with `subsets`): {subset: {acc_erroneous, acc_correct, f1, n}}.
    average (float, with `subsets`): the mean of the per-subset F1.
"""
_CITATION = """@inproceedings{zheng2025processbench, title={ProcessBench: Identifying Process Errors in
Mathematical Reasoning}, author={Zheng, Chujie and others}, booktitle={ACL}, year={2025}}"""
NAME = "processbench_f1"


def _check_steps(column: str, values) -> None:
    for i, x in enumerate(values):
        if x < -1:
            raise ValueError(f"{NAME}: {column}[{i}] is {x}, expected -1 or a step index >= 0")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ProcessbenchF1(CheckedColumns, evaluate.Metric):
    metric_name = NAME
    column_kinds = {"predictions": "int", "references": "int", "subsets": "str"}

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, subsets=None):
        check_columns(
            NAME, self.column_kinds, predictions=predictions, references=references, subsets=subsets
        )
        _check_steps("predictions", predictions)
        _check_steps("references", references)
        out = {**processbench_f1(predictions, references), "n": len(predictions)}  # its lines name NAME
        if subsets is None:
            return out
        per_subset = {}
        for subset in dict.fromkeys(subsets):
            rows = [(p, y) for p, y, s in zip(predictions, references, subsets) if s == subset]
            try:
                metrics = processbench_f1([p for p, _ in rows], [y for _, y in rows])
            except ValueError as err:
                raise ValueError(f"{NAME}: subset {subset!r}: {str(err).removeprefix(NAME + ': ')}") from None
            per_subset[subset] = {**metrics, "n": len(rows)}
        out["subsets"] = per_subset
        out["average"] = sum(m["f1"] for m in per_subset.values()) / len(per_subset)
        return out
