"""SocialBench grading: the official letter extractor, per-item scores, and the aggregation to the table.

Per item (spec "Per-item score"), with gold labels L and extracted letters P:
- single answer (|L| = 1): 1 if P[0] == L[0] else 0 (only the first extracted letter counts);
- several answers (|L| > 1, EP Situ.): 0 if any letter of P is not in L, else |set(P)| / |set(L)|;
- memory: case-insensitive keyword recall, (1/|K|) * sum_k [lower(k) in lower(y)];
- undefined (None): no letter extracted, or an empty memory reply.

Aggregation (spec "Aggregation"): a column score is 100 x the mean over its *defined* items (the official
number, comparable with the paper); we also report a strict score in which undefined counts as 0, the
parse-failure rate, and the count of items whose model call failed (those are never scored: they are
retried on the next run). Avg = unweighted mean of the nine columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from papers.socialbench.prompts import COLUMNS, ItemError, task_kind

# The official rule as one left-to-right search with non-overlapping matches (spec "Output parsing"):
# left context  = word boundary | non-word run | start | CJK run | (zero-width) previous char in A-D;
# candidate     = one uppercase letter A-H;
# right context = word boundary | (zero-width) next char in A-D | end | non-word run | CJK run.
_CJK = "[\u4e00-\u9fa5]+"
LETTER_PATTERN = re.compile(rf"(?:\b|\W+|^|{_CJK}|(?<=[A-D]))([A-H])(?:\b|(?=[A-D])|$|\W+|{_CJK})")


def extract_letters(text: str) -> list[str]:
    """The distinct option letters in a model output, in first-occurrence order (official extractor).

    Lower-case letters and letters I-Z never count; "A good answer is C" gives [A, C], as officially.
    """
    letters: list[str] = []
    for match in LETTER_PATTERN.finditer(text):
        if match.group(1) not in letters:
            letters.append(match.group(1))
    return letters


def score_choice(letters: list[str], gold: list[str]) -> float | None:
    """Multiple-choice score of extracted `letters` against `gold` letters; None when nothing parsed."""
    if not letters:
        return None
    if len(gold) == 1:
        return 1.0 if letters[0] == gold[0] else 0.0
    if any(p not in gold for p in letters):
        return 0.0
    return len(set(letters)) / len(set(gold))


def keyword_recall(reply: str, keywords: list[str]) -> float | None:
    """Memory score: fraction of keywords that occur in the reply, case-insensitively; None if empty."""
    reply = reply.lower()
    if reply == "":
        return None
    return sum(k.lower() in reply for k in keywords) / len(keywords)


def score_item(item: dict, output: str) -> float | None:
    """Score of one model output for one item (official per-item rule; None = undefined)."""
    gold = item.get("label")
    if not isinstance(gold, list) or not gold or not all(isinstance(g, str) for g in gold):
        raise ItemError("field 'label' should be a non-empty list of strings")
    if task_kind(item) == "memory":
        return keyword_recall(output, gold)
    return score_choice(extract_letters(output), gold)


@dataclass(frozen=True)
class Graded:
    """One graded output: where it is averaged, and its score (None = undefined, or not scored)."""

    column: str
    category: str
    lang: str
    score: float | None
    failed: bool = False
    """The model call failed (e.g. the endpoint errored after every retry): never scored."""


@dataclass
class ColumnScore:
    n: int
    """Items answered (failed calls excluded)."""
    n_defined: int
    n_failed: int
    official: float | None
    """100 x mean over defined items (the paper's metric); None when no item is defined."""
    strict: float | None
    """100 x mean over answered items, undefined counted as 0."""
    parse_failure_rate: float | None
    """100 x share of answered items whose output gave no score."""

    def as_dict(self) -> dict:
        return asdict(self)


def column_score(graded: Iterable[Graded]) -> ColumnScore:
    graded = list(graded)
    answered = [g for g in graded if not g.failed]
    defined = [g.score for g in answered if g.score is not None]
    n = len(answered)
    return ColumnScore(
        n=n,
        n_defined=len(defined),
        n_failed=len(graded) - n,
        official=100 * sum(defined) / len(defined) if defined else None,
        strict=100 * sum(defined) / n if n else None,
        parse_failure_rate=100 * (n - len(defined)) / n if n else None,
    )


def average(scores: dict[str, ColumnScore], metric: str = "official") -> float | None:
    """Avg = unweighted mean of the column scores present (the paper's Avg when all nine are)."""
    values = [getattr(s, metric) for s in scores.values() if getattr(s, metric) is not None]
    return sum(values) / len(values) if values else None


def aggregate(graded: Iterable[Graded], key: str = "column") -> dict[str, ColumnScore]:
    """Column (or `key="category"`) -> score; columns in table order, categories sorted."""
    groups: dict[str, list[Graded]] = {}
    for g in graded:
        groups.setdefault(getattr(g, key), []).append(g)
    order = [c for c in COLUMNS if c in groups] if key == "column" else sorted(groups)
    return {name: column_score(groups[name]) for name in order}


def summarize(graded: list[Graded]) -> dict:
    """Everything a report needs: per column, per category, per language per column, and Avg.

    `avg_complete` says whether all nine columns were measured (only then is Avg the paper's Avg).
    """
    columns = aggregate(graded)
    by_lang = {
        lang: {k: v.as_dict() for k, v in aggregate([g for g in graded if g.lang == lang]).items()}
        for lang in sorted({g.lang for g in graded})
    }
    return {
        "columns": {k: v.as_dict() for k, v in columns.items()},
        "categories": {k: v.as_dict() for k, v in aggregate(graded, key="category").items()},
        "languages": by_lang,
        "avg": {"official": average(columns), "strict": average(columns, "strict")},
        "avg_complete": set(columns) == set(COLUMNS),
        "n_failed": sum(g.failed for g in graded),
    }


def format_table(summary: dict) -> str:
    """The summary as a plain-text table: official | strict | parse-fail % | n per column, then Avg."""
    lines = [f"{'column':<10} {'official':>9} {'strict':>8} {'parse-fail%':>12} {'n':>6} {'failed':>7}"]

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    for name, s in summary["columns"].items():
        lines.append(
            f"{name:<10} {num(s['official']):>9} {num(s['strict']):>8} "
            f"{num(s['parse_failure_rate']):>12} {s['n']:>6} {s['n_failed']:>7}"
        )
    label = "Avg" if summary["avg_complete"] else f"Avg({len(summary['columns'])}/9)"
    lines.append(f"{label:<10} {num(summary['avg']['official']):>9} {num(summary['avg']['strict']):>8}")
    return "\n".join(lines)
