"""Evaluate a model on SocialBench: `python -m papers.socialbench.evaluate --model <name|path|endpoint>`.

    --model smollm2-135m-instruct --backend vllm        a local chat model (short name, folder, hub id)
    --model http://127.0.0.1:8000/v1                    an OpenAI-compatible server (e.g. `vllm serve`)
    --model openai:gpt-4-turbo                          the OpenAI API ($OPENAI_API_KEY, $OPENAI_BASE_URL)
    --model policy:oracle | policy:always-A | policy:random-letter     the evaluator's acceptance test
    --regrade RUN_DIR                                   re-score saved outputs, no model

A run directory (default runs/socialbench/<model>) holds `run.json` (model settings, columns),
`outputs.jsonl` (one raw output per item, with its gold label and category, so the run can be regraded
without the data) and `scores.json` (per column: official defined-only score, strict score, parse-failure
rate, failed calls; per category; per language; Avg). Outputs are appended chunk by chunk, so a killed
run resumes where it stopped; items whose call failed are retried on the next run and never scored.
Exit status 1 when items are still failed after the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from tqdm.auto import tqdm

from papers.socialbench.chat_models import (
    POLICIES,
    Answerer,
    OpenAIChatModel,
    PolicyModel,
    local_chat_model,
)
from papers.socialbench.prompts import COLUMNS, column_of, normalize_category
from papers.socialbench.scoring import Graded, format_table, score_item, summarize

ROOT = Path(__file__).resolve().parents[2]
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
CATEGORY_GROUPS = {"sa": ("sa-style", "sa-know"), "ep": ("ep-situ", "ep-emo"), "cm": ("cm-short", "cm-long")}
CATEGORY_GROUPS["sp"] = ("sp-pos", "sp-neu", "sp-neg")


class RunError(ValueError):
    """A run directory that cannot be resumed or read (file and problem named)."""


def parse_categories(spec: str | None) -> list[str] | None:
    """ "ep,sp-neg" -> table columns; None or "all" -> None (every column)."""
    if spec is None or spec == "all":
        return None
    columns: list[str] = []
    for key in (k.strip() for k in spec.split(",") if k.strip()):
        keys = CATEGORY_GROUPS.get(key, (key,))
        for k in keys:
            if k not in CATEGORY_KEYS:
                valid = ", ".join([*CATEGORY_KEYS, *CATEGORY_GROUPS, "all"])
                raise ValueError(f"unknown category {key!r}; valid: {valid}")
            if CATEGORY_KEYS[k] not in columns:
                columns.append(CATEGORY_KEYS[k])
    return [c for c in COLUMNS if c in columns]


def read_outputs(path: Path) -> dict[str, dict]:
    """id -> latest record of outputs.jsonl. A torn last line (a kill mid-write) is cut off the file."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    records: dict[str, dict] = {}
    lines = raw.split(b"\n")
    offset = 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "id" not in record or "output" not in record:
                    raise ValueError("needs 'id' and 'output'")
            except ValueError as err:
                if last:  # torn tail: drop it so the next append starts on a clean line
                    with open(path, "r+b") as f:
                        f.truncate(offset)
                    break
                raise RunError(f"{path} line {number}: bad record ({err})") from None
            records[record["id"]] = record
        offset += len(line) + 1
    return records


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def grade(records: dict[str, dict]) -> list[Graded]:
    """Score every saved output from its own record (category, lang, label): no data files needed."""
    graded = []
    for r in records.values():
        item = {"label": r["label"], "meta": {"category": r["category"]}}
        failed = r.get("error") is not None
        score = None if failed else score_item(item, r["output"])
        graded.append(Graded(r["column"], r["category"], r["lang"], score, failed))
    return graded


def regrade(out_dir: str | Path) -> dict:
    """Recompute scores.json from outputs.jsonl and return the summary."""
    out_dir = Path(out_dir)
    records = read_outputs(out_dir / "outputs.jsonl")
    if not records:
        raise RunError(f"{out_dir / 'outputs.jsonl'}: no outputs to grade")
    summary = summarize(grade(records))
    _atomic_json(out_dir / "scores.json", summary)
    return summary


def evaluate(
    model: Answerer,
    items: list[dict],
    out_dir: str | Path,
    *,
    chunk_size: int = 64,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Answer every item not yet answered in `out_dir`, save the raw outputs, grade them all.

    A run directory belongs to one model setting: resuming with other settings stops with an error
    (use another directory or `force=True`, which starts over).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file, outputs = out_dir / "run.json", out_dir / "outputs.jsonl"
    settings = model.settings()
    if force:
        outputs.unlink(missing_ok=True)
    elif run_file.exists() and outputs.exists():
        saved = json.loads(run_file.read_text(encoding="utf-8")).get("model")
        if saved != settings:
            raise RunError(
                f"{run_file}: this directory holds outputs of other model settings ({saved}); "
                "pass another --out or --force to start over"
            )
    _atomic_json(run_file, {"model": settings, "n_items": len(items)})
    done = {k for k, r in read_outputs(outputs).items() if r.get("error") is None}
    todo = [it for it in items if it["id"] not in done]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"socialbench {model.name}")
    bar.disable = not progress
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        replies = model.answer(chunk)
        _append(outputs, [_record(it, rep) for it, rep in zip(chunk, replies, strict=True)])
        bar.update(len(chunk))
    bar.close()
    wanted = {it["id"] for it in items}
    records = {k: r for k, r in read_outputs(outputs).items() if k in wanted}
    summary = summarize(grade(records))
    _atomic_json(out_dir / "scores.json", summary)
    return summary


def _record(item: dict, reply) -> dict:
    return {
        "id": item["id"],
        "category": normalize_category(item),
        "column": column_of(item),
        "lang": item["meta"].get("lang", "zh"),
        "label": item["label"],
        "output": reply.text,
        "error": reply.error,
        "attempts": reply.attempts,
    }


def build_model(args: argparse.Namespace) -> Answerer:
    """--model -> an Answerer: policy:*, an http(s) endpoint, openai:<model>, or a local model."""
    spec = args.model
    if spec.startswith("policy:"):
        return PolicyModel(spec.split(":", 1)[1], seed=args.seed)
    decoding = dict(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        system_prompt=args.system_prompt,
        seed=args.seed,
    )
    endpoint = dict(
        decoding,
        timeout_s=args.timeout,
        max_retries=args.retries,
        backoff_s=args.backoff,
        concurrency=args.concurrency,
    )
    if spec.startswith(("http://", "https://")):
        return OpenAIChatModel(spec, model=args.served_model_name, **endpoint)
    if spec.startswith("openai:"):
        return OpenAIChatModel(os.environ.get("OPENAI_BASE_URL"), model=spec.split(":", 1)[1], **endpoint)
    return local_chat_model(spec, backend=args.backend, max_prompt_tokens=args.max_prompt_tokens, **decoding)


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m papers.socialbench.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", help="short name, folder, hub id, http(s)://endpoint/v1, openai:<m>, policy:<p>"
    )
    p.add_argument(
        "--categories", help="comma list of " + ", ".join([*CATEGORY_KEYS, *CATEGORY_GROUPS, "all"])
    )
    p.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"), help="local models only")
    p.add_argument("--out", help="run directory (default runs/socialbench/<model>)")
    p.add_argument("--data-dir", help="mirror dir holding socialbench/<file>.json (default: cache/download)")
    p.add_argument("--max-tokens", type=int, default=512, help="new tokens per reply (spec 'Setup': 512)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (spec 'Setup')")
    p.add_argument("--system-prompt", help="system message (default none: the paper's is UNCONFIRMED)")
    p.add_argument("--max-prompt-tokens", type=int, help="local models: cut longer prompts from the left")
    p.add_argument("--served-model-name", help="endpoint: model name to send (default: first listed)")
    p.add_argument("--timeout", type=float, default=120.0, help="endpoint: seconds per request")
    p.add_argument("--retries", type=int, default=5, help="endpoint: retries per item (official: 5)")
    p.add_argument("--backoff", type=float, default=1.0, help="endpoint: first retry wait, doubling (s)")
    p.add_argument("--concurrency", type=int, default=8, help="endpoint: requests in flight")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="only the first N items of each column (smoke runs)")
    p.add_argument("--chunk-size", type=int, default=64, help="items per save (a kill loses at most one)")
    p.add_argument("--force", action="store_true", help="discard saved outputs and start over")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--regrade", metavar="RUN_DIR", help="re-score a run's outputs.jsonl; no model")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from common.models import ModelNotFoundError
    from papers.socialbench.data import load_items

    try:
        if args.regrade:
            print(format_table(regrade(args.regrade)))
            return 0
        if not args.model:
            print("error: --model is required (or --regrade RUN_DIR)", file=sys.stderr)
            return 2
        if args.model.startswith("policy:") and args.model.split(":", 1)[1] not in POLICIES:
            raise ValueError(f"unknown policy {args.model!r}; valid: policy:{', policy:'.join(POLICIES)}")
        columns = parse_categories(args.categories)
        items = limit_per_column(load_items(columns, args.data_dir), args.limit)
        model = build_model(args)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", args.model.rstrip("/").split("/")[-1] or "model")
        out = Path(args.out) if args.out else ROOT / "runs" / "socialbench" / slug
        print(f"socialbench: {len(items)} items, model {args.model}, outputs in {out}", file=sys.stderr)
        summary = evaluate(
            model, items, out, chunk_size=args.chunk_size, progress=not args.no_progress, force=args.force
        )
    except (ValueError, OSError, ModelNotFoundError) as err:  # data, run and item errors are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(summary))
    if summary["n_failed"]:
        print(f"{summary['n_failed']} items failed after every retry; rerun to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
