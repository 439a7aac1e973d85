"""Pairwise accuracy of a reward model on the Q-RM repo's held-out preference pairs (GSM8K 787, MATH 2,291).

Spec `shared/papers/qrm.md`, "Evaluation": a pair counts as right when the mean token score of the chosen
response is above the rejected one's (`--reduce mean`, Q-RM); `--reduce last` compares last-token scores
(ORM). Ties count as wrong. The model is a saved `TokenScorer` folder, or any HF causal LM (name or path)
given a fresh randomly initialised head: a chance-level sanity check (about 0.5 expected).

    python -m papers.qrm.pairwise runs/qrm/toy/qrm_rm --dataset both --limit 100 --out pairwise.json

Prompts are the pairs' `instruction`s, wrapped in the tokenizer's chat template when it has one (as the
official verifier does; `--no-chat-template` to feed them raw); responses end with EOS; over `--max-len`
the response is cut from the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common.data import DATA_DIR_ENV, DataError, load_rows, resolve_data_dir
from common.models import ModelNotFoundError, load_tokenizer
from common.results import collect_provenance
from papers.qrm.data import DATASETS as QRM_DATASETS
from papers.qrm.reward_models import REDUCES, SCORER_FILE, TokenScorer, pairwise_margins

DATASETS = {"gsm8k": "qrm-gsm8k-pairwise", "math": "qrm-math-pairwise"}
EXPECTED_ROWS = {"gsm8k": 787, "math": 2291}  # shared/data/qrm/SOURCE.md
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def load_pairs(dataset: str, data_dir: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """{prompt, chosen, rejected} rows of one held-out pair file (the first `limit` of them)."""
    rows = load_rows(QRM_DATASETS[DATASETS[dataset]], "test", data_dir)
    pairs = [{"prompt": r["question"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    return pairs[:limit] if limit is not None else pairs


def load_reward_model(model: str, seed: int = 0) -> tuple[TokenScorer, object, str]:
    """(scorer, tokenizer, kind): a saved TokenScorer folder, or an HF model with a fresh head."""
    path = Path(model).expanduser()
    if (path / SCORER_FILE).exists():
        scorer = TokenScorer.load(path)
        has_tok = (path / "tokenizer_config.json").exists()
        return scorer, load_tokenizer(path if has_tok else scorer.source), "token_scorer"
    return TokenScorer.from_backbone(model, seed=seed), load_tokenizer(model), "fresh_head"


def evaluate(
    scorer: TokenScorer,
    tokenizer,
    pairs: list[dict],
    reduce: str = "mean",
    batch_size: int = 8,
    max_len: int = 1024,
    chat_template: bool = True,
    progress: bool = False,
) -> dict:
    """{"accuracy", "n", "mean_margin"} of one pair set."""
    margins = pairwise_margins(
        scorer, tokenizer, pairs, reduce, batch_size, progress, max_len=max_len, chat_template=chat_template
    )
    return {
        "accuracy": sum(m > 0 for m in margins) / len(margins),
        "n": len(margins),
        "mean_margin": sum(margins) / len(margins),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m papers.qrm.pairwise",
        description="Pairwise accuracy of a reward model on the Q-RM held-out pairs (GSM8K 787, MATH 2,291).",
    )
    parser.add_argument(
        "model", help="a saved TokenScorer folder, or an HF model name/path (fresh head: chance check)"
    )
    parser.add_argument(
        "--dataset", choices=[*DATASETS, "both"], default="both", help="pair set (default both)"
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N pairs of each set")
    parser.add_argument(
        "--reduce", choices=REDUCES, default="mean", help="mean token score (Q-RM, default) or last (ORM)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (default 8)")
    parser.add_argument("--max-len", type=int, default=1024, help="tokens per sequence (spec: 1024)")
    parser.add_argument(
        "--no-chat-template", action="store_true", help="feed the instruction raw, not in the chat template"
    )
    parser.add_argument(
        "--data-dir",
        help=f"mirror root holding qrm/ (default ${DATA_DIR_ENV}, else ../shared/data beside the repo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a fresh head (default 0)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available"
    )
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print("pairwise: --limit must be >= 1", file=sys.stderr)
        return 2
    data_dir = args.data_dir
    if data_dir is None and resolve_data_dir() is None and SHARED_DATA.is_dir():
        data_dir = SHARED_DATA.resolve()
    start = time.perf_counter()
    try:
        names = list(DATASETS) if args.dataset == "both" else [args.dataset]
        sets = {name: load_pairs(name, data_dir, args.limit) for name in names}
        scorer, tok, kind = load_reward_model(args.model, args.seed)
    except (DataError, ModelNotFoundError, FileNotFoundError, OSError, ValueError) as err:
        print(f"pairwise: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    scorer.to(args.device)
    chat = not args.no_chat_template and bool(getattr(tok, "chat_template", None))
    results = {}
    for name, pairs in sets.items():
        results[name] = evaluate(scorer, tok, pairs, args.reduce, args.batch_size, args.max_len, chat, True)
        print(f"{name}: accuracy {results[name]['accuracy']:.4f} on {results[name]['n']} pairs")
    report = collect_provenance(
        model=str(args.model),
        model_kind=kind,
        reduce=args.reduce,
        chat_template=chat,
        max_len=args.max_len,
        limit=args.limit,
        data_dir=str(data_dir) if data_dir else None,
        results=results,
        wall_time_s=round(time.perf_counter() - start, 2),
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
