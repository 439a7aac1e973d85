"""Q-RM end to end: `python -m common.reproduce qrm --scale toy|small|paper`.

What the toy recipe does (spec `shared/papers/qrm.md`; README "Toy design" for the why):
1. The spec's calibrated GRU check (`papers.qrm.gru_check.run_gru_check`): a Q-RM and an ORM trained on
   the same preference pairs, REINFORCE with each, greedy token accuracy; the spec's three pass criteria.
2. The recipe on the toy arithmetic world (`common/synthetic`): the student SFT model is the policy; a
   Q-RM (`qrm_loss`) and an ORM (BT on the last token) are `TokenScorer`s on the student backbone,
   trained on the world's preference pairs (chosen = a valid rationale, rejected = a flawed one with a
   wrong answer); then REINFORCE and PPO with each RM through `common.rl_loop`:
   - REINFORCE + Q-RM: r_t = Z_t / std_chunk(Z), last token overwritten by the sequence mean (code
     default, `qrm_reinforce_rewards`); REINFORCE + ORM: the last-token score, std-normalised, copied to
     every response token (`orm_token_rewards(..., "broadcast")`);
   - PPO + Q-RM: r_t = Z_t / std - 0.01 |log pi_old - log pi_ref|, A_t = r_t - value_coef * V_t (no GAE);
     PPO + ORM: reward at the last token only (minus the same KL), GAE(0.9, 0.8). Critic = a fresh
     `TokenScorer` on the student backbone (the code starts it from the Q-RM with a re-initialised head).
   Greedy Pass@1 on the validation split every `eval_every` chunks (the curves), and on the test split
   at the end (the rows). Steps-to-threshold: policy updates the Q-RM arm needs to reach the ORM arm's
   best validation Pass@1 (same algorithm, same seed), vs the ORM arm's own; the paper's definition of
   "12x faster" is UNCONFIRMED.
`small` / `paper` run the same stages on GSM8K with the preset's models (configured, not run here; the
RM preference data of the paper is not public, README "How to run").

Stages are cached under `runs/qrm/<scale>/` by a hash of their settings (`--force` reruns them); an RL
run killed mid-way resumes at its last finished chunk.
Departures (README "Deviations"): tiny models and a few hundred policy updates instead of 12 chunks of
3,072 prompts; full fine-tuning of the RMs; one Adam across chunks; gradient-norm clipping 1.0.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.models import load_causal_lm, load_tokenizer
from common.results import ROOT, write_results
from common.rl import Rollout
from common.rl_loop import RLConfig, evaluate_pass_at_k, run_rl
from common.scoring import gsm8k_is_correct
from common.synthetic.base_models import get_base_model
from common.synthetic.flaws import preference_pairs
from common.synthetic.tokenizer import runs_dir
from common.synthetic.world import make_splits
from papers.qrm.config import QRMConfig, get_config
from papers.qrm.qrm import (
    kl_abs,
    last_token_scores,
    orm_token_rewards,
    qrm_ppo_rewards,
    qrm_reinforce_rewards,
)
from papers.qrm.report import plot_runs, result_rows, spread, steps_to_threshold
from papers.qrm.reward_models import (
    RMTrainConfig,
    TokenScorer,
    pairwise_accuracy,
    response_token_scores,
    train_reward_model,
    world_preference_pairs,
)

SLUG = "qrm"
PIPELINE_VERSION = 1
METHODS = {  # method name (claims.yaml) -> (algorithm, reward model)
    "REINFORCE+Q-RM": ("reinforce", "qrm"),
    "REINFORCE+ORM": ("reinforce", "orm"),
    "PPO+Q-RM": ("ppo", "qrm"),
    "PPO+ORM": ("ppo", "orm"),
}


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cached(path: Path, force: bool, compute) -> dict:
    """Read path (JSON) unless forced; else compute, write atomically, return."""
    if path.exists() and not force:
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(path)
    return result


def gru_stage(cfg: QRMConfig, work: Path, force: bool) -> dict:
    from papers.qrm.gru_check import run_gru_check

    settings = {"seeds": cfg.gru_seeds, "iterations": cfg.gru_iterations, "rm_steps": cfg.gru_rm_steps}
    key = _hash(settings | {"v": PIPELINE_VERSION})
    return _cached(
        work / f"gru-{key}.json",
        force,
        lambda: run_gru_check(cfg.gru_seeds, cfg.gru_iterations, progress=True, rm_steps=cfg.gru_rm_steps),
    )


def world_data(cfg: QRMConfig) -> dict:
    """Splits of the toy world, their preference pairs (train / validation) and prompts."""
    splits = make_splits()
    train = splits["train"][: cfg.train_problems]
    val = splits["validation"][: cfg.val_problems]
    test = splits["test"][: cfg.test_problems]
    return {
        "train": train,
        "val": val,
        "test": test,
        "train_pairs": world_preference_pairs(preference_pairs(train, seed=0)),
        "val_pairs": world_preference_pairs(preference_pairs(val, seed=0)),
    }


def rm_stage(kind: str, cfg: QRMConfig, policy_path: Path, data: dict, work: Path, force: bool) -> tuple:
    """Train (or load) the Q-RM / ORM scorer; return (scorer, info with validation pairwise accuracy)."""
    rm = cfg.rm
    key = _hash({"kind": kind, "rm": asdict(rm), "policy": str(policy_path), "n": len(data["train_pairs"])})
    out = work / f"rm-{kind}-{key}"
    tok = load_tokenizer(policy_path)
    if (out / "info.json").exists() and not force:
        return TokenScorer.load(out / "scorer"), json.loads((out / "info.json").read_text())
    start = time.perf_counter()
    scorer = TokenScorer.from_backbone(policy_path, lora_rank=rm.lora_rank, seed=rm.seed)
    train_cfg = RMTrainConfig(
        lr=rm.lr,
        batch_size=rm.batch_size,
        max_steps=rm.max_steps,
        max_len=rm.max_len,
        beta=rm.beta,
        gamma=rm.gamma,
        seed=rm.seed,
    )
    losses = train_reward_model(scorer, tok, data["train_pairs"], kind, train_cfg, progress=True)
    reduce = "mean" if kind == "qrm" else "last"
    info = {
        "kind": kind,
        "val_pairwise_accuracy": pairwise_accuracy(
            scorer, tok, data["val_pairs"], reduce=reduce, max_len=rm.max_len
        ),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "steps": len(losses),
        "train_pairs": len(data["train_pairs"]),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    scorer.save(out / "scorer")
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return scorer, info


def reward_fn_for(method: str, cfg: QRMConfig, scorer: TokenScorer):
    """Token rewards [batch, seq] for a rollout, as the official code computes them for this arm."""
    algorithm, kind = METHODS[method]

    def reward_fn(ro: Rollout) -> torch.Tensor:
        mask = ro.response_mask
        z = response_token_scores(scorer, ro.input_ids, ro.attention_mask, mask)
        if kind == "qrm" and algorithm == "reinforce":
            return qrm_reinforce_rewards(
                z, mask, sub_mean=cfg.reinforce.sub_mean, eos_overwrite=cfg.reinforce.eos_overwrite
            )
        if kind == "qrm":
            return qrm_ppo_rewards(
                z, mask, ro.logp_old, ro.logp_ref, cfg.ppo.kl_coef, sub_mean=cfg.ppo.sub_mean
            )
        s = last_token_scores(z, mask)
        if (cfg.reinforce if algorithm == "reinforce" else cfg.ppo).sub_mean:  # the paper's standardisation
            s = s - s.mean()
        s = s / s.std(unbiased=False).clamp_min(1e-8)  # std-normalised like every reward in the code's buffer
        if algorithm == "reinforce":
            return orm_token_rewards(s, mask, "broadcast")
        return orm_token_rewards(s, mask, "last") - cfg.ppo.kl_coef * kl_abs(ro.logp_old, ro.logp_ref) * mask

    return reward_fn


def rl_config(method: str, cfg: QRMConfig, seed: int, out: Path) -> RLConfig:
    algorithm, kind = METHODS[method]
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
        advantage="reward_is_q" if kind == "qrm" else "gae",
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


def rl_stage(
    method: str, seed: int, cfg: QRMConfig, policy_path: Path, scorer, data, work: Path, force: bool
) -> dict:
    """One RL run: validation Pass@1 curve + final test Pass@1 (cached by its settings)."""
    rl_cfg = rl_config(method, cfg, seed, work / "tmp")
    key = _hash(
        {
            "method": method,
            "rl": asdict(rl_cfg) | {"output_dir": ""},
            "rewards": asdict(cfg.reinforce if rl_cfg.algorithm == "reinforce" else cfg.ppo),
            "rm": asdict(cfg.rm),
            "policy": str(policy_path),
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
            reward_fn_for(method, cfg, scorer),
            rl_cfg,
            critic=critic,
            ref_model=ref,
            evaluate=lambda m: {"val_pass@1": greedy_pass1(m, tok, data["val"], cfg.eval.max_tokens)},
        )
        test = greedy_pass1(policy, tok, data["test"], cfg.eval.max_tokens)
        return {
            "method": method,
            "seed": seed,
            "curve": curve,
            "test_pass@1": test,
            "wall_s": round(time.perf_counter() - start, 1),
        }

    return _cached(out / "result.json", force, compute)


def sft_stage(cfg: QRMConfig, policy_path: Path, data: dict, work: Path, force: bool) -> dict:
    """Greedy Pass@1 of the policy before RL (the SFT row), on validation and test."""
    key = _hash(
        {"policy": str(policy_path), "eval": asdict(cfg.eval), "n": [len(data["val"]), len(data["test"])]}
    )

    def compute() -> dict:
        tok, model = load_tokenizer(policy_path), load_causal_lm(policy_path, dtype=torch.float32)
        return {
            "val_pass@1": greedy_pass1(model, tok, data["val"], cfg.eval.max_tokens),
            "test_pass@1": greedy_pass1(model, tok, data["test"], cfg.eval.max_tokens),
        }

    return _cached(work / f"sft-{key}.json", force, compute)


def reproduce(
    scale: str = "toy",
    force: bool = False,
    data_dir: str | None = None,
    cfg: QRMConfig | None = None,
    root: Path | None = None,
) -> Path:
    """Run every stage of `scale` and write papers/qrm/results/<scale>/; return that folder."""
    cfg = cfg or get_config(scale)
    if cfg.scale != "toy":
        raise SystemExit(
            f"qrm --scale {cfg.scale}: configured, not runnable in this checkout (GSM8K preference pairs of the "
            "paper are not public); see papers/qrm/README.md 'How to run' for the commands and what is missing"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    work = runs_dir() / "qrm" / cfg.scale
    work.mkdir(parents=True, exist_ok=True)
    gru = gru_stage(cfg, work, force) if cfg.gru_check else None
    policy_path = (
        get_base_model(cfg.policy) if cfg.policy in ("student", "mid", "teacher") else Path(cfg.policy)
    )
    data = world_data(cfg)
    sft = sft_stage(cfg, policy_path, data, work, force)
    rm_kinds = sorted({METHODS[m][1] for m in cfg.methods})
    scorers, rms = {}, {}
    for kind in rm_kinds:
        scorers[kind], rms[kind] = rm_stage(kind, cfg, policy_path, data, work, force)
    jobs = [(m, s) for s in cfg.seeds for m in cfg.methods]
    runs = []
    for method, seed in tqdm(jobs, desc="qrm RL runs"):
        runs.append(rl_stage(method, seed, cfg, policy_path, scorers[METHODS[method][1]], data, work, force))
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
    extra = {
        "rm": rms,
        "steps_to_threshold": speed,
        "test_pass@1": summary,
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
            "eval": "greedy, max_tokens " + str(cfg.eval.max_tokens),
            "rollouts": "temperature 1.0, top-p 1.0",
        },
        extra=extra,
        root=root,
    )


def _int_keys(gru: dict) -> dict:
    """JSON turns the curves' int seed keys into strings; give them back."""
    return gru | {"curves": {a: {int(k): v for k, v in c.items()} for a, c in gru["curves"].items()}}
