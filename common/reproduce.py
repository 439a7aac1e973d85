"""Run one paper end to end: `python -m common.reproduce <slug> --scale toy|small|paper`.

Imports `papers/<slug>/pipeline.py` and calls its `reproduce(scale, force=..., data_dir=...)`, which
runs every stage (each resumable: rerunning after a kill picks up where it stopped), writes
`papers/<slug>/results/<scale>/`, and then prints published | reproduced | delta | claim holds.
`make reproduce PAPER=<slug> SCALE=<scale>` is the same command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from common.results import PAPERS, ROOT, SCALES

EXIT_USAGE, EXIT_NO_PIPELINE = 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paper", help=f"one of: {', '.join(PAPERS)}")
    parser.add_argument(
        "--scale", default="toy", help=f"one of: {', '.join(SCALES)} (default toy: CPU, minutes)"
    )
    parser.add_argument("--force", action="store_true", help="rerun every stage even when its output exists")
    parser.add_argument(
        "--data-dir", help="read datasets from this local mirror (same layout as the hub ids)"
    )
    args = parser.parse_args(argv)
    if args.paper not in PAPERS:
        print(f"error: unknown paper {args.paper!r}; valid: {', '.join(PAPERS)}", file=sys.stderr)
        return EXIT_USAGE
    if args.scale not in SCALES:
        print(f"error: unknown scale {args.scale!r}; valid: {', '.join(SCALES)}", file=sys.stderr)
        return EXIT_USAGE
    if not (ROOT / "papers" / args.paper / "pipeline.py").exists():
        print(
            f"papers/{args.paper}: no pipeline yet - the claim and published table are in "
            f"papers/{args.paper}/README.md",
            file=sys.stderr,
        )
        return EXIT_NO_PIPELINE
    if args.data_dir:
        os.environ["REPRO_DATA_DIR"] = os.path.abspath(args.data_dir)
    pipeline = importlib.import_module(f"papers.{args.paper}.pipeline")
    out = pipeline.reproduce(args.scale, force=args.force, data_dir=args.data_dir)
    from common.tables import render_paper_block, write_tables

    write_tables([args.paper])
    print(f"results in {out}\n")
    print(render_paper_block(args.paper, scales=[args.scale]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
