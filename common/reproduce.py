"""Run one paper end to end: `python -m common.reproduce <slug> --scale toy|small|paper [--set key=value]`.

Builds the paper's resolved config, `apply_overrides(papers.<slug>.config.get_config(scale), sets)`,
logs it (one `key.path = value` a line), and calls `papers.<slug>.pipeline.reproduce(cfg, force=...,
data_dir=...)`, which runs every stage (each resumable: rerunning after a kill picks up where it
stopped) and writes `papers/<slug>/results/<scale>/` with the config in its provenance. Then the
README tables are regenerated and published | reproduced | delta | claim holds is printed.
`make reproduce PAPER=<slug> SCALE=<scale> SET="a.b=1 c=2"` is the same command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from common.config import ConfigError, apply_overrides, format_config
from common.data import DATA_DIR_ENV, DataError, resolve_data_dir
from common.provenance import mark_run_start
from common.results import PAPERS, SCALES, ResultsError, results_redirected
from common.stages import StageError, runs_dir
from common.tables import render_paper_block, write_tables

log = logging.getLogger(__name__)
EXIT_USAGE, EXIT_NO_PIPELINE, EXIT_RESULTS = 2, 3, 4
LOG_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"

EXAMPLES = """\
examples:
  python -m common.reproduce qrm                                  # toy scale, CPU, minutes
  python -m common.reproduce qrm --scale small --data-dir ../shared/data
  python -m common.reproduce mcckd --set seeds=[0] --set data.limit=30
  python -m common.reproduce qrm --set rm.lr=3e-4 --force         # rerun every stage

A --set key is a dotted path into the paper's config (papers/<slug>/config.py); the value is read as
YAML (3e-4, true, null, [0, 1], text) and checked against the field's type. A bad key, value, paper
or scale stops with one line naming it and what is valid (exit 2); so does a --data-dir that is not a
directory, and a bad file, row, model or cached stage output met during the run.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m common.reproduce",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paper", help=f"the paper's folder under papers/: one of {', '.join(PAPERS)}")
    parser.add_argument(
        "--scale",
        default="toy",
        help=f"the preset to start from: one of {', '.join(SCALES)} "
        "(default toy: CPU, minutes; small: one GPU; paper: the published setting)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one config field, e.g. --set rm.lr=3e-4 (repeatable; applied in order)",
    )
    parser.add_argument(
        "--force", action="store_true", help="rerun every stage even when its cached output exists"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="read datasets from this local mirror (same layout as the hub ids), e.g. ../shared/data",
    )
    return parser


def configure_logging(level: int = logging.INFO) -> None:
    """INFO to stderr, `HH:MM:SS L module: message`; quiets the chatty HTTP and hub loggers."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class UsageError(ValueError):
    """A bad paper, scale or --set; the message is the one line the user sees."""


def check_choices(slug: str, scale: str) -> None:
    if slug not in PAPERS:
        raise UsageError(f"unknown paper {slug!r}; valid: {', '.join(PAPERS)}")
    if scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")


def resolve_config(slug: str, scale: str, sets: Sequence[str]):
    """`apply_overrides(papers.<slug>.config.get_config(scale), sets)`, or `UsageError` in one line."""
    check_choices(slug, scale)
    config = importlib.import_module(f"papers.{slug}.config")
    try:
        cfg = config.get_config(scale)
    except (KeyError, ValueError) as err:  # a paper without this preset
        raise UsageError(f"papers/{slug}: no {scale!r} preset ({err})") from None
    try:
        return apply_overrides(cfg, sets)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def _has_pipeline(slug: str) -> bool:
    """Whether `papers.<slug>.pipeline` exists, found without importing it (a usage error should not wait
    for torch and transformers to load)."""
    name = f"papers.{slug}.pipeline"
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # papers.<slug> is not a package
        return False


def _pipeline(slug: str):
    """`papers.<slug>.pipeline`, or None when the paper has none yet."""
    name = f"papers.{slug}.pipeline"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name in (name, f"papers.{slug}"):
            return None
        raise


def report(slug: str, scale: str, out: Path) -> str:
    """Regenerate the README tables; return what `main` prints: where the results are and this
    paper's published | reproduced | delta | claim holds at `scale`. Results sent elsewhere
    (`$REPRO_RESULTS`) leave the READMEs, which show the committed results, as they are."""
    if results_redirected():
        return f"results in {out} (REPRO_RESULTS: README tables not regenerated)"
    write_tables([slug])
    return f"results in {out}\n\n{render_paper_block(slug, scales=[scale])}"


def input_errors() -> tuple[type[Exception], ...]:
    """Bad input met while a pipeline runs: the shared error classes, whose messages name the file / row /
    field / model / key. Anything else is a bug and keeps its traceback."""
    # imported here: transformers takes seconds to import, and a usage error need not wait for it
    from common.models import ModelNotFoundError

    return (ConfigError, DataError, ModelNotFoundError, StageError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_choices(args.paper, args.scale)
        if not _has_pipeline(args.paper):
            print(
                f"papers/{args.paper}: no pipeline yet - the claim and published table are in "
                f"papers/{args.paper}/README.md",
                file=sys.stderr,
            )
            return EXIT_NO_PIPELINE
        cfg = resolve_config(args.paper, args.scale, args.sets)
        if args.data_dir is not None:
            resolve_data_dir(args.data_dir)  # not a directory: say so now, not after the first stages
    except (UsageError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging()
    log.info("%s at %s scale, resolved config:\n%s", args.paper, args.scale, format_config(cfg))
    if args.data_dir:
        os.environ[DATA_DIR_ENV] = os.path.abspath(args.data_dir)
    pipeline = _pipeline(args.paper)
    # provenance names the code the run started from (not HEAD when it ends) and whether cached stages
    # were there to reuse (then the wall time is not the whole recipe's)
    mark_run_start(runs_dir() / args.paper / args.scale, force=args.force)
    try:
        out = pipeline.reproduce(cfg, force=args.force, data_dir=args.data_dir)
    except input_errors() as err:
        print(f"error: {args.paper} {args.scale}: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(report(args.paper, args.scale, Path(out)))
    except ResultsError as err:  # e.g. rows in the wrong units: the results stay, the tables are refused
        print(f"error: results in {out}, but the tables were not rendered: {err}", file=sys.stderr)
        return EXIT_RESULTS
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
