"""The README blocks, generated from published.csv, claims.yaml and results/ (plots: common/plots.py).

    python -m common.tables tables [--paper qrm] [--scale toy]   # rewrite the generated README blocks
    python -m common.tables diff qrm [--scale small] [--tolerance 1.0]   # print one paper's comparison

(`make tables` runs it.) Only the text between the
marker comments is rewritten; everything else in a README is left alone.

A paper's block, per scale with results: the aggregate table (one row per method x benchmark x metric
and setting: mean +- sd over the seeds, n, and the published value where a row has a published twin;
the per-seed rows stay in reproduced.csv), then the claims with their paired delta +- the half-width
of its 95 % interval, n and the verdict (common/results.py), then the published headline rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from common.claims import ClaimResult, block_names, evaluate_claims, load_claims
from common.results import (
    PAPER_BLOCK,
    PAPERS,
    PAPERS_TABLE,
    RESULT_COLUMNS,
    ROOT,
    SCALES,
    ResultsError,
    aggregate,
    check_units,
    compare_numbers,
    load_published,
    load_reproduced,
    paper_dir,
    split_results_name,
)

KEY_COLUMNS = RESULT_COLUMNS[:-1]


def precision(*xs: float | None) -> int:
    """Two decimals from 1 up; below, three significant digits of the largest (a KL of 0.0231 stays visible)."""
    top = max((abs(x) for x in xs if x is not None), default=0.0)
    return 2 if top >= 1 or top == 0 else 2 - math.floor(math.log10(top))


def _fmt(x: float | None, decimals: int | None = None) -> str:
    """A signed delta, e.g. +4.70, -0.0231; "-" for None."""
    return "-" if x is None else f"{x:+.{precision(x) if decimals is None else decimals}f}"


def _pm(mean: float, spread: float | None, signed: bool = False) -> str:
    """`mean ± spread` at one precision, e.g. 34.33 ± 4.36, +0.46 ± 1.33, 0.0416 ± 0.0099."""
    d = precision(mean, spread)
    text = f"{mean:+.{d}f}" if signed else f"{mean:.{d}f}"
    return text + (f" ± {spread:.{d}f}" if spread is not None else "")


def format_duration(seconds: float | None) -> str:
    """403.2 -> "6 min 43 s", 54.6 -> "55 s", 3725 -> "1 h 2 min"; None -> "-"."""
    if seconds is None:
        return "-"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    return f"{total // 3600} h {total % 3600 // 60} min"


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_names(slug: str, root: Path | None = None) -> list[str]:
    """Every results folder of a paper with a reproduced.csv: per scale (in SCALES order) the scale's own,
    then its parts (alphabetical)."""
    base = paper_dir(slug, root) / "results"
    names = []
    for scale in SCALES:
        parts = sorted(p.name for p in base.glob(f"{scale}-*") if (p / "reproduced.csv").exists())
        names += ([scale] if (base / scale / "reproduced.csv").exists() else []) + parts
    return names


def _label(name: str) -> str:
    """ "toy" -> "toy scale"; "toy-dense" -> "toy scale, part `dense` (a separate run)"."""
    scale, part = split_results_name(name)
    return f"{scale} scale" + (f", part `{part}` (a separate run)" if part else "")


def _results_table(slug: str, scale: str, root: Path | None) -> list[str]:
    groups = aggregate(load_reproduced(slug, scale, root) or [])
    published = {tuple(r[c] for c in KEY_COLUMNS): r["value"] for r in load_published(slug, root)}
    twin = [published.get(tuple(g[c] for c in KEY_COLUMNS)) for g in groups]
    shared = [c for c in ("table", "setting", "model") if len({g[c] for g in groups}) == 1]
    columns = [c for c in KEY_COLUMNS if c not in shared]
    header = [*columns, "mean ± sd", "n"] + (["published"] if any(twin) else [])
    body = []
    for g, pub in zip(groups, twin):
        body.append(
            [*(g[c] for c in columns), _pm(g["mean"], g["sd"]), g["n"]] + ([pub or "-"] if any(twin) else [])
        )
    prov_path = paper_dir(slug, root) / "results" / scale / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    common_cols = ", ".join(f"{c} `{groups[0][c]}`" for c in shared) if groups else ""
    return [
        f"### Reproduced, {_label(scale)}",
        "",
        f"commit `{(prov.get('commit') or '?')[:10]}`, seeds {prov.get('seeds')}, "
        f"wall time {format_duration(prov.get('wall_time_s'))}"
        + (f" ({format_duration(prov['cpu_s'])} CPU)" if prov.get("cpu_s") is not None else "")
        + (" reusing cached stages" if prov.get("started_with_cache") else "")
        + f", grader {prov.get('grader')}; "
        f"per-seed rows in [reproduced.csv](results/{scale}/reproduced.csv), "
        f"[provenance.json](results/{scale}/provenance.json)."
        + (f" Every row: {common_cols}." if common_cols else ""),
        "",
        _md_table(header, body),
        "",
        *_details(slug, scale, root),
    ]


DETAILS = "details.md"  # results/<scale>/details.md: markdown a pipeline derives from its own outputs


def _details(slug: str, scale: str, root: Path | None) -> list[str]:
    """A pipeline's own generated markdown (e.g. pass criteria as a table), shown under its results table."""
    path = paper_dir(slug, root) / "results" / scale / DETAILS
    return [path.read_text(encoding="utf-8").rstrip(), ""] if path.exists() else []


def _delta_cell(claim: ClaimResult) -> str:
    stats = claim.stats
    if stats is None:
        return "-"
    how = ", bootstrap" if stats.method == "bootstrap" else ""
    return f"{_pm(stats.mean, stats.half_width, signed=True)} (n={stats.n}{how})"


def _interval_cell(claim: ClaimResult) -> str:
    stats = claim.stats
    if stats is None or stats.low is None:
        return "-" if stats is None else "none (one seed)"
    d = precision(stats.mean, stats.low, stats.high)
    return f"[{_fmt(stats.low, d)}, {_fmt(stats.high, d)}]"


def _verdict_cell(claim: ClaimResult) -> str:
    if claim.verdict is None:
        return claim.note or "no rows yet"
    return "**fails**" if claim.verdict == "fails" else claim.verdict


def _claims_table(slug: str, scale: str, root: Path | None) -> list[str]:
    rows = [
        [
            c.statement,
            c.direction + (f", margin {c.margin:g}" if c.margin else ""),
            _fmt(c.published_delta),
            _delta_cell(c),
            _interval_cell(c),
            _verdict_cell(c),
        ]
        for c in evaluate_claims(slug, scale, root)
    ]
    header = ["claim", "direction", "published delta", f"reproduced delta ({scale})", "95% interval"]
    header.append("verdict")
    if not rows:
        return []
    return [
        f"### Claims at {_label(scale)}",
        "",
        "Reproduced delta: mean of the paired per-seed deltas (method - baseline) ± the half-width of "
        "their 95% interval (t; bootstrap from 30 pairs); holds / fails only when the whole interval "
        "is past / short of the claimed effect.",
        "",
        _md_table(header, rows),
        "",
    ]


def _headline_rows(slug: str, root: Path | None) -> tuple[list[dict], int]:
    """The published rows the claims use (in file order), and the number of rows in published.csv."""
    published = load_published(slug, root)
    headline = []
    for claim in load_claims(slug, root):
        block = claim["published"]
        filt, column, names = block.get("filter", {}), block.get("column", "method"), block_names(block)
        for r in published:
            if r[column] in names and all(r.get(k) == str(v) for k, v in filt.items()) and r not in headline:
                headline.append(r)
    return headline, len(published)


def published_table_names(slug: str, root: Path | None = None) -> list[str]:
    """claims.yaml's optional `published_tables:` list: the paper's tables to show whole in the README."""
    path = paper_dir(slug, root) / "claims.yaml"
    names = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("published_tables") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ResultsError(f"{path}: published_tables must be a list of table names")
    known = {r["table"] for r in load_published(slug, root)}
    missing = [n for n in names if n not in known]
    if missing:
        raise ResultsError(f"{path}: published_tables names {missing[0]!r}, not a table of published.csv")
    return names


def _published_table(rows: list[dict], name: str) -> list[str]:
    """One published table as a grid: a row per (setting, model, method), a column per (benchmark, metric);
    columns that hold one value in every row go to the heading."""
    keys = [c for c in ("setting", "model", "method") if len({r[c] for r in rows}) > 1] or ["method"]
    one_metric = len({r["metric"] for r in rows}) == 1
    col = (lambda r: r["benchmark"]) if one_metric else (lambda r: f"{r['benchmark']} {r['metric']}")  # noqa: E731
    columns = list(dict.fromkeys(col(r) for r in rows))
    grid: dict[tuple, dict[str, str]] = {}
    for r in rows:
        grid.setdefault(tuple(r[k] for k in keys), {})[col(r)] = r["value"]
    fixed = [
        f"{c} {rows[0][c]}"
        for c in ("setting", "model", "method", "metric")
        if len({r[c] for r in rows}) == 1
    ]
    fixed = [f for f in fixed if not f.startswith("metric") or one_metric]
    title = f"#### {name}" + (f" ({'; '.join(fixed)})" if fixed else "")
    body = [[*key, *(cells.get(c, "-") for c in columns)] for key, cells in grid.items()]
    return [title, "", _md_table([*keys, *columns], body), ""]


def _published_tables(slug: str, root: Path | None) -> list[str]:
    names = published_table_names(slug, root)
    if not names:
        return []
    published = load_published(slug, root)
    parts = ["### Published tables (whole, from published.csv)", ""]
    for name in names:
        parts += _published_table([r for r in published if r["table"] == name], name)
    return parts


def _compared_table(slug: str, scale: str, tolerance: float, root: Path | None) -> list[str]:
    compared = compare_numbers(slug, scale, tolerance, root)
    if not compared:
        return [
            "No reproduced row has a published twin (same table, setting, model, method, benchmark, metric).",
            "",
        ]
    header = ["setting", "model", "method", "benchmark", "metric", "published", "reproduced", "delta"]
    body = [
        [*(c[k] for k in header[:5]), c["published"], c["value"], _fmt(c["delta"]), c["within"]]
        for c in compared
    ]
    return [
        f"Per seed against published ({scale}; within ±{tolerance:g}: "
        f"{sum(c['within'] for c in compared)}/{len(compared)} rows):",
        "",
        _md_table([*header, f"within ±{tolerance:g}"], body),
        "",
    ]


def render_paper_block(
    slug: str, root: Path | None = None, scales: list[str] | None = None, tolerance: float = 1.0
) -> str:
    """Markdown for a paper README: per scale the aggregate table and the claims, then the published rows.

    `scales` defaults to every results folder (`results_names`: the scales with results, each followed by
    its separately run parts; the toy claims alone when there are none). Raises
    `ResultsError` when a scale's rows are not in published.csv's units (`check_units`).
    """
    parts = ["_Generated by `make tables` from published.csv, claims.yaml and results/; do not edit._", ""]
    for scale in scales or results_names(slug, root) or ["toy"]:
        if load_reproduced(slug, scale, root) is not None:
            check_units(slug, scale, root)
            parts += _results_table(slug, scale, root)
        parts += _claims_table(slug, scale, root)
        if split_results_name(scale)[0] != "toy" and load_reproduced(slug, scale, root) is not None:
            parts += _compared_table(slug, scale, tolerance, root)  # numbers are compared above toy only
    headline, total = _headline_rows(slug, root)
    parts += [
        f"### Published (the rows the claims use; all {total} rows in [published.csv](published.csv))",
        "",
        _md_table(
            ["model", "method", "benchmark", "metric", "value"],
            [[r["model"], r["method"], r["benchmark"], r["metric"], r["value"]] for r in headline],
        )
        if headline
        else "No published number backs these claims (see the notes in this README).",
        "",
        *_published_tables(slug, root),
    ]
    return "\n".join(parts).rstrip() + "\n"


def claims_summary(slug: str, scale: str, root: Path | None = None) -> str:
    """One cell of the top README's table, e.g. `1/3 hold, 1 fails, 1 inconclusive`."""
    if load_reproduced(slug, scale, root) is None:
        return "no results yet"
    try:
        check_units(slug, scale, root)
    except ResultsError:
        return f"units differ from published.csv (`python -m common.tables diff {slug}`)"
    results = evaluate_claims(slug, scale, root)
    judged = [c for c in results if c.verdict is not None]
    text = f"{sum(c.verdict == 'holds' for c in judged)}/{len(judged)} hold"
    for word in ("fails", "inconclusive"):
        if count := sum(c.verdict == word for c in judged):
            text += f", {count} {word}"
    missing = sum(c.verdict is None and c.note == "no rows yet" for c in results)
    other = len(results) - len(judged) - missing
    if missing:
        text += f", {missing} without rows"
    if other:
        text += f", {other} not checkable at {scale}"
    return text


def _toy_runtime(slug: str, root: Path | None) -> str:
    """The committed toy run's wall time, with the machine's 15-minute load average when recorded."""
    path = paper_dir(slug, root) / "results" / "toy" / "provenance.json"
    if not path.exists():
        return "-"
    prov = json.loads(path.read_text())
    load = (prov.get("hardware") or {}).get("load_avg_15min")
    cores = (prov.get("hardware") or {}).get("cpu_count")
    busy = f" (load {load:g} on {cores} cores)" if load is not None and cores else ""
    cpu = f", {format_duration(prov['cpu_s'])} CPU" if prov.get("cpu_s") is not None else ""
    cached = ", cached stages reused" if prov.get("started_with_cache") else ""
    return format_duration(prov.get("wall_time_s")) + busy + cpu + cached


def render_papers_table(root: Path | None = None, scale: str = "toy") -> str:
    rows = []
    for slug, kind in PAPERS.items():
        base = paper_dir(slug, root)
        rows.append(
            [
                f"[{slug}](papers/{slug}/README.md)",
                kind,
                "built" if (base / "pipeline.py").exists() else "not built yet",
                ", ".join(s for s in SCALES if load_reproduced(slug, s, root) is not None) or "-",
                _toy_runtime(slug, root),
                claims_summary(slug, scale, root),
            ]
        )
    header = ["paper", "kind", "pipeline", "results", "toy runtime", f"claims at {scale} scale"]
    return _md_table(header, rows) + "\n"


def replace_block(text: str, markers: tuple[str, str], body: str, where: str) -> str:
    start, end = markers
    if start not in text or end not in text:
        raise ResultsError(f"{where}: markers {start} ... {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def write_tables(papers: list[str], root: Path | None = None, scale: str = "toy") -> list[Path]:
    """Rewrite the marked block of each paper's README and the paper table of the top README.

    A paper whose block cannot be rendered (e.g. rows in the wrong units) keeps its README; the others
    and the top README are still written, then one `ResultsError` names every paper that failed."""
    root = root or ROOT
    written, errors = [], []
    for slug in papers:
        readme = paper_dir(slug, root) / "README.md"
        try:
            text = replace_block(
                readme.read_text(encoding="utf-8"), PAPER_BLOCK, render_paper_block(slug, root), str(readme)
            )
        except ResultsError as err:
            errors.append(str(err))
            continue
        readme.write_text(text, encoding="utf-8")
        written.append(readme)
    top = root / "README.md"
    body = render_papers_table(root, scale)
    top.write_text(
        replace_block(top.read_text(encoding="utf-8"), PAPERS_TABLE, body, str(top)), encoding="utf-8"
    )
    if errors:
        raise ResultsError("\n".join(errors))
    return [*written, top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    tables = sub.add_parser("tables", help="rewrite the generated README blocks (the default command)")
    tables.add_argument("--paper", help=f"one of: {', '.join(PAPERS)} (default: all)")
    tables.add_argument(
        "--scale", default="toy", help="whose claims the top README's table shows (default toy)"
    )
    diff = sub.add_parser("diff", help="print one paper's results, claims and published rows")
    diff.add_argument("paper", help=f"one of: {', '.join(PAPERS)}")
    diff.add_argument("--scale", default="toy", help=f"one of: {', '.join(SCALES)} (default toy)")
    diff.add_argument(
        "--tolerance", type=float, default=1.0, help="absolute, small/paper scale (default 1.0)"
    )
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] or ["tables"])
    try:
        if args.scale not in SCALES:
            raise ResultsError(f"unknown scale {args.scale!r}; valid: {', '.join(SCALES)}")
        if args.command == "diff":
            paper_dir(args.paper)
            print(render_paper_block(args.paper, scales=[args.scale], tolerance=args.tolerance))
            return 0
        papers = [args.paper] if args.paper else list(PAPERS)
        for slug in papers:
            paper_dir(slug)
        for path in write_tables(papers, scale=args.scale):
            print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    except (ResultsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
