"""The one evaluation stage, shared by the CLI (`evaluate.py`) and the recipe (`pipeline.py`).

`evaluate(model, items, run_dir)` answers every item not yet answered in `run_dir`, saves the raw outputs
and grades them all. A run directory holds `run.json` (model settings), `outputs.jsonl` (one raw output
per item, with its gold label and category, so the run can be regraded without the data) and
`scores.json` (per column: official defined-only score, strict score, parse-failure rate, failed calls;
per category; per language; Avg; spec "Aggregation"). Outputs are appended chunk by chunk
(`common.stages.append_jsonl`), so a killed run resumes where it stopped (a torn last line is dropped);
items whose call failed are recorded with their error, never scored, and asked again on the next run.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from tqdm.auto import tqdm

from common.chat import ChatReply
from common.stages import append_jsonl, atomic_write_json, read_json, read_jsonl
from papers.socialbench.chat_models import Answerer, PolicyModel
from papers.socialbench.prompts import column_of, normalize_category
from papers.socialbench.scoring import Graded, score_item, summarize

log = logging.getLogger(__name__)


class RunError(ValueError):
    """A run directory that cannot be resumed or read (file and problem named)."""


def read_outputs(path: Path) -> dict[str, dict]:
    """id -> latest record of outputs.jsonl. A torn last line (a kill mid-write) is cut off the file;
    a bad line elsewhere raises `common.stages.StageError`, a record without id/output `RunError`."""
    records: dict[str, dict] = {}
    for number, record in enumerate(read_jsonl(path), start=1):
        if not isinstance(record, dict) or "id" not in record or "output" not in record:
            raise RunError(f"{path} record {number}: bad record (needs 'id' and 'output')")
        records[record["id"]] = record
    return records


def record(item: dict, reply: ChatReply) -> dict:
    """One line of outputs.jsonl: everything grading needs, so a run regrades without the data."""
    return {
        "id": item["id"],
        "category": normalize_category(item),
        "column": column_of(item),
        "lang": item["meta"].get("lang", "zh"),
        "label": item["label"],
        "output": reply.text,
        "error": reply.error,
    }


def grade(records: dict[str, dict]) -> list[Graded]:
    """Score every saved output from its own record (category, lang, label); failed calls get no score."""
    graded = []
    for r in records.values():
        item = {"label": r["label"], "meta": {"category": r["category"]}}
        failed = r.get("error") is not None
        score = None if failed else score_item(item, r["output"])
        graded.append(Graded(r["column"], r["category"], r["lang"], score, failed))
    return graded


def regrade(run_dir: str | Path) -> dict:
    """Recompute scores.json from outputs.jsonl alone and return the summary."""
    run_dir = Path(run_dir)
    records = read_outputs(run_dir / "outputs.jsonl")
    if not records:
        raise RunError(f"{run_dir / 'outputs.jsonl'}: no outputs to grade")
    summary = summarize(grade(records))
    atomic_write_json(run_dir / "scores.json", summary, indent=2)
    return summary


def evaluate(
    model: Answerer,
    items: list[dict],
    run_dir: str | Path,
    *,
    chunk_size: int = 64,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Answer every item not yet answered in `run_dir`, save the raw outputs, grade them all.

    A run directory belongs to one model setting: resuming with other settings stops with `RunError`
    (use another directory or `force=True`, which starts over).
    """
    run_dir = Path(run_dir)
    run_file, outputs = run_dir / "run.json", run_dir / "outputs.jsonl"
    settings = model.settings()
    if force:
        outputs.unlink(missing_ok=True)
    elif run_file.exists() and outputs.exists():
        saved = read_json(run_file).get("model")
        if saved != settings:
            raise RunError(
                f"{run_file}: this directory holds outputs of other model settings ({saved}); "
                "pass another --out or --force to start over"
            )
    atomic_write_json(run_file, {"model": settings, "n_items": len(items)}, indent=2)
    done = {k for k, r in read_outputs(outputs).items() if r.get("error") is None}
    todo = [it for it in items if it["id"] not in done]
    log.info("%s: %d of %d items to answer, outputs in %s", model.name, len(todo), len(items), run_dir)
    bar = tqdm(  # disabled at construction: set afterwards, the bar is already drawn (--no-progress)
        total=len(items),
        initial=len(items) - len(todo),
        desc=f"socialbench {model.name}",
        disable=not progress,
    )
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        replies = model.answer(chunk)
        append_jsonl(outputs, [record(it, rep) for it, rep in zip(chunk, replies, strict=True)])
        bar.update(len(chunk))
    bar.close()
    wanted = {it["id"] for it in items}
    summary = summarize(grade({k: r for k, r in read_outputs(outputs).items() if k in wanted}))
    atomic_write_json(run_dir / "scores.json", summary, indent=2)
    return summary


def policy_summary(policy: str, items: list[dict], seed: int = 0) -> dict:
    """Scores of a fixed policy, graded in memory through the same record + grade path as a model."""
    model = PolicyModel(policy, seed=seed)
    records = {it["id"]: record(it, reply) for it, reply in zip(items, model.answer(items), strict=True)}
    return summarize(grade(records))


def sample_items(items: list[dict], fraction: float | None, seed: int = 0) -> list[dict]:
    """A seeded sample of `fraction` of every category's items (at least one each), in file order, so a
    column's chance level is unchanged; None = every item."""
    if fraction is None:
        return items
    by_category: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_category.setdefault(it["meta"]["category"], []).append(i)
    rng = random.Random(seed)
    keep = {i for idx in by_category.values() for i in rng.sample(idx, max(1, round(fraction * len(idx))))}
    return [it for i, it in enumerate(items) if i in keep]


def limit_per_column(items: list[dict], limit: int | None) -> list[dict]:
    """The first `limit` items of each column (all for None): quick smoke runs."""
    if limit is None:
        return items
    seen: dict[str, int] = {}
    out = []
    for it in items:
        col = column_of(it)
        if seen.get(col, 0) < limit:
            seen[col] = seen.get(col, 0) + 1
            out.append(it)
    return out
