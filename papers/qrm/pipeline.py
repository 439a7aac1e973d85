"""Q-RM end to end, one driver for every scale: `python -m common.reproduce qrm --scale toy|small|paper`.

The recipe (spec `shared/papers/qrm.md`, "Step-by-step algorithm"), per task of `data.tasks` (`data.py`:
the toy arithmetic world of `common/synthetic`, or GSM8K / MATH):
1. Preference pairs: the world's (chosen = a valid rationale, rejected = a flawed one with a wrong answer),
   or sampled from the policy and graded, chosen = correct, rejected = wrong (the paper's were never
   mirrored: UNCONFIRMED construction).
2. A Q-RM (`qrm_loss`), an ORM (BT on the last token), a DPO-RM (DPO of the RM backbone vs its frozen copy)
   and, on request, an implicit PRM, each trained on those pairs with the RM backbone (larger than the
   policy, as in the paper); pairwise accuracy on held-out pairs (toy: the validation split's; real: the
   repo's GSM8K 787 / MATH 2,291).
3. REINFORCE and PPO with each RM through `common.rl_loop` (`rewards.py`: Z / std with the EOS overwrite
   for REINFORCE; Z / std - 0.01 |log pi_old - log pi_ref| with A = r - 0.01 V for PPO + Q-RM; GAE(0.9, 0.8)
   for the other PPO arms), plus, at toy scale, REINFORCE with an oracle reward (ours, calibration).
4. Greedy Pass@1 on the curve problems every `eval.eval_every` chunks; greedy Pass@1, sampled Pass@1 and
   Pass@k on the test problems for the policy before RL (row "SFT") and after each run; steps-to-threshold:
   the policy updates the Q-RM arm needs to reach the ORM arm's best curve Pass@1 (same algorithm and seed;
   the paper's definition of "12x faster" is UNCONFIRMED).
At toy scale the spec's calibrated GRU check (`gru_check.py`) runs first.

Stages are cached under `runs/qrm/<scale>/` by a hash of their settings (`--force` reruns them); pair
building and RL runs resume at their last finished chunk. `workers` > 1 sends the GRU check, the RM base
model, the RMs and the RL runs to that many spawned processes (toy: 2 cores, under 10 minutes). Under
`accelerate launch` RM training runs on every process, everything else on the main one (untested on
several GPUs). Generation: one vLLM engine on CUDA whose weights follow the policy, HF elsewhere.

Deviations (README "Deviations"): toy models and a few hundred policy updates instead of 12 chunks of 3,072
prompts; toy RMs fully fine-tuned; 4 samples per prompt at T = 0.7 with a leave-one-out group baseline for
the toy REINFORCE arms; the toy PPO critic is a fresh head on the policy (the code: on the Q-RM); one Adam
across chunks; gradient-norm clipping 1.0; pairs sampled from the policy at small/paper scale.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.config import config_dict
from common.models import check_local_path, load_tokenizer
from common.results import results_dir, write_results
from common.stages import atomic_write_json, is_main_process, runs_dir, worker_pool
from common.synthetic.base_models import SIZES
from common.synthetic.rl_gate import gate
from papers.qrm.config import LOG_RATIO_KINDS, METHODS, QRMConfig, check_config
from papers.qrm.data import Task, real_task, toy_task
from papers.qrm.gru_check import plot_gru_check
from papers.qrm.report import plot_runs, result_rows, speed_table
from papers.qrm.stages import (
    Sampler,
    check_tokenizers,
    gru_stage,
    model_path,
    pairs_stage,
    rl_stage,
    rm_stage,
    sft_stage,
)

SLUG = "qrm"
log = logging.getLogger(__name__)


def make_task(cfg: QRMConfig, name: str, data_dir: str | None) -> Task:
    return toy_task(cfg) if name == "arith" else real_task(cfg, name, data_dir)


def rm_kinds(cfg: QRMConfig) -> list[str]:
    """The RMs the methods need (the ORM too when a log-ratio PPO arm's critic starts from it)."""
    kinds = {METHODS[m][1] for m in cfg.methods} - {"oracle"}
    if cfg.ppo.critic_init == "rm" and any(
        METHODS[m] in (("ppo", k) for k in LOG_RATIO_KINDS) for m in cfg.methods
    ):
        kinds.add("orm")
    return sorted(kinds)


def _rl_job(
    method: str,
    seed: int,
    cfg: QRMConfig,
    task: Task,
    dirs: dict,
    sampler: Sampler,
    work: Path,
    force: bool,
    initial: dict | None = None,
) -> dict:
    """One RL run (in a worker when `workers` > 1; the HF sampler pickles, a vLLM engine stays in-process).
    `initial`: the SFT policy's curve point (shared by every arm; see `rl_stage`)."""
    kind = METHODS[method][1]
    critic_from = dirs.get("orm" if kind in LOG_RATIO_KINDS else kind)
    return rl_stage(method, seed, cfg, task, dirs.get(kind), critic_from, sampler, work, force, initial)


def calibration_gate(sft: dict, runs: list[dict]) -> dict | None:
    """The RL testbed's gate (common.synthetic.rl_gate) on the toy test split, reported, never tuned on: the
    oracle arm's per-seed gain over the SFT policy in greedy and sampled Pass@1 points; None without an
    oracle arm on the toy world."""
    if "arith" not in sft:
        return None
    base = sft["arith"]["test"]
    oracle = [r for r in runs if r["task"] == "arith" and r["method"] == "REINFORCE+oracle"]
    if not oracle or "Pass@1 (sampled)" not in base:
        return None
    per_seed = [
        {
            "seed": r["seed"],
            "delta": {
                "greedy": round(100 * (r["test"]["Pass@1"] - base["Pass@1"]), 2),
                "sampled": round(100 * (r["test"]["Pass@1 (sampled)"] - base["Pass@1 (sampled)"]), 2),
            },
        }
        for r in oracle
    ]
    return gate(per_seed) | {"split": "test", "seeds": [r["seed"] for r in per_seed]}


def reproduce(cfg: QRMConfig, *, force: bool = False, data_dir: str | None = None) -> Path:
    """Run every stage of `cfg` (module doc); write papers/qrm/results/<scale>/ and return that folder."""
    check_config(cfg)
    for name in (cfg.policy, cfg.rm.backbone):  # now, not after the pool has trained the other base model
        if name not in SIZES:
            check_local_path(name)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    work = runs_dir() / SLUG / cfg.scale
    work.mkdir(parents=True, exist_ok=True)
    sft, runs, rms, prefs, tasks = {}, [], [], {}, []
    with worker_pool(cfg.workers, cfg.threads or 1) as pool:
        # The two base models train at once in the pool (a clean clone's first minutes); the GRU check
        # fills the first free slot, the RMs follow their backbone, the oracle arms the policy.
        rm_backbone = pool.submit(model_path, cfg.rm.backbone)
        policy_job = pool.submit(model_path, cfg.policy)
        gru_job = pool.submit(gru_stage, cfg, work, force) if cfg.gru.enabled else None
        run = replace(cfg, rm=replace(cfg.rm, backbone=rm_backbone.result()))  # model folders
        sampler = None
        for name in cfg.data.tasks:
            rm_jobs = {}
            if name == "arith":  # the world's fixed pairs: its RMs need only their backbone
                task = make_task(run, name, data_dir)
                pairs, pairs_key, prefs[name] = pairs_stage(run, task, sampler, work, force)
                rm_jobs = {
                    k: pool.submit(rm_stage, k, run, task, pairs, pairs_key, work, force)
                    for k in rm_kinds(cfg)
                }
            if sampler is None:
                run = replace(run, policy=policy_job.result())
                tok = load_tokenizer(run.policy)
                check_tokenizers(tok, load_tokenizer(run.rm.backbone), cfg.policy, cfg.rm.backbone)
                sampler = Sampler(run, tok, work)
            if not rm_jobs:  # pairs sampled from the policy
                task = make_task(run, name, data_dir)
                pairs, pairs_key, prefs[name] = pairs_stage(run, task, sampler, work, force)
                rm_jobs = {
                    k: pool.submit(rm_stage, k, run, task, pairs, pairs_key, work, force)
                    for k in rm_kinds(cfg)
                }
            tasks.append(task)
            if is_main_process():
                sft[name] = sft_stage(run, task, sampler, work, force)
            initial = {"val_pass@1": sft[name]["val"]} if is_main_process() else None
            rl_jobs = {  # the oracle arms need no RM: they start before the RMs are trained
                (m, s): pool.submit(_rl_job, m, s, run, task, {}, sampler, work, force, initial)
                for s in cfg.seeds
                for m in cfg.methods
                if METHODS[m][1] == "oracle" and is_main_process()
            }
            infos = {k: job.result() for k, job in rm_jobs.items()}
            rms += [{k: v for k, v in info.items() if k != "dir"} for info in infos.values()]
            if not is_main_process():
                continue
            dirs = {k: info["dir"] for k, info in infos.items()}
            rl_jobs |= {
                (m, s): pool.submit(_rl_job, m, s, run, task, dirs, sampler, work, force, initial)
                for s in cfg.seeds
                for m in cfg.methods
                if (m, s) not in rl_jobs
            }
            order = [(m, s) for s in cfg.seeds for m in cfg.methods]  # the table's order, not the pool's
            done = {key: job.result() for key, job in tqdm(rl_jobs.items(), desc=f"qrm RL runs ({name})")}
            runs += [done[key] for key in order]
        gru = gru_job.result() if gru_job else None
    out_dir = results_dir(SLUG, cfg.scale)
    if not is_main_process():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_runs(cfg, tasks, runs, sft, out_dir)
    if gru:
        gru = gru | {"curves": {a: {int(k): v for k, v in c.items()} for a, c in gru["curves"].items()}}
        plots.append(plot_gru_check(gru, out_dir / "gru_check.png"))
    atomic_write_json(out_dir / "curves.json", {"runs": runs, "steps_to_threshold": speed_table(runs)})
    e = cfg.eval
    log.info(
        "qrm %s: %d RL runs, %d reward models, %.0f s",
        cfg.scale,
        len(runs),
        len(rms),
        time.perf_counter() - start,
    )
    return write_results(
        SLUG,
        cfg.scale,
        result_rows(cfg, tasks, sft, runs, rms, gru),
        seeds=list(cfg.seeds),
        config=config_dict(cfg),
        wall_time_s=time.perf_counter() - start,
        grader=f"GSM8K / toy: common.scoring.gsm8k_is_correct ({cfg.data.gsm8k_mode}); MATH: math_is_correct",
        sampling={
            "eval": f"greedy Pass@1, max_tokens {e.max_tokens}; sampled Pass@1: {e.sampled_n} samples, Pass@k: "
            f"{e.pass_k} samples, at T={e.pass_k_temperature} (unbiased)",
            "rollouts": f"REINFORCE: {cfg.reinforce.samples_per_prompt} sample(s)/prompt at T="
            f"{cfg.reinforce.temperature}; PPO: 1 at T={cfg.ppo.temperature}",
            "generator": "vLLM (weights synced each chunk)" if sampler.engine else "HF",
        },
        extra={
            "rm": rms,
            "prefs": prefs,
            "sft": sft,
            "calibration_gate": calibration_gate(sft, runs),
            "gru_passed": gru["passed"] if gru else None,
            "gru_criteria": gru["criteria"] if gru else None,
            "plots": [p.name for p in plots],
            "data": {t.name: {"train": len(t.train), "val": len(t.val), "test": len(t.test)} for t in tasks},
        },
    )
