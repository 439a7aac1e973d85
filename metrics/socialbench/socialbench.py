"""SocialBench item scores and aggregates, as an `evaluate` module (a thin wrapper).

One implementation: every item is scored by `papers.socialbench.scoring.score_item` (the official letter
extractor and per-item rule: single answer, first letter counts; several answers, 0 on any wrong letter else
|P| / |L|; memory, case-insensitive keyword recall; None = undefined, no letter or an empty reply), and
aggregated by `papers.socialbench.scoring.summarize` / `column_score`:

- official: 100 x mean over the *defined* items (the paper's number),
- strict: 100 x mean over all items, undefined counted as 0,
- parse_failure_rate: 100 x share of items whose output gave no score,

per table column (EP Emo. pools DialogueEmotionDetect and HumorSarcasmDetect), per category, and Avg (the
unweighted mean of the columns present; the paper's Avg only when all nine are).

    import evaluate
    metric = evaluate.load("metrics/socialbench/socialbench.py")   # a local path: works offline
    metric.compute(predictions=["B"], references=[["B"]], categories=["Individual-EP-DialogueEmotionDetect"])
    # {'score': 100.0, 'score_strict': 100.0, 'parse_failure_rate': 0.0, 'columns': {...}, ...}

`references` are the items' `label` lists, `categories` their `meta.category`; an optional `langs=[...]`
(the items' `meta.lang`) adds the per-language tables. Needs the repository importable (`pip install -e .`).
"""

import datasets
import evaluate

from common.metric_inputs import CheckedColumns, check_columns
from papers.socialbench.prompts import ItemError, column_of
from papers.socialbench.scoring import Graded, column_score, score_item, summarize

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): raw model outputs.
    references (list of list of str): each item's gold `label` (letters, or memory keywords).
    categories (list of str): each item's `meta.category`, e.g. "Individual-EP-SituationUnderstanding".
    langs (list of str, optional): each item's `meta.lang` ("en" / "zh"), for the per-language tables.
Returns:
    score, score_strict (float | None): Avg of the column scores present, official and strict.
    parse_failure_rate (float | None): 100 x share of all items that gave no score.
    columns, categories, languages (dict): per group {n, n_defined, n_failed, official, strict,
        parse_failure_rate}.
    avg_complete (bool): all nine columns were measured.
    item_scores (list of float | None): the per-item scores (None = undefined).
"""
_CITATION = """@inproceedings{chen2024socialbench, title={SocialBench: Sociality Evaluation of Role-Playing
Conversational Agents}, author={Chen, Hongzhan and others}, booktitle={Findings of ACL}, year={2024}}"""
NAME = "socialbench"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SocialBench(CheckedColumns, evaluate.Metric):
    metric_name = NAME
    column_kinds = {"predictions": "str", "references": "labels", "categories": "str", "langs": "str"}

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                    "categories": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, categories, langs=None):
        check_columns(
            NAME,
            self.column_kinds,
            predictions=predictions,
            references=references,
            categories=categories,
            langs=langs,
        )
        graded = []
        for i, (output, label, category) in enumerate(zip(predictions, references, categories)):
            item = {"label": list(label), "meta": {"category": category}}
            try:
                score = score_item(item, output)
                graded.append(Graded(column_of(item), category, langs[i] if langs else "-", score))
            except ItemError as err:
                raise ValueError(f"{NAME}: item {i}: {err}") from None
        summary = summarize(graded)
        return {
            "score": summary["avg"]["official"],
            "score_strict": summary["avg"]["strict"],
            "parse_failure_rate": column_score(graded).parse_failure_rate,
            "columns": summary["columns"],
            "categories": summary["categories"],
            "languages": summary["languages"] if langs else {},
            "avg_complete": summary["avg_complete"],
            "item_scores": [g.score for g in graded],
        }
