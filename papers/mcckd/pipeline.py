"""MCC-KD end to end, one driver for every scale: `python -m common.reproduce mcckd --scale toy|small|paper`.

What the recipe does (spec `../shared/papers/mcckd.md`), on the task of each training set
(`data.toy_task`: the common/synthetic arithmetic world; `data.real_task`: GSM8K / SVAMP / ASDiv / CSQA):
1. teacher rationales, K per training question (toy: sampled from the toy teacher at T = 1.3; SVAMP:
   the 10 released ones; else the preset's teacher through common.generation or an OpenAI-compatible
   endpoint through common.chat), cached and resumable;
2. correctness filter (last number = gold; CSQA: the letter), release Jaccard diversity filter (0.8,
   whitespace sets), the common answer sentence "Therefore, the answer is N ." and the answer-token span
   of every rationale (student tokenizer);
3. students: CoT-KD (CE on one random rationale per question, twice the questions per step) and MCC-KD
   (CE on two rationales + alpha * bidirectional answer-span KL), the same number of rationale sequences
   per step, best checkpoint by dev accuracy (strict);
4. the alpha x T sweep of MCC-KD on dev (first seed; toy: alpha 0.1 / 1.0), then both arms on every seed;
   greedy accuracy on the ID test split and the OOD splits (toy: one more arithmetic line; real: the other
   same-kind sets), strict and flexible extractors, and (toy) the mechanism diagnostic: the answer KL
   across two rationales of held-out questions. Rows in points, one per seed, via common.results.

Where it departs from the paper / release (README "Deviations"): toy students are fine-tuned in full with
lr 1e-3 (release: LoRA, Adam 1e-5); a rationale pair is drawn per question (release: one pair index per
mini-batch); the toy teacher is a 0.97M-parameter model, not an LLM; the teacher prompt and the OOD pairs
are ours (the paper's are UNCONFIRMED); ASDiv/CSQA train questions are not released, so the small preset
trains on GSM8K (teacher-sampled) and SVAMP (released rationales).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from common.config import config_dict
from common.data import DataError
from common.models import ModelNotFoundError
from common.results import write_results
from common.stages import is_main_process, runs_dir
from papers.mcckd.config import McckdConfig
from papers.mcckd.data import MissingTrainData, real_task, set_name, toy_task
from papers.mcckd.rationales import TooFewRationales
from papers.mcckd.stages import result_rows, run_arms, summary, teacher_stage, train_data

SLUG = "mcckd"
log = logging.getLogger(__name__)
GRADER = (
    "strict: release last-line last-number (CSQA: last A-G on the last line); flexible: HEAD GSM8KEvaluator "
    "(CSQA: last standalone letter) (papers/mcckd/rationales.py)"
)


def reproduce(
    cfg: McckdConfig, *, force: bool = False, data_dir: str | None = None, results_root: Path | None = None
) -> Path:
    """Every stage for the resolved `cfg`; returns papers/mcckd/results/<scale>/ (`results_root`: another
    repo root, for tests). With `run.stop_after=teacher` it stops after the teacher samples and returns
    their folder. A missing file, model or rationale pair stops with one line."""
    try:
        return _reproduce(cfg, force, data_dir, results_root)
    except (MissingTrainData, TooFewRationales, DataError, ModelNotFoundError) as err:
        raise SystemExit(f"mcckd {cfg.scale}: {str(err).splitlines()[0]}") from None


def _reproduce(cfg: McckdConfig, force: bool, data_dir: str | None, results_root: Path | None) -> Path:
    torch.set_num_threads(cfg.run.torch_threads)
    start, root = time.perf_counter(), runs_dir() / SLUG / cfg.scale
    if cfg.data.source == "toy":
        tasks = [toy_task(cfg)]
    else:
        names = dict.fromkeys(map(set_name, cfg.data.train_sets))
        tasks = [real_task(cfg, data_dir, name) for name in names]
    if cfg.run.stop_after == "teacher":
        for task in tasks:
            teacher_stage(task, cfg, root, force)
        return root / "teacher"
    rows, extra = [], {"tasks": {}}
    for task in tasks:
        data = train_data(task, cfg, root, force)
        out = run_arms(task, cfg, data, root, force)
        rows += result_rows(task, out["arms"])
        extra["tasks"][task.name] = {
            "data_stats": data["stats"],
            "sweep_on_validation": [
                {k: m[k] for k in ("alpha", "temperature", "validation", "best_step")} for m in out["sweep"]
            ],
            "chosen": out["chosen"],
            "summary": summary(task, out["arms"]),
            "arms": out["arms"],
        }
        log.info("mcckd %s: %s", task.name, extra["tasks"][task.name]["summary"])
    if not is_main_process():
        return root
    return write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=list(cfg.seeds),
        config=config_dict(cfg),
        wall_time_s=time.perf_counter() - start,
        grader=GRADER,
        sampling={"eval": "greedy", "teacher": config_dict(cfg)["teacher"]},
        extra=extra,
        root=results_root,
    )
