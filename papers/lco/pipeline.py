"""LCO end to end, one driver for every scale: `python -m common.reproduce lco --scale toy|small|paper`.

The recipe (spec `shared/papers/lco.md`):
1. (toy, `stability.enabled`) The spec's calibrated stability check (`stability.py`): PPO-clip, PG-IS and
   LCO-KLD on the same rollouts of a GRU policy, at an aggressive (1e-2) and a normal (3e-3) Adam lr, 3 seeds;
   its five pass criteria go to provenance.json and, as paired per-seed claims, to claims.yaml.
2. (`rl.enabled`) RL with the rule verifier on a task (`data.py`: the toy arithmetic world, GSM8K or MATH):
   PPO (critic + GAE on the terminal +1/-1), GRPO (group advantages, REINFORCE loss), LCO-KLD / -MSE / -LCH
   (`arms.LCOPolicyLoss` through `common.rl_loop.run_rl`'s `policy_loss` seam), from the same starting policy
   with the same rollout budget. At toy scale the policy (rl-student) and the regime are the RL testbed's
   (`GateConfig()`, read at run time); each method runs at the regime's lr and the `factor_methods` also at
   `lr_factors` x it. Validation greedy Pass@1 and the gradient norm every chunk; test greedy Pass@1 at the
   end; stability = the max drawdown of the validation curve.

3. (`dense.enabled`) The dense advantage sources (`dense.py`): a Q-RM (the starting policy's copy trained
   with L_QRM on its log-softmax) and a DPO-RM on (correct, incorrect) pairs of the starting policy's samples
   of training prompts; then LCO-KLD with their top-5 advantages (std-normalised over the 5) and PPO-clip
   with their token reward, 3 seeds, in the same regime. Written to results/<scale>-dense/ (its own
   provenance), so it can run alone: `--set stability.enabled=false --set rl.enabled=false`.

Stages are cached under `runs/lco/<scale>/` (`--force` reruns them); RL runs resume at their last chunk.
`workers` > 1 sends the stability runs and the RL runs to that many spawned processes. Generation: one vLLM
engine per RL run on CUDA whose weights follow the policy, HF elsewhere. Under `accelerate launch` only the
main process runs (the DeepSpeed config is shipped for the paper scale, multi-GPU training is untested).

Deviations (README "Deviations"): a tiny policy and 30 updates instead of chunks of 3,072 prompts; one Adam
across chunks; GRPO-style group advantages for the sparse verifier case (the code's LCO scripts use raw +/-1:
`--set rl.advantage=raw`); full pi_old at toy scale (the code's top-5: `--set loss.logits_topk=5`); the
paper's MSE / LCH anchor z_old (`--set loss.anchor=current` for the code's); one beta (`--set
loss.negative_beta_scale=100` for the code's); PPO's critic is a fresh head on a copy of the policy.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.config import config_dict
from common.results import results_dir, results_name, write_results
from common.stages import atomic_write_json, atomic_write_text, is_main_process, runs_dir, worker_pool
from common.tables import DETAILS
from papers.lco.config import LCOConfig, check_config, regime
from papers.lco.dense import dense_rl_stage, pairs_stage, rm_stage
from papers.lco.report import (
    criteria_markdown,
    plot_rl,
    plot_stability,
    rl_rows,
    rm_rows,
    run_name,
    stability_rows,
)
from papers.lco.stability import EVAL_EVERY, GROUP, MINIBATCH, PASSES, PROMPTS, check_result
from papers.lco.stages import rl_stage, sft_stage, stability_job

SLUG = "lco"
DENSE_PART = "dense"  # results/<scale>-dense/
GRADER = "toy: common.scoring.gsm8k_is_correct (strict); GSM8K: flexible; MATH: math_is_correct"
log = logging.getLogger(__name__)


def stability_runs(cfg: LCOConfig) -> list[tuple[str, float]]:
    """(arm, lr) of the check: PPO and LCO-KLD at the aggressive lr; PPO, PG-IS and LCO-KLD at the normal."""
    s = cfg.stability
    return [("PPO", s.aggressive_lr), ("LCO-KLD", s.aggressive_lr)] + [
        (arm, s.normal_lr) for arm in ("PPO", "PG-IS", "LCO-KLD")
    ]


def rl_runs(cfg: LCOConfig) -> list[tuple[str, float, int]]:
    """(method, lr factor, seed): every method at factor 1, the `factor_methods` (all when empty) at each."""
    rl = cfg.rl
    again = rl.factor_methods or rl.methods
    return [(m, f, s) for s in rl.seeds for f in rl.lr_factors for m in rl.methods if f == 1.0 or m in again]


def reproduce(cfg: LCOConfig, *, force: bool = False, data_dir: str | None = None) -> Path:
    """Run every stage of `cfg` (module doc); write papers/lco/results/<scale>/ and return that folder."""
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    work = runs_dir() / SLUG / cfg.scale
    work.mkdir(parents=True, exist_ok=True)
    out = results_dir(SLUG, cfg.scale)
    if not is_main_process():
        return out
    s, rl, d = cfg.stability, regime(cfg.rl), cfg.dense
    rows, plots, extra, runs, sft, dense = [], [], {}, [], None, {}
    with worker_pool(cfg.workers, cfg.threads or 1) as pool:
        # first: the SFT scores (they train the toy base model, which the RL runs then wait for)
        sft_job = pool.submit(sft_stage, cfg, work, force, data_dir) if rl.enabled or d.enabled else None
        pairs_job = pool.submit(pairs_stage, cfg, work, force, data_dir) if d.enabled else None
        gru_jobs = {}
        if s.enabled:
            for arm, lr in stability_runs(cfg):
                for seed in s.seeds:
                    args = (arm, lr, seed, s.iterations, s.beta, work, force)
                    gru_jobs[(run_name(arm, lr), seed)] = pool.submit(stability_job, *args)
        rl_jobs = []
        if rl.enabled:
            sft = sft_job.result()  # every arm's chunk-0 evaluation (the GRU runs keep the other worker busy)
            rl_jobs = [
                pool.submit(rl_stage, m, f, seed, cfg, work, force, data_dir, sft["eval"])
                for m, f, seed in rl_runs(cfg)
            ]
        dense_jobs = []
        if d.enabled:
            sft = sft_job.result()
            pairs = pairs_job.result()
            rm_jobs = {src: pool.submit(rm_stage, src, cfg, work, force, pairs) for src in d.sources}
            dense["rms"] = {src: job.result() for src, job in rm_jobs.items()}
            dense["pairs"] = pairs["stats"]
            dense_jobs = [
                pool.submit(
                    dense_rl_stage, src, m, seed, cfg, work, force, dense["rms"][src], data_dir, sft["eval"]
                )
                for seed in d.seeds
                for src in d.sources
                for m in d.methods
            ]
        if gru_jobs:
            by_run: dict[str, dict[int, dict]] = {}
            for (name, seed), job in tqdm(gru_jobs.items(), desc="lco stability check"):
                by_run.setdefault(name, {})[seed] = job.result()
            config = {
                "C": 16,
                "V": 8,
                "T": 4,
                "hidden": 64,
                "prompts": PROMPTS,
                "group": GROUP,
                "passes": PASSES,
            }
            config |= {"minibatch": MINIBATCH, "steps_per_iteration": PASSES * PROMPTS * GROUP // MINIBATCH}
            config |= {
                "iterations": s.iterations,
                "beta": s.beta,
                "eval_every": EVAL_EVERY,
                "seeds": list(s.seeds),
            }
            result = check_result(by_run, f"{s.aggressive_lr:g}", f"{s.normal_lr:g}", config, start)
            rows += stability_rows(result)
            out.mkdir(parents=True, exist_ok=True)
            plots += plot_stability(result, out)
            atomic_write_json(out / "stability.json", {k: v for k, v in result.items() if k != "grad_norms"})
            atomic_write_text(out / DETAILS, criteria_markdown(result))
            extra |= {"stability_passed": result["passed"], "stability_criteria": result["criteria"]}
        runs = [job.result() for job in tqdm(rl_jobs, desc="lco RL runs")]
        dense["runs"] = [job.result() for job in tqdm(dense_jobs, desc="lco dense RL runs")]
    model = f"tiny-{rl.policy}" if rl.task == "arith" else rl.policy.split("/")[-1]
    benchmark = "toy-arith" if rl.task == "arith" else {"gsm8k": "GSM8K", "math": "MATH500"}[rl.task]
    dense_out = None
    if d.enabled:
        dense_out = write_dense(cfg, rl, model, benchmark, sft, dense, start)
    if not rows and not runs:
        return dense_out or out
    if runs:
        rows += rl_rows(rl.task, benchmark, model, sft, runs)
        out.mkdir(parents=True, exist_ok=True)
        plots += plot_rl(rl.task, sft, runs, out)
        atomic_write_json(out / "rl_curves.json", {"sft": sft, "runs": runs})
        extra |= {"sft": sft, "regime": {k: v for k, v in config_dict(rl).items() if k != "enabled"}}
    wall = time.perf_counter() - start
    log.info("lco %s: %d rows, %.0f s", cfg.scale, len(rows), wall)
    return write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=sorted(set(s.seeds if s.enabled else ()) | set(rl.seeds if rl.enabled else ())),
        config=config_dict(cfg),
        wall_time_s=wall,
        grader=GRADER,
        sampling={
            "eval": f"greedy Pass@1, max_tokens {rl.max_tokens}; GRU check: greedy token accuracy",
            "rollouts": f"{rl.samples_per_prompt} sample(s)/prompt at T={rl.temperature}",
        },
        extra=extra | {"plots": [p.name for p in plots]},
    )


def write_dense(cfg: LCOConfig, rl, model: str, benchmark: str, sft: dict, dense: dict, start: float) -> Path:
    """results/<scale>-dense/: the RM rows, the SFT rows and the dense RL rows, with their own provenance."""
    out = results_dir(SLUG, results_name(cfg.scale, DENSE_PART))
    out.mkdir(parents=True, exist_ok=True)
    rows = rm_rows(rl.task, model, dense["rms"]) + rl_rows(rl.task, benchmark, model, sft, dense["runs"])
    plots = plot_rl(rl.task, sft, dense["runs"], out)
    atomic_write_json(out / "rl_curves.json", {"sft": sft, "runs": dense["runs"]})
    rms = {src: {k: v for k, v in rm.items() if k != "path"} for src, rm in dense["rms"].items()}
    wall = time.perf_counter() - start
    log.info("lco %s dense: %d rows, %.0f s", cfg.scale, len(rows), wall)
    return write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=sorted(cfg.dense.seeds),
        config=config_dict(cfg),
        wall_time_s=wall,
        grader=GRADER,
        sampling={
            "eval": f"greedy Pass@1, max_tokens {rl.max_tokens}",
            "rollouts": f"{rl.samples_per_prompt} sample(s)/prompt at T={rl.temperature}",
            "pairs": f"{cfg.dense.pair_samples} samples/prompt at T={rl.temperature}, seed 0",
        },
        extra={
            "pairs": dense["pairs"],
            "reward_models": rms,
            "regime": {k: v for k, v in config_dict(rl).items() if k != "enabled"},
            "plots": [p.name for p in plots],
        },
        part=DENSE_PART,
    )
