"""MCC-KD end to end: `python -m common.reproduce mcckd --scale toy|small|paper`.

What the recipe does (spec `../shared/papers/mcckd.md`):
1. teacher rationales, K per training question (toy: sampled from the toy teacher at T = 1.3; cached,
   resumable);
2. correctness filter (last number = gold), release Jaccard diversity filter (0.8, whitespace sets), the
   common answer sentence "Therefore, the answer is N ." and the answer-token span of every rationale;
3. students: CoT-KD (CE on one random rationale per question, twice the questions per step) and MCC-KD
   (CE on two rationales + alpha * bidirectional answer-span KL), the same number of rationale sequences
   per step, best checkpoint by validation accuracy;
4. alpha x T sweep of MCC-KD on the validation split (seed 0), then both arms on every seed; accuracy on
   the ID test split and the OOD split (one more arithmetic line), strict and flexible extractors, and the
   mechanism diagnostic (answer KL across two rationales of held-out questions).

How it departs from the paper / release (README "Deviations"): toy students are fine-tuned in full with
lr 1e-3 (release: LoRA, Adam 1e-5); a rationale pair is drawn per question (release: one pair index per
mini-batch); the toy teacher is a 0.97M-parameter model, not an LLM. small/paper run through `scaled.py` (GPU).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from common.results import write_results
from papers.mcckd.config import get_config
from papers.mcckd.toy import run_toy

SLUG = "mcckd"


def toy_rows(arms: list[dict]) -> list[dict]:
    """One row per arm, seed and metric (common.results toy naming)."""
    rows = []
    for m in arms:
        base = {
            "table": "toy",
            "setting": f"arith seed {m['seed']}",
            "model": "tiny-student",
            "method": m["method"],
        }
        for bench in ("toy-arith", "toy-arith-ood"):
            rows.append(
                {
                    **base,
                    "benchmark": bench,
                    "metric": "accuracy",
                    "value": round(100 * m[bench]["strict"], 2),
                }
            )
            rows.append(
                {
                    **base,
                    "benchmark": bench,
                    "metric": "accuracy (flexible)",
                    "value": round(100 * m[bench]["flexible"], 2),
                }
            )
        rows.append(
            {
                **base,
                "benchmark": "toy-arith",
                "metric": "answer KL across rationales",
                "value": round(m["answer_kl"], 5),
            }
        )
    return rows


def summary(arms: list[dict]) -> dict:
    """Mean and standard deviation over seeds per method and metric, and per-seed wins of MCC-KD."""
    out = {}
    for method in ("CoT-KD", "MCC-KD"):
        ms = [m for m in arms if m["method"] == method]
        for key in ("toy-arith", "toy-arith-ood"):
            vals = [100 * m[key]["strict"] for m in ms]
            out[f"{method} {key}"] = (round(statistics.mean(vals), 2), round(statistics.pstdev(vals), 2))
        kls = [m["answer_kl"] for m in ms]
        out[f"{method} answer_kl"] = (round(statistics.mean(kls), 5), round(statistics.pstdev(kls), 5))
    by_seed = {(m["method"], m["seed"]): m for m in arms}
    seeds = sorted({m["seed"] for m in arms})
    for key in ("toy-arith", "toy-arith-ood"):
        out[f"MCC-KD wins {key}"] = sum(
            by_seed[("MCC-KD", s)][key]["strict"] > by_seed[("CoT-KD", s)][key]["strict"] for s in seeds
        )
    return out


def reproduce(scale: str = "toy", force: bool = False, data_dir: str | None = None) -> Path:
    cfg = get_config(scale)
    if scale != "toy":  # small / paper: teacher rationales, students, ID/OOD evaluation (scaled.py)
        from common.data import DataError
        from common.models import ModelNotFoundError
        from papers.mcckd.rationales import TooFewRationales
        from papers.mcckd.scaled import reproduce_scaled
        from papers.mcckd.scaled_data import MissingTrainData

        try:
            return reproduce_scaled(cfg, force=force, data_dir=data_dir)
        except (MissingTrainData, TooFewRationales, DataError, ModelNotFoundError) as err:
            raise SystemExit(f"mcckd {scale}: {str(err).splitlines()[0]}") from None
    torch.set_num_threads(cfg.toy.torch_threads)
    start = time.perf_counter()
    out = run_toy(cfg, force)
    rows = toy_rows(out["arms"])
    return write_results(
        SLUG,
        scale,
        rows,
        seeds=list(cfg.seeds),
        config=asdict(cfg),
        wall_time_s=time.perf_counter() - start,
        grader="strict: release last-line last-number; flexible: HEAD GSM8KEvaluator (papers/mcckd/rationales.py)",
        sampling={"eval": "greedy", "teacher": asdict(cfg.teacher)},
        extra={
            "data_stats": out["data_stats"],
            "sweep_on_validation": [
                {k: m[k] for k in ("alpha", "temperature", "validation", "best_step")} for m in out["sweep"]
            ],
            "chosen": out["chosen"],
            "summary": summary(out["arms"]),
            "arms": out["arms"],
        },
    )


def main(argv: list[str] | None = None) -> int:
    """A toy variant outside results/: other steps / alpha grid; prints and saves the summary JSON."""
    import argparse
    import json
    from dataclasses import replace

    parser = argparse.ArgumentParser(description="MCC-KD toy variant (results go to --out, not results/toy)")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per arm (toy preset: 200)")
    parser.add_argument(
        "--sweep-alpha", type=float, nargs="+", default=[0.01, 0.1], help="alpha grid (validation)"
    )
    parser.add_argument("--out", default="runs/mcckd/toy-variant.json")
    args = parser.parse_args(argv)
    cfg = get_config("toy", steps=args.steps)
    cfg = replace(cfg, toy=replace(cfg.toy, sweep_alpha=tuple(args.sweep_alpha)))
    torch.set_num_threads(cfg.toy.torch_threads)
    start = time.perf_counter()
    out = run_toy(cfg)
    result = {
        "steps": args.steps,
        "sweep_on_validation": [
            {k: m[k] for k in ("alpha", "temperature", "validation")} for m in out["sweep"]
        ],
        "chosen": out["chosen"],
        "summary": summary(out["arms"]),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
