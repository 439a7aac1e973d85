"""Claims as data (papers/<slug>/claims.yaml) and their noise-aware verdicts on a pipeline's rows.

claims.yaml: a list under `claims:`; each claim has `id`, `statement`, `direction` (higher|lower: the
sign method - baseline should have), and two blocks naming rows:
    published: {filter: {column: value, ...}, method: M, baseline: B}   # or `delta_method: M` for a
                                                                         # row whose value is the delta
    toy:       {filter: {...}, method: M, baseline: B}                   # rows of the toy pipeline
    scaled:    {filter: {...}, method: M, baseline: B}                   # optional: the rows small /
                                                                         # paper write, where the
                                                                         # published block is a delta row
A claim with `part: <part>` is judged only on results/<scale>-<part>/ and a claim without one only on
results/<scale>/ (a part's rows come from another run, with their own provenance).
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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from common.results import (
    RESULT_COLUMNS,
    ResultsError,
    load_published,
    load_reproduced,
    paper_dir,
    split_results_name,
)
from common.stats import DeltaStats, delta_stats


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
    with their interval, and the verdict. `scale` may name a part's folder (`toy-dense`): then only the
    claims of that part are judged, on its rows.

    Toy scale reads each claim's `toy` block (its own direction and margin if set); small and paper
    scales read the `scaled` block where there is one, else the `published` block, so the reproduced
    rows must carry the published names.
    """
    published, reproduced = load_published(slug, root), load_reproduced(slug, scale, root)
    base, part = split_results_name(scale)
    results = []
    for claim in load_claims(slug, root):
        if claim.get("part") != part:
            continue
        toy = base == "toy"
        block = claim["toy"] if toy else claim.get("scaled", claim["published"])
        direction = block.get("direction", claim["direction"]) if toy else claim["direction"]
        margin = float(block.get("margin", 0)) if toy else 0.0
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
