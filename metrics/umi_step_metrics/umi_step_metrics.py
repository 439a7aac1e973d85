"""alpha-UMi's static step metrics (Plan ACC, Act. EM, Arg. F1, Hallu., ROUGE-L), as an `evaluate` module.

A thin wrapper: the numbers are `papers.umi.metrics.static_metrics` (the official evaluate-multi_agent.py
rules; x100, as the paper's Table 1), computed over steps {reference, prediction, tool_names}. Each step's
reference is the official reference string ("assistant: <planner></s>caller: <caller></s>", "...conclusion:
<answer></s>", or the give-up planner text); `tool_names` lists the step's tools (a predicted call of any
other action counts as a hallucination).

    import evaluate
    metric = evaluate.load("metrics/umi_step_metrics/umi_step_metrics.py")   # a local path: works offline
    metric.compute(predictions=preds, references=refs, tool_names=[["search_for_x", "Finish"], ...])
    # {'Plan ACC': ..., 'Act. EM': ..., 'Arg. F1': ..., 'Hallu.': ..., 'Rouge-L': ..., 'easy F1': ..., ...}

R-L is the plain LCS F1 on whitespace tokens (the project's deviation from the `rouge` package, see
papers/umi/metrics.py). Needs the repository importable (`pip install -e .`) with papers/umi built.
"""

import datasets
import evaluate

from common.metric_inputs import CheckedColumns
from papers.umi.metrics import static_metrics

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the agent's output for each step (planner text, then "</s>" and the caller
        or conclusion part, as the official format).
    references (list of str): the official reference string of each step.
    tool_names (list of list of str): the tools available at each step.
Returns:
    Plan ACC, Act. EM, Arg. F1, Hallu., Rouge-L, easy F1, hard F1 (float, x100) and the counts
    n steps, n call, n f1, n finish (int).
"""
_CITATION = """@article{shen2024umi, title={Small LLMs Are Weak Tool Learners: A Multi-LLM Agent},
author={Shen, Weizhou and others}, journal={arXiv preprint arXiv:2401.07324}, year={2024}}"""
NAME = "umi_step_metrics"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UmiStepMetrics(CheckedColumns, evaluate.Metric):
    metric_name = NAME
    column_kinds = {"predictions": "str", "references": "str", "tool_names": "str_list"}

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "tool_names": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, tool_names):
        steps = [
            {"prediction": p, "reference": r, "tool_names": list(t)}
            for p, r, t in zip(predictions, references, tool_names)
        ]
        return static_metrics(steps)
