"""Results that describe themselves: reproduced.csv + provenance.json (claims: common/claims.py).

Layout per paper (`papers/<slug>/`):
    published.csv                  the paper's numbers (table,setting,model,method,benchmark,metric,value)
    claims.yaml                    the headline comparisons as data (see below)
    results/<scale>/reproduced.csv same columns, written only by `write_results` from a pipeline run
    results/<scale>/provenance.json commit, versions, seeds, grader, sampling protocol, hardware, wall time
    results/<scale>-<part>/        the same for a separately run part of a pipeline (e.g. lco's toy-dense):
                                   its own rows, provenance and claims (a claim's optional `part:` key)

`$REPRO_RESULTS` (`results_dir`) sends a run's results to `$REPRO_RESULTS/<slug>/<scale>/` instead (a
check that must not overwrite the committed toy results, e.g. benchmarks/resume_check.py); the README
tables are then not regenerated (they always show the committed results).

Rows are in the units of the paper's published.csv (points: 41.6, not 0.416), one row per seed with
`setting` ending in ` seed <int>` (e.g. `arith seed 0`); `split_seed` strips it, so the tables group
the seeds of one configuration (common/tables.py).

claims.yaml and the noise-aware verdicts: common/claims.py.

Toy naming convention for pipelines (the names the toy blocks of claims.yaml use):
`table=toy`; `setting` = the world and its seed (e.g. `arith seed 0`); `model` = the tiny preset;
`method` = the paper's method names as spelled in published.csv (`REINFORCE+Q-RM`, `Proxy-KD`, ...);
`benchmark` = `toy-arith` (test split of the common/synthetic world), `toy-arith-ood` (its harder
split), `toy-processbench` (flawed rationales with first-error labels) or the paper's own toy world
(`toy-signal-sum`, `toy-tools`, `synthetic-SA`/`synthetic-SP`); `metric` = as in the paper where it
exists (`pass@1`, `accuracy`, `F1`, `Act. EM`).

    python -m common.tables tables [--paper SLUG] [--scale toy]   # rewrite the generated README blocks
    python -m common.tables diff SLUG [--scale toy] [--tolerance 1.0]   # print one paper's comparison
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

from common.provenance import collect_provenance
from common.stages import atomic_write_text, repo_root

ROOT = repo_root()
RESULTS_ENV = "REPRO_RESULTS"
RESULT_COLUMNS = ("table", "setting", "model", "method", "benchmark", "metric", "value")
SCALES = ("toy", "small", "paper")


def results_name(scale: str, part: str | None = None) -> str:
    """The results folder of a scale (`toy`) or of a separately run part of it (`toy-dense`)."""
    return f"{scale}-{part}" if part else scale


def split_results_name(name: str) -> tuple[str, str | None]:
    """`"toy-dense"` -> `("toy", "dense")`; `"toy"` -> `("toy", None)`."""
    scale, _, part = name.partition("-")
    return scale, part or None


PAPERS = {
    "qrm": "reward model + RL",
    "lco": "RL",
    "ipvrm": "reward model + RL",
    "mcckd": "LLM distillation",
    "proxykd": "LLM distillation",
    "adkd": "encoder distillation",
    "socialbench": "benchmark / evaluator",
    "umi": "agent training + eval",
}
PAPERS_TABLE = ("<!-- papers-table:start -->", "<!-- papers-table:end -->")
PAPER_BLOCK = ("<!-- results:start -->", "<!-- results:end -->")
_SEED_SUFFIX = re.compile(r"(?:^|\s+)seed (\d+)$")
# Metrics reported as a percentage in papers (the units check reads their names).
_PERCENT_METRIC = re.compile(r"pass@\d+|accuracy|\bacc\b|exact match|\bem\b|\bf1\b|win rate|score")


class ResultsError(ValueError):
    """Bad result rows or claims files; the message names the file and the row."""


def result_row(table: str, setting: str, model: str, method: str, benchmark: str, metric: str, value) -> dict:
    """One reproduced.csv row, its keys in RESULT_COLUMNS' order."""
    return dict(zip(RESULT_COLUMNS, (table, setting, model, method, benchmark, metric, value)))


def paper_dir(slug: str, root: Path | None = None) -> Path:
    if slug not in PAPERS:
        raise ResultsError(f"unknown paper {slug!r}; valid: {', '.join(PAPERS)}")
    return (root or ROOT) / "papers" / slug


def results_redirected() -> bool:
    """Whether `$REPRO_RESULTS` sends this process's results away from papers/<slug>/results/."""
    return bool(os.environ.get(RESULTS_ENV))


def results_dir(slug: str, scale: str, root: Path | None = None) -> Path:
    """Where a run writes its results: papers/<slug>/results/<scale>/ of `root` (default this checkout),
    or `$REPRO_RESULTS/<slug>/<scale>/` when that is set and no `root` is given."""
    if root is None and results_redirected():
        paper_dir(slug)  # an unknown slug fails the same way
        return Path(os.environ[RESULTS_ENV]) / slug / scale
    return paper_dir(slug, root) / "results" / scale


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != RESULT_COLUMNS:
            raise ResultsError(f"{path}: columns {reader.fieldnames} != {list(RESULT_COLUMNS)}")
        return list(reader)


def _validate_rows(rows: list[dict], where: str) -> list[dict]:
    clean = []
    for i, row in enumerate(rows):
        missing = [c for c in RESULT_COLUMNS if c not in row]
        extra = sorted(set(row) - set(RESULT_COLUMNS))
        if missing or extra:
            raise ResultsError(f"{where} row {i}: missing {missing} / unknown {extra} columns")
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            raise ResultsError(f"{where} row {i}: value {row['value']!r} is not a number") from None
        if value != value:
            raise ResultsError(f"{where} row {i}: value is NaN")
        clean.append({**{c: str(row[c]) for c in RESULT_COLUMNS[:-1]}, "value": repr(round(value, 6))})
    return clean


def write_results(
    slug: str,
    scale: str,
    rows: list[dict],
    *,
    seeds: list[int],
    config: dict,
    wall_time_s: float,
    grader: str | None = None,
    sampling: dict | None = None,
    extra: dict | None = None,
    root: Path | None = None,
    part: str | None = None,
) -> Path:
    """Write `results_dir(slug, scale, root)`/{reproduced.csv,provenance.json} atomically; return the dir.

    `part`: a separately run part of the pipeline, written to results/<scale>-<part>/ instead."""
    if scale not in SCALES:
        raise ResultsError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    if part is not None and not re.fullmatch(r"[a-z0-9_]+", part):
        raise ResultsError(f"results part must be lower-case letters, digits or _, got {part!r}")
    out = results_dir(slug, results_name(scale, part), root)
    clean = _validate_rows(rows, f"write_results({slug}, {scale})")
    if not clean:
        raise ResultsError(f"write_results({slug}, {scale}): no rows")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(clean)
    prov = collect_provenance(
        paper=slug,
        scale=scale,
        seeds=list(seeds),
        config=config,
        wall_time_s=round(wall_time_s, 2),
        grader=grader,
        sampling=sampling,
        **({"part": part} if part else {}),
        **(extra or {}),
    )
    atomic_write_text(out / "provenance.json", json.dumps(prov, indent=2, default=str) + "\n")
    atomic_write_text(out / "reproduced.csv", buf.getvalue())
    return out


def load_published(slug: str, root: Path | None = None) -> list[dict]:
    return _read_csv(paper_dir(slug, root) / "published.csv")


def load_reproduced(slug: str, scale: str, root: Path | None = None) -> list[dict] | None:
    path = paper_dir(slug, root) / "results" / scale / "reproduced.csv"
    return _read_csv(path) if path.exists() else None


def split_seed(setting: str) -> tuple[str, int | None]:
    """`"arith seed 3"` -> `("arith", 3)`; a setting without a trailing ` seed <int>` -> `(setting, None)`."""
    match = _SEED_SUFFIX.search(setting)
    return (setting[: match.start()], int(match.group(1))) if match else (setting, None)


def aggregate(rows: list[dict]) -> list[dict]:
    """Group rows on every column but `value`, with a trailing ` seed <int>` cut from `setting`; each
    group (in order of first appearance) gets `mean`, `sd` (sample, ddof 1; None for one row), `n`."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        key = tuple(split_seed(r[c])[0] if c == "setting" else r[c] for c in RESULT_COLUMNS[:-1])
        groups.setdefault(key, []).append(float(r["value"]))
    out = []
    for key, values in groups.items():
        n = len(values)
        mean = math.fsum(values) / n
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        out.append({**dict(zip(RESULT_COLUMNS[:-1], key)), "mean": mean, "sd": sd, "n": n})
    return out


def check_units(slug: str, scale: str, root: Path | None = None) -> None:
    """Raise when a percentage-like reproduced metric (pass@k, accuracy, F1, ...) is a fraction (every
    value <= 1) while its published twin (a published metric naming the same measure) is in points
    (a value > 1.5): the rows must be in published.csv's units."""
    published = load_published(slug, root)
    problems = []
    by_metric: dict[str, list[float]] = {}
    for r in load_reproduced(slug, scale, root) or []:
        by_metric.setdefault(r["metric"], []).append(float(r["value"]))
    for metric, values in by_metric.items():
        measure = _PERCENT_METRIC.search(metric.lower())
        if measure is None or max(abs(v) for v in values) > 1 or not any(values):
            continue  # not a percentage, already in points, or all 0 (the same in any unit)
        twins = [r for r in published if measure.group(0) in r["metric"].lower()]
        points = [r for r in twins if float(r["value"]) > 1.5]
        if points:
            problems.append(
                f"metric {metric!r} is a fraction (every value <= 1) while published.csv has "
                f"{points[0]['metric']!r} in points (e.g. {points[0]['value']})"
            )
    if problems:
        raise ResultsError(
            f"papers/{slug}/results/{scale}/reproduced.csv: {'; '.join(problems)}; "
            "write rows in published.csv's units (x100)"
        )


def compare_numbers(slug: str, scale: str, tolerance: float = 1.0, root: Path | None = None) -> list[dict]:
    """Reproduced rows (one per seed) with a published twin (the six key columns agree once the trailing
    ` seed <int>` is cut from the setting): values, delta, within tolerance."""
    key = RESULT_COLUMNS[:-1]
    published = {tuple(r[k] for k in key): float(r["value"]) for r in load_published(slug, root)}
    out = []
    for row in load_reproduced(slug, scale, root) or []:
        ref = published.get(tuple(split_seed(row[k])[0] if k == "setting" else row[k] for k in key))
        if ref is not None:
            got = float(row["value"])
            out.append({**row, "published": ref, "delta": got - ref, "within": abs(got - ref) <= tolerance})
    return out
