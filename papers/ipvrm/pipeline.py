"""IPVRM + DistRL at toy scale, one driver: `python -m common.reproduce ipvrm` (spec "Toy-scale check").

The recipe:
1. pi_SFT: a tiny causal LM trained on the running-sum chain world's training format (`world.py`).
2. Reward models as copies of pi_SFT (IPVRM beta 1, m 0.5; Implicit PRM beta 1; DPO-RM opt-in), one per
   seed. Part A, reported as it comes (the spec's prototypes found a tie): ProcessBench-style F1 of the
   first-error prediction on the balanced evaluation set, threshold tuned on a separate validation set,
   process-level and prefix-based step scores; the prefix AUC of the outcome after 1, 3, 5 steps.
3. Part B, the gated claim (paper Table 7 direction): from pi_SFT, GRPO w/ IPVRM vs DistRL w/ IPVRM
   (`distrl.DistRLPolicyLoss` through `common.rl_loop.run_rl`, the same frozen IPVRM), and the
   calibration arm GRPO w/ VR (verifier outcome only), 3 seeds. The spec's pass rule is in
   `report.part_b_verdict` and provenance.json ("part_b").

Stages are cached under `runs/ipvrm/<scale>/` (`--force` reruns them). `workers` spawned processes run the
RM and RL stages; provenance.json records wall time and the CPU seconds of the driver and its workers.

4. (`processbench.enabled`) ProcessBench on real data (`processbench_lm.py`): SmolLM2-135M-Instruct as both RM
   and reference on a seeded sample of each subset, both threshold and both step-score protocols (the path
   end to end; the numbers are a floor).

Deviations (README "Deviations"): the interleaved prompt "+ a_k" and RETRY steps after the last step (the
spec's plain prompt stays near chance at this budget, NOTES.md); toy RL steps as set in config.py (the spec's 150 when the budget allows);
all-equal groups stay in the batch with advantage 0 (a scale of the token mean, not a filter); pi_ref :=
pi_old in DistRL's TD (the code's); Eq. 19's l uses pi_SFT, the RM's reference.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from common.config import config_dict
from common.provenance import cpu_seconds
from common.results import results_dir, write_results
from common.stages import atomic_write_json, is_main_process, runs_dir, worker_pool
from papers.ipvrm.bon import SCORE_RULES
from papers.ipvrm.config import IPVRMConfig, check_config
from papers.ipvrm.processbench_lm import processbench_stage
from papers.ipvrm.report import (
    bon_calibration,
    bon_rows,
    part_b_verdict,
    plot_rl,
    processbench_rows,
    rl_rows,
    rm_rows,
    sft_rows,
)
from papers.ipvrm.stages import bon_samples_stage, bon_stage, rl_stage, rm_stage, sft_stage

SLUG = "ipvrm"
log = logging.getLogger(__name__)


def reproduce(cfg: IPVRMConfig, *, force: bool = False, data_dir: str | None = None) -> Path:
    """Run every stage of `cfg` (module doc); write papers/ipvrm/results/<scale>/ and return that folder."""
    check_config(cfg)
    torch.set_num_threads(cfg.threads)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    work = runs_dir() / SLUG / cfg.scale
    work.mkdir(parents=True, exist_ok=True)
    out = results_dir(SLUG, cfg.scale)
    if not is_main_process():
        return out
    rm, rl = cfg.rm, cfg.rl
    sft = sft_stage(cfg, work, force)
    log.info("pi_SFT: greedy %.3f, sampled %.3f (val)", sft["val_greedy"], sft["val_sampled"])
    jobs = [(kind, seed) for seed in rm.seeds for kind in rm.kinds]
    jobs.sort(key=lambda j: j != ("IPVRM", rl.rm_seed))  # the RL arms wait for this one
    with worker_pool(cfg.workers, cfg.threads) as pool:
        rm_jobs = {j: pool.submit(rm_stage, *j, cfg, work, force, sft["path"]) for j in jobs}
        real_job = (
            pool.submit(processbench_stage, cfg.processbench, work, force, data_dir)
            if cfg.processbench.enabled
            else None
        )
        b = cfg.bon
        pool_jobs = {  # one Best-of-N candidate pool per RM seed
            s: pool.submit(bon_samples_stage, s, cfg, work, force, sft["path"]) for s in rm.seeds if b.enabled
        }
        rl_jobs = []
        if rl.enabled:
            ipvrm = rm_jobs[("IPVRM", rl.rm_seed)].result()
            rl_jobs = [
                pool.submit(rl_stage, m, s, cfg, work, force, sft["path"], ipvrm["path"])
                for s in rl.seeds
                for m in rl.methods
            ]
        bon_jobs = [  # queued behind the RL arms; each waits for its RM and its seed's candidate pool
            pool.submit(bon_stage, *j, cfg, work, force, sft["path"], job.result(), pool_jobs[j[1]].result())
            for j, job in rm_jobs.items()
            if j[1] in pool_jobs
        ]
        rms = [job.result() for job in rm_jobs.values()]
        runs = [job.result() for job in rl_jobs]
        pools = [job.result() for job in pool_jobs.values()]
        bons = [job.result() for job in bon_jobs]
        real = real_job.result() if real_job is not None else None
    model = cfg.sft.preset
    rows = sft_rows(model, sft) + rm_rows(model, rms) + rl_rows(model, runs)
    rows += bon_rows(model, pools, bons) if pools else []
    rows += processbench_rows(real) if real is not None else []
    out.mkdir(parents=True, exist_ok=True)
    extra: dict = {"sft": {k: v for k, v in sft.items() if k != "path"}}
    plots = []
    if runs:
        extra["part_b"] = part_b_verdict(runs, sft)
        plots = plot_rl(runs, sft, out)
        atomic_write_json(out / "rl_curves.json", runs)
    if pools:
        extra["bon"] = {
            "problems": b.problems,
            "samples": b.samples,
            "ns": list(b.ns),
            "temperature": f"{b.temperature} (UNCONFIRMED: the paper does not state it)",
            "groups": "consecutive N-groups of the pool, averaged (ImplicitPRM bon_eval); first on a tie",
            "score_rules": {k: SCORE_RULES[k] for k in rm.kinds},
            "grader": "math-verify on \\boxed{last step digit} (common.scoring.math_is_correct)",
            "calibration": bon_calibration(pools, bons),
        }
    atomic_write_json(out / "part_a.json", [{k: v for k, v in r.items() if k != "path"} for r in rms])
    if real is not None:
        atomic_write_json(out / "processbench_real.json", real)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    log.info("ipvrm %s: %d rows, %.0f s wall, %.0f CPU-s", cfg.scale, len(rows), wall, cpu)
    return write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=sorted(set(rm.seeds) | set(rl.seeds if rl.enabled else ())),
        config=config_dict(cfg),
        wall_time_s=wall,
        grader="papers.ipvrm.world.is_correct (the n steps parse, last digit = sum mod 10)",
        sampling={
            "eval": "greedy accuracy and avg@4 at T=1 (seed 1) on 500 test prompts",
            "rollouts": f"{rl.samples_per_prompt} samples/prompt at T={rl.temperature}",
        },
        extra=extra | {"cpu_s": round(cpu, 1), "plots": [p.name for p in plots]},
    )
