"""Run every paper's reproduction in turn: `python -m common.reproduce_all [--scale toy] [--papers a,b]`.

Each paper runs as its own `python -m common.reproduce <slug> --scale <scale>` process (so one paper's
threads, workers and memory never leak into the next; a failure does not stop the others), with one
progress line per paper and, at the end, a table of exit status and wall time per paper and in all. The
table is also written as JSON (`--summary`, default `runs/reproduce_all-<scale>.json`). The exit status
is 0 when every paper exited 0, else 1. `make reproduce-all [SCALE=toy]` is the same command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from common.reproduce import EXIT_NO_PIPELINE, _pipeline
from common.results import PAPERS, SCALES
from common.stages import atomic_write_json, runs_dir

STATUS = {0: "ok", EXIT_NO_PIPELINE: "no pipeline"}


def reproduce_command(slug: str, scale: str) -> list[str]:
    return [sys.executable, "-m", "common.reproduce", slug, "--scale", scale]


def run_all(
    papers: Sequence[str],
    scale: str,
    command: Callable[[str, str], list[str]] | None = None,
    log_dir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Run `command(slug, scale)` for each paper in order; one row {paper, exit, status, wall_s, log} each.

    A paper's stdout and stderr go to `log_dir/<slug>-<scale>.log` (None: inherited, shown as it runs)."""
    command = command or reproduce_command
    rows = []
    for i, slug in enumerate(papers, 1):
        echo(f"[{i}/{len(papers)}] {slug} ({scale}) ...")
        log = None if log_dir is None else Path(log_dir) / f"{slug}-{scale}.log"
        start = time.perf_counter()
        if log is None:
            code = subprocess.run(command(slug, scale)).returncode
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as out:
                code = subprocess.run(command(slug, scale), stdout=out, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - start
        status = STATUS.get(code, f"failed (exit {code})")
        rows.append(
            {"paper": slug, "exit": code, "status": status, "wall_s": round(wall, 1), "log": log and str(log)}
        )
        echo(f"[{i}/{len(papers)}] {slug}: {status} in {_minutes(wall)}")
    return rows


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def summary_table(rows: list[dict]) -> str:
    """Markdown: paper | status | wall time, and the total."""
    lines = ["| paper | status | wall time |", "|---|---|---|"]
    lines += [f"| {r['paper']} | {r['status']} | {_minutes(r['wall_s'])} |" for r in rows]
    lines.append(
        f"| all | {sum(r['exit'] == 0 for r in rows)}/{len(rows)} ok | {_minutes(sum(r['wall_s'] for r in rows))} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.reproduce_all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scale", default="toy", choices=SCALES, help="the preset of every paper (default toy)"
    )
    parser.add_argument(
        "--papers",
        help=f"comma-separated subset, in order (default: every paper with a pipeline: {', '.join(PAPERS)})",
    )
    parser.add_argument(
        "--log-dir", help="write each paper's output to DIR/<slug>-<scale>.log instead of the terminal"
    )
    parser.add_argument(
        "--summary", help="where the JSON summary goes (default runs/reproduce_all-<scale>.json)"
    )
    args = parser.parse_args(argv)
    if args.papers:
        papers = [p.strip() for p in args.papers.split(",") if p.strip()]
        unknown = [p for p in papers if p not in PAPERS]
        if unknown or not papers:
            print(
                f"error: unknown paper {unknown[0] if unknown else ''!r}; valid: {', '.join(PAPERS)}",
                file=sys.stderr,
            )
            return 2
    else:
        papers = [p for p in PAPERS if _pipeline(p) is not None]
    start = time.perf_counter()
    rows = run_all(papers, args.scale, log_dir=Path(args.log_dir) if args.log_dir else None)
    summary = Path(args.summary) if args.summary else runs_dir() / f"reproduce_all-{args.scale}.json"
    atomic_write_json(
        summary, {"scale": args.scale, "wall_s": round(time.perf_counter() - start, 1), "papers": rows}
    )
    print("\n" + summary_table(rows) + f"\n\nsummary: {summary}")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
