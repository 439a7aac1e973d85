"""LCO's stages, each cached under `runs/lco/<scale>/` by a hash of its settings (`--force` reruns it):

- `stability_job`: one run of the GRU stability check (arm, lr, seed), a JSON file per run;
- `sft_stage`: the starting policy's greedy Pass@1 on the curve (validation) and test problems, and its
  sampled validation Pass@1;
- `rl_stage`: one RL run (method, lr factor, seed) through `common.rl_loop.run_rl` (resumable per chunk),
  then greedy Pass@1 on the test problems and sampled Pass@1 on the validation problems.
The RL regime is `config.regime(cfg.rl)`: fields left None are read from `GateConfig()` when the run starts,
and the hash covers the resolved values, so a recalibrated gate reruns the RL stages.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from common.generation_vllm import vllm_available
from common.models import load_causal_lm, load_tokenizer
from common.rl_loop import RLConfig, VLLMPolicyEngine, evaluate_pass_at_k, run_rl
from common.stages import cached_json, stage_hash
from common.synthetic.base_models import get_base_model
from papers.lco.arms import LCOPolicyLoss, ValueCritic, verifier_reward
from papers.lco.config import METHODS, LCOConfig, RLConfigLCO, regime
from papers.lco.data import Task, make_task
from papers.lco.stability import run_arm

VERSION = 2  # 2: sampled Pass@1 at the start and end of a run only (was every curve point)
WARM_LR_FACTOR = 0.1  # the gate's run_seed: lr x 0.1 for its warm_chunks


def stability_job(
    arm: str, lr: float, seed: int, iterations: int, beta: float, work: Path, force: bool
) -> dict:
    key = stage_hash(
        {"arm": arm, "lr": lr, "seed": seed, "iterations": iterations, "beta": beta, "v": VERSION}
    )
    path = work / "stability" / f"{arm}-lr{lr:g}-s{seed}-{key}.json"
    return cached_json(path, force, lambda: run_arm(arm, lr, seed, iterations, beta))


def policy_path(rl: RLConfigLCO) -> str:
    """The starting policy: a base-model size of the toy world (trained on first use), a model folder, or an
    HF id."""
    if rl.task == "arith" and not Path(rl.policy).is_dir():
        return str(get_base_model(rl.policy))
    return rl.policy


def task_of(rl: RLConfigLCO, data_dir: str | None) -> Task:
    return make_task(rl.task, policy_path(rl), rl.val_problems, rl.test_problems, data_dir)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _engine(cfg: LCOConfig, tok, workdir: Path, seed: int) -> VLLMPolicyEngine | None:
    use = cfg.backend == "vllm" or (cfg.backend == "auto" and vllm_available() and torch.cuda.is_available())
    if not use:
        return None
    kwargs = (
        {"gpu_memory_utilization": cfg.vllm_memory, "dtype": "bfloat16"} if torch.cuda.is_available() else {}
    )
    return VLLMPolicyEngine(tok, workdir, seed=seed, **kwargs)


def pass_at_1(
    model, tok, problems, task: Task, max_tokens: int, generator=None, n: int = 1, seed: int = 0
) -> float:
    """Greedy Pass@1 (n = 1), or sampled Pass@1 from n samples per problem at T = 1 (fixed `seed`)."""
    grade = lambda i, text: task.is_correct(text, problems.answers[i])  # noqa: E731
    temperature = 1.0 if n > 1 else 0.0
    return evaluate_pass_at_k(
        model,
        tok,
        problems.prompts,
        grade,
        n=n,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        generator=generator,
    )["pass@1"]


def val_greedy(model, tok, task: Task, rl: RLConfigLCO, generator=None) -> dict[str, float]:
    """A curve point: greedy Pass@1 on the validation problems (the drawdown is over these)."""
    return {"val_pass@1": pass_at_1(model, tok, task.val, task, rl.max_tokens, generator)}


def val_sampled(model, tok, task: Task, rl: RLConfigLCO, generator=None) -> float | None:
    """Sampled Pass@1 at T = 1 from `sampled_n` samples per validation problem, seed 1 (the gate's); None when
    `sampled_n` is 1. Measured at the start and at the end of a run only: the curve is greedy."""
    if rl.sampled_n <= 1:
        return None
    return pass_at_1(model, tok, task.val, task, rl.max_tokens, generator, n=rl.sampled_n, seed=1)


def sft_stage(cfg: LCOConfig, work: Path, force: bool, data_dir: str | None = None) -> dict:
    """The starting policy's curve evaluation ("val": greedy, "val_sampled", and "eval": the dict every arm's
    chunk 0 reuses) and "test" greedy Pass@1."""
    rl = regime(cfg.rl)
    key = stage_hash({"rl": asdict(rl), "v": VERSION})

    def compute() -> dict:
        path, task = policy_path(rl), task_of(rl, data_dir)
        tok, policy = load_tokenizer(path), load_causal_lm(path, dtype=torch.float32, device=_device())
        scores = val_greedy(policy, tok, task, rl)
        return {
            "val": scores["val_pass@1"],
            "val_sampled": val_sampled(policy, tok, task, rl),
            "eval": scores,
            "test": pass_at_1(policy, tok, task.test, task, rl.max_tokens),
        }

    return cached_json(work / f"sft-{key}.json", force, compute)


def rl_config(cfg: LCOConfig, method: str, factor: float, seed: int, out: Path) -> RLConfig:
    rl, (algorithm, _) = regime(cfg.rl), METHODS[method]
    rollouts = rl.prompts_per_chunk * rl.samples_per_prompt
    return RLConfig(
        output_dir=str(out),
        chunks=rl.chunks,
        prompts_per_chunk=rl.prompts_per_chunk,
        algorithm=algorithm,
        advantage="gae",
        samples_per_prompt=rl.samples_per_prompt,
        minibatch_size=max(rollouts // rl.updates_per_chunk, 1),
        lr=rl.lr * factor,
        warm_lr_factor=WARM_LR_FACTOR,
        warm_chunks=rl.warm_chunks,
        critic_lr=rl.critic_lr,
        gamma=rl.gae_gamma,
        lam=rl.gae_lambda,
        temperature=rl.temperature,
        max_tokens=rl.max_tokens,
        max_grad_norm=rl.max_grad_norm,
        loss_norm=rl.loss_norm,
        eval_every=rl.eval_every,  # gate (4): the drawdown is over these points; grad norm is every chunk
        generation_batch_size=128,
        seed=seed,
        progress=False,
        report_to="none",
        log_grad_norm=True,
    )


def rl_stage(
    method: str,
    factor: float,
    seed: int,
    cfg: LCOConfig,
    work: Path,
    force: bool,
    data_dir: str | None = None,
    initial_eval: dict | None = None,
) -> dict:
    """One RL run: {"method", "factor", "lr", "seed", "curve" (per chunk: val_pass@1, grad_norm, ...), "test"}."""
    rl = regime(cfg.rl)
    _, variant = METHODS[method]
    loss = asdict(cfg.loss) if variant else None
    key = stage_hash(
        {"rl": asdict(rl), "loss": loss, "method": method, "factor": factor, "seed": seed, "v": VERSION}
    )
    out = work / f"rl-{method}-x{factor:g}-s{seed}-{key}"

    def compute() -> dict:
        path, task = policy_path(rl), task_of(rl, data_dir)
        tok = load_tokenizer(path)
        policy = load_causal_lm(path, dtype=torch.float32, device=_device())
        engine = _engine(cfg, tok, out / "vllm", seed)
        gen = (lambda: engine(policy)) if engine else (lambda: None)
        run = rl_config(cfg, method, factor, seed, out)
        critic, kind, policy_loss = None, rl.advantage, None
        if method == "PPO":
            critic, kind = (
                ValueCritic(load_causal_lm(path, dtype=torch.float32, device=_device())),
                "terminal",
            )
        if variant:
            c = cfg.loss
            policy_loss = LCOPolicyLoss(
                variant, c.beta, c.negative_beta_scale, c.anchor, c.logits_topk, rl.forward_batch_size
            )
        curve = run_rl(
            policy,
            tok,
            task.train.prompts,
            verifier_reward(tok, task.train.prompts, task.train.answers, task.is_correct, kind),
            run,
            critic=critic,
            evaluate=lambda m: val_greedy(m, tok, task, rl, gen()),
            initial_eval=initial_eval,  # the SFT policy's evaluation (same policy, same deterministic eval)
            generator_factory=(lambda p: engine(p)) if engine else None,
            forward_batch_size=rl.forward_batch_size,
            policy_loss=policy_loss,
        )
        test = pass_at_1(policy, tok, task.test, task, rl.max_tokens, gen())
        sampled = val_sampled(policy, tok, task, rl, gen())
        return {
            "method": method,
            "factor": factor,
            "lr": run.lr,
            "seed": seed,
            "curve": curve,
            "test": test,
            "val_sampled": sampled,
        }

    return cached_json(out / "result.json", force, compute)
