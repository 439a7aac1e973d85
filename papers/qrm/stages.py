"""The stages of a Q-RM run, one implementation for every scale; each takes a `Task` (`data.py`).

Spec `shared/papers/qrm.md` ("Step-by-step algorithm", "Baselines as implemented", "Evaluation"):
- `pairs_stage`: the task's training pairs (toy: the world's; real: sampled from the policy, `build_pairs`,
  on the main process, resumable by chunk), shuffled (seed 0) and capped at `data.rm_pairs`.
- `rm_stage`: Q-RM (`qrm_loss`), ORM (BT on the last token), DPO-RM (`train_dpo_reward_model`) or implicit
  PRM (`train_implicit_prm`) on the RM backbone, prompts in the policy tokenizer's chat template for real
  tasks; pairwise accuracy on the task's held-out pairs (Q-RM: mean token score; ORM: last score; DPO-RM /
  implicit PRM: summed log-ratio). Under `accelerate launch` every process trains, the main one writes.
- `sft_stage` / `score`: greedy Pass@1 of the policy before RL on the curve and test problems, plus an
  unbiased sampled Pass@1 (`eval.sampled_n`) and Pass@k (`eval.pass_k`) on the test problems.
- `rl_stage`: one `common.rl_loop.run_rl` run (resumable by chunk) with the arm's `make_reward_fn`, Pass@1
  on the curve problems every `eval.eval_every` chunks, the test scores at the end. PPO critic: a fresh head
  on the policy backbone (`ppo.critic_init="policy"`) or on the arm's RM (`"rm"`, the code; the DPO-RM and
  implicit-PRM arms start from the ORM's backbone).
Every stage is cached under `runs/qrm/<scale>/` by a hash of its settings (`common.stages`).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.generation import Generator, HFGenerator, vllm_available
from common.models import load_causal_lm, load_tokenizer
from common.rl_loop import RLConfig, VLLMPolicyEngine, evaluate_pass_at_k, run_rl
from common.stages import atomic_write_json, barrier, cached_json, is_main_process, read_json, stage_hash
from common.synthetic.base_models import SIZES, get_base_model
from papers.qrm.config import LOG_RATIO_KINDS, METHODS, QRMConfig
from papers.qrm.data import Problems, Task, build_pairs, read_pairs
from papers.qrm.gru_check import run_gru_check
from papers.qrm.reward_models import (
    DPORewardModel,
    RMTrainConfig,
    TokenScorer,
    log_ratio_margins,
    pairwise_accuracy,
    train_dpo_reward_model,
    train_implicit_prm,
    train_reward_model,
)
from papers.qrm.rewards import RowBatched, make_reward_fn

VERSION = 3  # bump to invalidate every cached stage


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_path(name: str) -> str:
    """A toy base-model size ("student" | "mid" | "teacher", trained on first use) or a folder / hub id."""
    return str(get_base_model(name)) if name in SIZES else name


def check_tokenizers(policy_tok, rm_tok, policy: str, rm: str) -> None:
    """RMs and critics score the rollouts' token ids: the two tokenizers must agree."""
    probe = "Q-RM: 12 eggs cost $3.50 each; \\frac{1}{2} of them."
    if (
        policy_tok.vocab_size != rm_tok.vocab_size
        or policy_tok(probe)["input_ids"] != rm_tok(probe)["input_ids"]
    ):
        raise ValueError(f"qrm: the RM backbone {rm} does not share the tokenizer of the policy {policy}")


class Sampler:
    """The generator of a policy in memory: one vLLM engine that follows it (CUDA), else None (the HF
    generator `run_rl` / `evaluate_pass_at_k` build themselves)."""

    def __init__(self, cfg: QRMConfig, tok, work: Path):
        use_vllm = cfg.backend == "vllm" or (
            cfg.backend == "auto" and vllm_available() and torch.cuda.is_available()
        )
        kwargs = (
            {"gpu_memory_utilization": cfg.vllm_memory, "dtype": "bfloat16"}
            if torch.cuda.is_available()
            else {}
        )
        self.tok = tok
        self.engine = VLLMPolicyEngine(tok, work / "vllm-engine", **kwargs) if use_vllm else None

    def __call__(self, policy: torch.nn.Module) -> Generator | None:
        return self.engine(policy) if self.engine is not None else None


class LazyGenerator:
    """Loads the policy and starts its generator only when a chunk of pairs is still missing."""

    def __init__(self, cfg: QRMConfig, sampler: Sampler):
        self.cfg, self.sampler, self.policy = cfg, sampler, None

    def generate(self, prompts, params):
        if self.policy is None:
            self.policy = load_causal_lm(self.cfg.policy, device=str(default_device()))
        gen = self.sampler(self.policy) or HFGenerator(self.policy, self.sampler.tok, progress=False)
        return gen.generate(prompts, params)


def gru_stage(cfg: QRMConfig, work: Path, force: bool) -> dict:
    """The spec's calibrated GRU check (`gru_check.run_gru_check`), cached."""
    g = cfg.gru
    key = stage_hash(asdict(g) | {"v": 1})
    return cached_json(
        work / f"gru-{key}.json",
        force,
        lambda: run_gru_check(g.seeds, g.iterations, progress=True, oracles=g.oracles, rm_steps=g.rm_steps),
    )


def pairs_stage(
    cfg: QRMConfig, task: Task, sampler: Sampler, work: Path, force: bool
) -> tuple[list, str, dict]:
    """(training pairs, their cache key, counts) of a task (module doc)."""
    if task.train_pairs is not None:
        return task.train_pairs, task.key, {"pairs": len(task.train_pairs)}
    key = stage_hash(
        {
            "task": task.key,
            "policy": cfg.policy,
            "prefs": asdict(cfg.prefs),
            "mode": cfg.data.gsm8k_mode,
            "v": VERSION,
        }
    )
    out = work / f"prefs-{task.name}-{key}"
    if is_main_process():
        if force and (out / "progress.json").exists():
            (out / "progress.json").unlink()
        build_pairs(LazyGenerator(cfg, sampler), task.train, cfg.prefs, out, task.name)
    barrier()
    state = read_json(out / "progress.json")
    counts = {k: sum(c[k] for c in state["chunks"]) for k in state["chunks"][0]}
    pairs = read_pairs(out)
    random.Random(0).shuffle(pairs)
    pairs = pairs[: cfg.data.rm_pairs]
    return pairs, stage_hash({"prefs": key, "n": len(pairs)}), counts


def _rm_dir(kind: str, cfg: QRMConfig, task: Task, pairs_key: str, n_pairs: int, work: Path) -> Path:
    lr = cfg.rm.dpo_lr if kind in LOG_RATIO_KINDS else cfg.rm.lr
    settings = {"kind": kind, "rm": asdict(cfg.rm), "lr": lr, "backbone": cfg.rm.backbone}
    key = stage_hash(settings | {"task": task.key, "pairs": pairs_key, "n": n_pairs, "v": VERSION})
    return work / f"rm-{task.name}-{kind}-{key}"


def load_rm(kind: str, cfg: QRMConfig, path: Path) -> torch.nn.Module:
    """A trained RM from its folder (eval mode, CPU): a TokenScorer, or a DPORewardModel (trainable weights)."""
    if kind not in LOG_RATIO_KINDS:
        return TokenScorer.load(path / "model")
    dpo = DPORewardModel(load_causal_lm(cfg.rm.backbone, dtype=torch.float32), cfg.rm.lora_rank)
    _, unexpected = dpo.load_state_dict(load_file(path / "model" / "trainable.safetensors"), strict=False)
    if unexpected:
        raise ValueError(f"{path}: unexpected weights {unexpected[:3]}")
    return dpo.eval()


def rm_stage(
    kind: str, cfg: QRMConfig, task: Task, pairs: list, pairs_key: str, work: Path, force: bool
) -> dict:
    """Train one reward model of a task (or find it trained); its info (held-out accuracy, steps, wall time)."""
    out = _rm_dir(kind, cfg, task, pairs_key, len(pairs), work)
    if (out / "info.json").exists() and not force:
        return read_json(out / "info.json") | {"dir": str(out)}
    # the RM's own tokenizer (the pipeline checks that it equals the policy's: `check_tokenizers`), so
    # that the RMs can train while the policy is still being made
    rm, tok = cfg.rm, load_tokenizer(cfg.rm.backbone)
    train_cfg = RMTrainConfig(
        lr=rm.dpo_lr if kind in LOG_RATIO_KINDS else rm.lr,
        batch_size=rm.batch_size,
        max_steps=rm.max_steps,
        max_len=rm.max_len,
        beta=rm.beta,
        gamma=rm.gamma,
        dpo_beta=rm.dpo_beta,
        chat_template=task.chat_template,
        seed=rm.seed,
    )
    encode = {"max_len": rm.max_len, "chat_template": task.chat_template}
    start = time.perf_counter()
    if kind in LOG_RATIO_KINDS:
        model = DPORewardModel(load_causal_lm(rm.backbone, dtype=torch.float32), rm.lora_rank)
        losses = (train_dpo_reward_model if kind == "dpo" else train_implicit_prm)(
            model, tok, pairs, train_cfg
        )
        margins = log_ratio_margins(model, tok, task.heldout_pairs, rm.dpo_eval_batch_size, **encode)
        accuracy = sum(m > 0 for m in margins) / len(margins)
    else:
        model = TokenScorer.from_backbone(rm.backbone, lora_rank=rm.lora_rank, seed=rm.seed)
        losses = train_reward_model(model, tok, pairs, kind, train_cfg)
        reduce = "mean" if kind == "qrm" else "last"
        accuracy = pairwise_accuracy(model, tok, task.heldout_pairs, reduce, rm.eval_batch_size, **encode)
    info = {
        "task": task.name,
        "kind": kind,
        "heldout_pairwise_accuracy": accuracy,
        "heldout_pairs": len(task.heldout_pairs),
        "train_pairs": len(pairs),
        "first_losses": losses[:5],
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "steps": len(losses),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if is_main_process():
        if kind in LOG_RATIO_KINDS:
            trainable = {
                f"policy.{n}": p.detach().cpu().clone()
                for n, p in model.policy.named_parameters()
                if p.requires_grad
            }
            (out / "model").mkdir(parents=True, exist_ok=True)
            save_file(trainable, out / "model" / "trainable.safetensors")
        else:
            model.save(out / "model")
        atomic_write_json(out / "info.json", info)
    barrier()
    return info | {"dir": str(out)}


def rl_config(method: str, cfg: QRMConfig, seed: int, out: Path) -> RLConfig:
    """The `run_rl` settings of an arm: every field from the preset (RLConfig's defaults are neutral)."""
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
            warm_lr_factor=r.warm_lr_factor,
            warm_chunks=r.warm_chunks,
            temperature=r.temperature,
            top_p=r.top_p,
            max_tokens=r.max_tokens,
            max_grad_norm=r.max_grad_norm,
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
        top_p=p.top_p,
        max_tokens=p.max_tokens,
        max_grad_norm=p.max_grad_norm,
        **common,
    )


def score(
    model, tok, problems: Problems, cfg: QRMConfig, generator: Generator | None = None, final: bool = True
) -> dict:
    """Greedy "Pass@1" on `problems`; with `final`, the unbiased sampled Pass@1 (`eval.sampled_n` samples,
    seed 12345) and Pass@k (`eval.pass_k` samples) at `eval.pass_k_temperature`. Fractions."""
    e, prompts = cfg.eval, problems.prompts
    out = {
        "Pass@1": evaluate_pass_at_k(
            model,
            tok,
            prompts,
            problems.grade,
            max_tokens=e.max_tokens,
            batch_size=e.batch_size,
            generator=generator,
        )["pass@1"]
    }
    if final and e.sampled_n > 0:
        out["Pass@1 (sampled)"] = evaluate_pass_at_k(
            model,
            tok,
            prompts,
            problems.grade,
            n=e.sampled_n,
            temperature=e.pass_k_temperature,
            max_tokens=e.max_tokens,
            seed=12345,
            batch_size=e.batch_size,
            generator=generator,
        )["pass@1"]
    if final and e.pass_k > 0:
        k = e.pass_k
        out[f"Pass@{k}"] = evaluate_pass_at_k(
            model,
            tok,
            prompts,
            problems.grade,
            n=k,
            ks=(k,),
            temperature=e.pass_k_temperature,
            max_tokens=e.max_tokens,
            batch_size=e.batch_size,
            generator=generator,
        )[f"pass@{k}"]
    return out


def sft_stage(cfg: QRMConfig, task: Task, sampler: Sampler, work: Path, force: bool) -> dict:
    """The policy before RL (the SFT row): {"val": greedy Pass@1 on the curve problems, "test": `score`}."""
    key = stage_hash({"policy": cfg.policy, "eval": asdict(cfg.eval), "task": task.key, "v": VERSION})

    def compute() -> dict:
        tok = load_tokenizer(cfg.policy)
        model = load_causal_lm(cfg.policy, dtype=torch.float32, device=str(default_device()))
        gen = sampler(model)
        return {
            "val": score(model, tok, task.val, cfg, gen, final=False)["Pass@1"],
            "test": score(model, tok, task.test, cfg, gen),
        }

    return cached_json(work / f"sft-{task.name}-{key}.json", force, compute, write=is_main_process())


def _critic(cfg: QRMConfig, seed: int, critic_from: str | None) -> torch.nn.Module:
    """A fresh value head (seeded 1000 + seed) on the policy backbone or on an RM's (`ppo.critic_init`)."""
    if cfg.ppo.critic_init == "policy":
        return TokenScorer.from_backbone(cfg.policy, seed=1000 + seed)
    scorer = TokenScorer.load(Path(critic_from) / "model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + seed)  # the code re-initialises the critic's value head
        scorer.head.reset_parameters()
    return scorer.train()


def rl_stage(
    method: str,
    seed: int,
    cfg: QRMConfig,
    task: Task,
    rm_dir: str | None,
    critic_from: str | None,
    sampler: Sampler,
    work: Path,
    force: bool,
    initial: dict | None = None,
) -> dict:
    """One RL run: the curve (greedy Pass@1 on `task.val`) and the final test scores (cached by settings).

    `initial`: the curve's first point when known (the SFT policy's greedy val score, `sft_stage`: the
    same for every arm and seed, so it is computed once); None evaluates the policy before training."""
    algorithm, kind = METHODS[method]
    rl_cfg = rl_config(method, cfg, seed, work / "tmp")
    section = cfg.reinforce if algorithm == "reinforce" else cfg.ppo
    key = stage_hash(
        {
            "method": method,
            "rl": asdict(rl_cfg) | {"output_dir": ""},
            "rewards": asdict(section),
            "rm": [asdict(cfg.rm), rm_dir and Path(rm_dir).name, critic_from and Path(critic_from).name],
            "policy": cfg.policy,
            "eval": asdict(cfg.eval),
            "task": task.key,
            "batch": cfg.forward_batch_size,
            "v": VERSION,
        }
    )
    out = work / f"rl-{task.name}-{method.replace('+', '_')}-s{seed}-{key}"
    rl_cfg.output_dir = str(out)

    def compute() -> dict:
        if force and (out / "rl_state.pt").exists():
            (out / "rl_state.pt").unlink()
        device = str(default_device())
        tok = load_tokenizer(cfg.policy)
        rm = None if kind == "oracle" else load_rm(kind, cfg, Path(rm_dir)).to(device)
        torch.manual_seed(seed)
        policy = load_causal_lm(cfg.policy, dtype=torch.float32, device=device)
        critic = ref = None
        if algorithm == "ppo":
            critic = _critic(cfg, seed, critic_from).to(device)
            critic = RowBatched(critic, cfg.forward_batch_size) if cfg.forward_batch_size else critic
            ref = load_causal_lm(cfg.policy, dtype=torch.float32, device=device).eval()
        start = time.perf_counter()
        curve = run_rl(
            policy,
            tok,
            task.train.prompts,
            make_reward_fn(method, cfg, rm, tok, task.train),
            rl_cfg,
            critic=critic,
            ref_model=ref,
            evaluate=lambda m: {
                "val_pass@1": score(m, tok, task.val, cfg, sampler(m), final=False)["Pass@1"]
            },
            generator_factory=sampler.engine,
            forward_batch_size=cfg.forward_batch_size,
            initial_eval=initial,
        )
        return {
            "task": task.name,
            "method": method,
            "seed": seed,
            "curve": curve,
            "test": score(policy, tok, task.test, cfg, sampler(policy)),
            "wall_s": round(time.perf_counter() - start, 1),
        }

    return cached_json(out / "result.json", force, compute, write=is_main_process())
