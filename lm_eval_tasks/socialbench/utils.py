"""SocialBench for lm-evaluation-harness: the prompts, the letter extraction and the aggregates, as hooks.

A thin layer over papers/socialbench (one implementation): the documents are `papers.socialbench.data`'s
checked items (mirror, cache, or the pinned GitHub commit), the prompt is `prompts.build_prompt` (the
official zero-shot template, one user turn: pass `--apply_chat_template` for a chat model, as our
evaluator does), and each reply is scored by `scoring.score_item` (the official extractor and per-item
rule). The three metrics are the evaluator's column aggregates (`scoring.column_score`) of the same item
scores, x100:
- official: the mean over the items whose reply gave a score (the paper's number);
- strict: the mean over all items, a reply with no score counted 0;
- parse_failure_rate: the share of items whose reply gave no score.

The data directory comes from `--metadata '{"data_dir": "DIR"}'` (DIR holds socialbench/<file>.json),
else $REPRO_DATA_DIR, else ../shared/data beside the checkout, else the cache, else a download (off
under HF_HUB_OFFLINE=1). Needs the repository importable (`pip install -e .` of the checkout).
"""

from __future__ import annotations

import json
import math

import datasets

from papers.socialbench.data import load_items
from papers.socialbench.prompts import COLUMNS, build_prompt
from papers.socialbench.scoring import Graded, column_score, score_item


def load_column(column: str, data_dir: str | None = None, **_metadata) -> datasets.DatasetDict:
    """The items of one table column (e.g. "EP Situ."), one JSON string each (their fields vary by item:
    a flat table would pad every item's `choices` and `meta.profile` to the union of keys)."""
    if column not in COLUMNS:
        raise ValueError(f"socialbench: unknown column {column!r}; valid: {', '.join(COLUMNS)}")
    items = load_items([column], data_dir)
    rows = {"id": [it["id"] for it in items], "item": [json.dumps(it, ensure_ascii=False) for it in items]}
    return datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)})


def doc_to_text(doc: dict) -> str:
    return build_prompt(json.loads(doc["item"]))


def doc_to_target(doc: dict) -> str:
    """The gold label, for the harness's sample log (scoring reads the item itself)."""
    return ",".join(json.loads(doc["item"])["label"])


def process_results(doc: dict, results: list[str]) -> dict[str, float | None]:
    """The item's score under each metric name; the aggregation functions below turn them into numbers."""
    score = score_item(json.loads(doc["item"]), results[0])
    return {"official": score, "strict": score, "parse_failure_rate": score}


def _column(scores: list[float | None]):
    return column_score(Graded("-", "-", "-", s) for s in scores)


def _number(value: float | None) -> float:
    return math.nan if value is None else value


def official(scores: list[float | None]) -> float:
    """100 x mean over scored items (NaN when no reply gave a score)."""
    return _number(_column(scores).official)


def strict(scores: list[float | None]) -> float:
    """100 x mean over all items, no score counted 0."""
    return _number(_column(scores).strict)


def parse_failure_rate(scores: list[float | None]) -> float:
    """100 x share of items whose reply gave no score."""
    return _number(_column(scores).parse_failure_rate)
