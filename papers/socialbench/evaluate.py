"""Evaluate any model on SocialBench: `python -m papers.socialbench.evaluate --model <name|path|endpoint>`.

    --model smollm2-135m-instruct --backend vllm        a local chat model (short name, folder, hub id)
    --model http://127.0.0.1:8000/v1                    an OpenAI-compatible server (e.g. `vllm serve`)
    --model openai:gpt-4-turbo                          the OpenAI API ($OPENAI_API_KEY, $OPENAI_BASE_URL)
    --model policy:oracle | policy:always-A | policy:random-letter     the evaluator's acceptance test
    --regrade RUN_DIR                                   re-score saved outputs, no model

The same stage as `python -m common.reproduce socialbench` (`papers.socialbench.stages.evaluate`, models
built by `chat_models.make_model`); the run directory (default `$REPRO_RUNS/socialbench/<model>`) is
described there. Exit status 1 when items are still failed after the run (rerun to retry only those).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from common.models import ModelNotFoundError
from common.stages import StageError, runs_dir
from papers.socialbench.chat_models import POLICIES, make_model
from papers.socialbench.data import load_items
from papers.socialbench.prompts import COLUMNS
from papers.socialbench.scoring import format_table
from papers.socialbench.stages import evaluate, limit_per_column, regrade

CATEGORY_KEYS = {
    "sa-style": "SA Style",
    "sa-know": "SA Know",
    "ep-situ": "EP Situ.",
    "ep-emo": "EP Emo.",
    "cm-short": "CM Short",
    "cm-long": "CM Long",
    "sp-pos": "SP Pos.",
    "sp-neu": "SP Neu.",
    "sp-neg": "SP Neg.",
}
CATEGORY_GROUPS = {
    "sa": ("sa-style", "sa-know"),
    "ep": ("ep-situ", "ep-emo"),
    "cm": ("cm-short", "cm-long"),
    "sp": ("sp-pos", "sp-neu", "sp-neg"),
}


def parse_categories(spec: str | None) -> list[str] | None:
    """ "ep,sp-neg" -> table columns; None or "all" -> None (every column)."""
    if spec is None or spec == "all":
        return None
    columns: list[str] = []
    for key in (k.strip() for k in spec.split(",") if k.strip()):
        for k in CATEGORY_GROUPS.get(key, (key,)):
            if k not in CATEGORY_KEYS:
                valid = ", ".join([*CATEGORY_KEYS, *CATEGORY_GROUPS, "all"])
                raise ValueError(f"unknown category {key!r}; valid: {valid}")
            if CATEGORY_KEYS[k] not in columns:
                columns.append(CATEGORY_KEYS[k])
    return [c for c in COLUMNS if c in columns]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m papers.socialbench.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--model", help="short name, folder, hub id, http(s)://endpoint/v1[#model], openai:<m>, policy:<p>")
    add("--categories", help="comma list of " + ", ".join([*CATEGORY_KEYS, *CATEGORY_GROUPS, "all"]))
    add("--backend", default="auto", choices=("auto", "hf", "vllm"), help="local models only")
    add("--out", help="run directory (default $REPRO_RUNS/socialbench/<model>)")
    add("--data-dir", help="mirror holding socialbench/<file>.json (default ../shared/data, cache, download)")
    add("--max-tokens", type=int, default=512, help="new tokens per reply (spec 'Setup': 512)")
    add("--temperature", type=float, default=0.0, help="0 = greedy (spec 'Setup')")
    add("--system-prompt", help="system message (default none: the paper's is UNCONFIRMED)")
    add("--max-prompt-tokens", type=int, help="local models: cut longer prompts from the left")
    add("--served-model-name", help="endpoint: model name to send (default: first listed)")
    add("--timeout", type=float, default=120.0, help="endpoint: seconds per request")
    add("--retries", type=int, default=5, help="endpoint: the openai client's retries (official: 5)")
    add("--backoff", type=float, default=0.5, help="endpoint: seconds before the first retry, doubling")
    add("--concurrency", type=int, default=8, help="endpoint: requests in flight")
    add("--seed", type=int, default=0)
    add("--limit", type=int, help="only the first N items of each column (smoke runs)")
    add("--chunk-size", type=int, default=64, help="items per save (a kill loses at most one)")
    add("--force", action="store_true", help="discard saved outputs and start over")
    add("--no-progress", action="store_true")
    add("--regrade", metavar="RUN_DIR", help="re-score a run's outputs.jsonl; no model")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.regrade:
            print(format_table(regrade(args.regrade)))
            return 0
        if not args.model:
            print("error: --model is required (or --regrade RUN_DIR)", file=sys.stderr)
            return 2
        if args.model.startswith("policy:") and args.model.split(":", 1)[1] not in POLICIES:
            raise ValueError(f"unknown policy {args.model!r}; valid: policy:{', policy:'.join(POLICIES)}")
        items = limit_per_column(load_items(parse_categories(args.categories), args.data_dir), args.limit)
        model = make_model(
            args.model,
            backend=args.backend,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            system_prompt=args.system_prompt,
            seed=args.seed,
            max_prompt_tokens=args.max_prompt_tokens,
            served_model_name=args.served_model_name,
            timeout_s=args.timeout,
            max_retries=args.retries,
            backoff_s=args.backoff,
            concurrency=args.concurrency,
        )
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", args.model.rstrip("/").split("/")[-1] or "model")
        out = args.out or runs_dir() / "socialbench" / slug
        progress = not args.no_progress
        summary = evaluate(model, items, out, chunk_size=args.chunk_size, progress=progress, force=args.force)
    except (ValueError, OSError, StageError, ModelNotFoundError) as err:  # data/run/item errors: ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(summary))
    if summary["n_failed"]:
        print(
            f"error: {summary['n_failed']} items failed after every retry against {args.model}; "
            "rerun to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
