"""Results that describe themselves: reproduced.csv + provenance.json, claims with noise-aware verdicts.

Layout per paper (`papers/<slug>/`):
    published.csv                  the paper's numbers (table,setting,model,method,benchmark,metric,value)
    claims.yaml                    the headline comparisons as data (see below)
    results/<scale>/reproduced.csv same columns, written only by `write_results` from a pipeline run
    results/<scale>/provenance.json commit, versions, seeds, grader, sampling protocol, hardware, wall time

`$REPRO_RESULTS` (`results_dir`) sends a run's results to `$REPRO_RESULTS/<slug>/<scale>/` instead (a
check that must not overwrite the committed toy results, e.g. benchmarks/resume_check.py); the README
tables are then not regenerated (they always show the committed results).

Rows are in the units of the paper's published.csv (points: 41.6, not 0.416), one row per seed with
`setting` ending in ` seed <int>` (e.g. `arith seed 0`); `split_seed` strips it, so the tables group
the seeds of one configuration (common/tables.py).

claims.yaml: a list under `claims:`; each claim has `id`, `statement`, `direction` (higher|lower: the
sign method - baseline should have), and two blocks naming rows:
    published: {filter: {column: value, ...}, method: M, baseline: B}   # or `delta_method: M` for a
                                                                         # row whose value is the delta
    toy:       {filter: {...}, method: M, baseline: B}                   # rows of the toy pipeline
    scaled:    {filter: {...}, method: M, baseline: B}                   # optional: the rows small /
                                                                         # paper write, where the
                                                                         # published block is a delta row
`column:` names the column holding M and B when it is not `method` (e.g. `model` for a benchmark
paper). A block with `unavailable: <why>` has no numbers. A toy block may also set `direction:` (its
metric's own sense, e.g. a KL where the paper reports accuracy) and `margin:` (the claimed size of the
effect, the spec's toy pass threshold; default 0: any effect on the claimed side).

Verdicts (issue 15, section 3). A block's rows are paired: a method row and a baseline row that agree
on every other column (same seed, same setting) give one delta d_i = method - baseline; a baseline
measured once (one row, e.g. the SFT start) is subtracted from every method row. Over the n deltas:
mean, sd and a 95 % interval, Student's t for n < 30 (mean +- t_{0.975, n-1} sd / sqrt(n)) and a seeded
paired percentile bootstrap of the mean for n >= 30. With s = +1 (higher) or -1 (lower) the verdict is
    holds         s * interval lies entirely past the margin (> 0 when the margin is 0, >= margin else)
    fails         s * interval lies entirely short of it
    inconclusive  otherwise, and always for a single delta (n = 1 has no interval).
At toy scale the toy block is read; at small/paper scale the scaled (else the published) block is
evaluated on the reproduced rows, and every reproduced row with a published twin is compared within an absolute
tolerance (`diff --tolerance`, default 1.0 point). The published delta is shown beside each verdict.

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
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.provenance import collect_provenance
from common.stages import atomic_write_text, repo_root
from common.stats import DeltaStats, delta_stats

ROOT = repo_root()
RESULTS_ENV = "REPRO_RESULTS"
RESULT_COLUMNS = ("table", "setting", "model", "method", "benchmark", "metric", "value")
SCALES = ("toy", "small", "paper")
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
) -> Path:
    """Write `results_dir(slug, scale, root)`/{reproduced.csv,provenance.json} atomically; return the dir."""
    if scale not in SCALES:
        raise ResultsError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    out = results_dir(slug, scale, root)
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


def verdict(stats: DeltaStats | None, direction: str, margin: float = 0.0) -> str | None:
    """holds / fails / inconclusive for paired deltas (see the module docstring); None without deltas.

    With s = +1 for `higher`, -1 for `lower`, a signed value x reaches the claim when x > 0 (margin 0)
    or x >= margin; holds = both ends of s * interval reach it, fails = neither does."""
    if stats is None:
        return None
    if stats.low is None or stats.high is None:
        return "inconclusive"
    sign = 1.0 if direction == "higher" else -1.0
    ends = sorted((sign * stats.low, sign * stats.high))

    def reaches(x: float) -> bool:
        return x >= margin if margin > 0 else x > 0

    if reaches(ends[0]):
        return "holds"
    return "fails" if not reaches(ends[1]) else "inconclusive"


@dataclass
class ClaimResult:
    id: str
    statement: str
    direction: str
    margin: float
    published_delta: float | None
    stats: DeltaStats | None
    """The reproduced paired deltas; None when there are no rows or the block is unavailable."""
    verdict: str | None
    """holds | fails | inconclusive; None when there is nothing to judge (see `note`)."""
    note: str | None = None
    """Why there is no verdict: the block's `unavailable` reason, or `no rows yet`."""

    @property
    def reproduced_delta(self) -> float | None:
        return None if self.stats is None else self.stats.mean


def load_claims(slug: str, root: Path | None = None) -> list[dict]:
    """The validated claims of papers/<slug>/claims.yaml (schema in this module's docstring)."""
    path = paper_dir(slug, root) / "claims.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ResultsError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list) or not claims:
        raise ResultsError(f"{path}: needs a non-empty list under 'claims:'")
    for i, claim in enumerate(claims):
        if not isinstance(claim, dict):
            raise ResultsError(
                f"{path} claim {i}: must be a mapping with id, statement, direction, published, toy"
            )
        for key in ("id", "statement", "direction", "published", "toy"):
            if key not in claim:
                raise ResultsError(f"{path} claim {i}: field {key!r} missing")
        for where, block in (("", claim), (" toy", claim["toy"] if isinstance(claim["toy"], dict) else {})):
            if block.get("direction", "higher") not in ("higher", "lower"):
                raise ResultsError(f"{path} claim {claim['id']}{where}: direction must be higher or lower")
        for name in ("published", "toy", "scaled"):
            if name not in claim:  # only `scaled` is optional
                continue
            block = claim[name]
            if not isinstance(block, dict) or not (
                "unavailable" in block or "delta_method" in block or {"method", "baseline"} <= set(block)
            ):
                raise ResultsError(
                    f"{path} claim {claim['id']}: {name} needs method + baseline, delta_method or unavailable"
                )
        margin = claim["toy"].get("margin", 0)
        if not isinstance(margin, (int, float)) or margin < 0:
            raise ResultsError(f"{path} claim {claim['id']}: toy margin must be a number >= 0")
    return claims


def _mean_value(rows: list[dict], filt: dict, name: str, column: str = "method") -> float | None:
    hits = [
        float(r["value"])
        for r in rows
        if r[column] == name and all(r.get(k) == str(v) for k, v in filt.items())
    ]
    return sum(hits) / len(hits) if hits else None


def block_names(block: dict) -> list[str]:
    if "delta_method" in block:
        return [block["delta_method"]]
    return [block[k] for k in ("method", "baseline") if k in block]


def block_delta(block: dict, rows: list[dict] | None) -> float | None:
    """method - baseline of the mean values (or the value of a `delta_method` row) over rows matching the
    block's filter: the published delta, where each method has one row.

    `column` (default "method") says which column holds the two names (e.g. "model" when a claim
    compares models); a block with `unavailable: <why>` has no numbers.
    """
    if rows is None or "unavailable" in block:
        return None
    filt, column = block.get("filter", {}), block.get("column", "method")
    if "delta_method" in block:
        return _mean_value(rows, filt, block["delta_method"], column)
    a = _mean_value(rows, filt, block["method"], column)
    b = _mean_value(rows, filt, block["baseline"], column)
    return None if a is None or b is None else a - b


def _keyed(rows: list[dict], filt: dict, name: str, column: str, where: str) -> dict[tuple, float]:
    """The rows named `name` in `column` that match `filt`, keyed by every other column but value."""
    keyed: dict[tuple, float] = {}
    for r in rows:
        if r[column] == name and all(r.get(k) == str(v) for k, v in filt.items()):
            key = tuple(r[c] for c in RESULT_COLUMNS[:-1] if c != column)
            if key in keyed:
                raise ResultsError(f"{where}: two rows for {name!r} at {key}; narrow the block's filter")
            keyed[key] = float(r["value"])
    return keyed


def paired_deltas(block: dict, rows: list[dict] | None, where: str = "claim") -> list[float]:
    """Per-pair method - baseline over rows matching the block (see the module docstring), in row order;
    for a `delta_method` block, the values of its rows. Empty when either side has no rows."""
    if rows is None or "unavailable" in block:
        return []
    filt, column = block.get("filter", {}), block.get("column", "method")
    if "delta_method" in block:
        return list(_keyed(rows, filt, block["delta_method"], column, where).values())
    method = _keyed(rows, filt, block["method"], column, where)
    baseline = _keyed(rows, filt, block["baseline"], column, where)
    if not method or not baseline:
        return []
    paired = [value - baseline[key] for key, value in method.items() if key in baseline]
    if paired:
        return paired
    if len(baseline) == 1:  # measured once (e.g. the starting point): the same baseline for every seed
        (base,) = baseline.values()
        return [value - base for value in method.values()]
    raise ResultsError(
        f"{where}: no {block['method']!r} row pairs with a {block['baseline']!r} row "
        f"(same {', '.join(c for c in RESULT_COLUMNS[:-1] if c != column)})"
    )


def evaluate_claims(slug: str, scale: str, root: Path | None = None) -> list[ClaimResult]:
    """Per claim: the published delta, the reproduced paired deltas on results/<scale>/reproduced.csv
    with their interval, and the verdict.

    Toy scale reads each claim's `toy` block (its own direction and margin if set); small and paper
    scales read the `scaled` block where there is one, else the `published` block, so the reproduced
    rows must carry the published names.
    """
    published, reproduced = load_published(slug, root), load_reproduced(slug, scale, root)
    results = []
    for claim in load_claims(slug, root):
        block = claim["toy"] if scale == "toy" else claim.get("scaled", claim["published"])
        direction = block.get("direction", claim["direction"]) if scale == "toy" else claim["direction"]
        margin = float(block.get("margin", 0)) if scale == "toy" else 0.0
        deltas = paired_deltas(block, reproduced, f"papers/{slug}/claims.yaml {claim['id']} ({scale})")
        stats = delta_stats(deltas) if deltas else None
        if "unavailable" in block:
            note = f"not checkable at {scale} scale: {block['unavailable']}"
        elif stats is None and "delta_method" in block:
            note = f"published as a delta; no reproduced {block['delta_method']!r} row at {scale} scale"
        else:
            note = None if stats is not None else "no rows yet"
        results.append(
            ClaimResult(
                claim["id"],
                claim["statement"],
                direction,
                margin,
                block_delta(claim["published"], published),
                stats,
                verdict(stats, direction, margin),
                note,
            )
        )
    return results


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
