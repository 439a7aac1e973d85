"""Real-model MCC-KD on CPU: SmolLM2-135M-Instruct + LoRA on the released SVAMP teacher rationales.

    python -m papers.mcckd.real_svamp                       # both arms, ~1 h+ on 2 idle cores (not run here)
    python -m papers.mcckd.real_svamp --steps 20 --limit-dev 10 --limit-test 10 --max-new-tokens 64   # smoke

Data: `../shared/data/mcckd/SVAMP/train.json` (700 questions x 10 raw rationales) -> correctness filter
-> release Jaccard filter -> K = 3 -> "Therefore, the answer is N ." -> answer-token spans (SmolLM2
tokenizer); prompt = question + "\\n" (release format, no template). Students: LoRA r = alpha = 64 on every
linear layer (release: effective scale 1), Adam (AdamW, decay 0), constant lr; CoT-KD = one random
rationale per question at twice the questions per step; best checkpoint by SVAMP dev accuracy (strict),
then SVAMP test (150), strict and flexible. Writes one JSON with both arms' metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common.data import load_rows
from common.models import add_lora, load_causal_lm, load_tokenizer, smollm2_dir
from common.results import ROOT
from common.train import TrainConfig
from papers.mcckd.data import DATASETS, build_records, encode_records, svamp_prompt
from papers.mcckd.distill import (
    accuracy,
    ce_loss_fn,
    greedy_texts,
    mcckd_loss_fn,
    pair_items,
    single_items,
    train_and_select,
)

SHARED = ROOT / ".." / "shared" / "data"


def truncate(example: dict, max_len: int) -> dict:
    """Release: the sequence is cut to max_seq_len; a span past it is excluded from the KL (mcckd_loss)."""
    return {**example, "input_ids": example["input_ids"][:max_len], "labels": example["labels"][:max_len]}


def run(args: argparse.Namespace) -> dict:
    tok = load_tokenizer(smollm2_dir())
    records, stats = build_records(load_rows(DATASETS["mcckd-svamp"], "train", args.data_dir), k=args.k)
    questions = encode_records(tok, records, svamp_prompt, args.answer_span)
    questions = [[truncate(ex, args.max_seq_len) for ex in q] for q in questions]
    dev = load_rows(DATASETS["mcckd-svamp"], "dev", args.data_dir)[: args.limit_dev]
    test = load_rows(DATASETS["mcckd-svamp"], "test", args.data_dir)[: args.limit_test]
    results = {"data_stats": stats, "args": vars(args), "arms": []}
    for method in ["CoT-KD", "MCC-KD"] if args.method == "both" else [args.method]:
        torch.manual_seed(args.seed)
        model = add_lora(load_causal_lm(smollm2_dir(), dtype=torch.float32), r=args.lora_r, alpha=args.lora_r)
        if method == "MCC-KD":
            items = pair_items(questions, args.replicas, args.seed)
            loss_fn, batch = (
                mcckd_loss_fn(args.alpha, args.temperature, max_seq_len=args.max_seq_len),
                args.questions,
            )
        else:
            items, loss_fn, batch = (
                single_items(questions, args.replicas, args.seed),
                ce_loss_fn(),
                2 * args.questions,
            )

        def dev_score(m) -> float:
            texts = greedy_texts(m, tok, [svamp_prompt(r["question"]) for r in dev], args.max_new_tokens)
            return accuracy(texts, [r["answer"] for r in dev])["strict"]

        start = time.perf_counter()
        config = TrainConfig(
            output_dir=str(Path(args.out).with_suffix("") / method),
            max_steps=args.steps,
            batch_size=batch,
            lr=args.lr,
            lr_schedule="constant",
            seed=args.seed,
        )
        selection = train_and_select(
            model, items, loss_fn, config, tok.pad_token_id, dev_score, args.eval_every
        )
        texts = greedy_texts(model, tok, [svamp_prompt(r["question"]) for r in test], args.max_new_tokens)
        arm = {"method": method, **selection, "svamp_test": accuracy(texts, [r["answer"] for r in test])}
        arm["wall_s"] = round(time.perf_counter() - start, 1)
        results["arms"].append(arm)
        print(json.dumps(arm), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="both", choices=["both", "CoT-KD", "MCC-KD"])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per arm")
    parser.add_argument("--questions", type=int, default=4, help="MCC-KD questions per step (CoT-KD: twice)")
    parser.add_argument("--lr", type=float, default=2e-4, help="ours (release 1e-5 for 7B over 12 epochs)")
    parser.add_argument("--alpha", type=float, default=0.1, help="KL weight (release script 0.01, HEAD 0.1)")
    parser.add_argument("--temperature", type=float, default=1.3, help="KL temperature (release script 1.3)")
    parser.add_argument("--k", type=int, default=3, help="rationales kept per question after the filters")
    parser.add_argument(
        "--answer-span", default="answer_tokens", choices=["answer_tokens", "answer_sentence"]
    )
    parser.add_argument("--lora-r", type=int, default=64, help="LoRA rank (= alpha: release scale 1)")
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="greedy tokens at evaluation")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=4, help="up-front draws of the question set")
    parser.add_argument("--limit-dev", type=int, default=150)
    parser.add_argument("--limit-test", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir", default=str(SHARED), help="mirror holding mcckd/SVAMP/{train,dev,test}.json"
    )
    parser.add_argument("--out", default="runs/mcckd/real_svamp/results.json")
    args = parser.parse_args(argv)
    if args.eval_every > args.steps:
        parser.error(f"--eval-every {args.eval_every} is larger than --steps {args.steps}")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
