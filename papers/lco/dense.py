"""The dense-advantage part of LCO's recipe (spec sections 4 and 6; `dense.enabled`), as cached stages:

- `pairs_stage`: `dense.pair_prompts` training-split prompts (seeded shuffle), `dense.pair_samples` samples
  each from the starting policy at the rollout temperature, graded by the rule verifier; a prompt with
  both a correct and an incorrect sample gives up to `dense.pairs_per_prompt` (chosen = correct, rejected =
  incorrect) pairs. The last fifth of the prompts give the held-out pairs (at most `dense.heldout_pairs`);
  nothing comes from the validation or test split.
- `rm_stage`: the Q-RM (a copy of the starting policy trained with L_QRM on its own log-softmax, the later
  framework's variant: `common.token_rm.CausalLMTokenRM`) or the DPO-RM (DPO of a copy against the frozen
  starting policy, `common.token_rm.DPORewardModel`); its held-out pairwise accuracy (Q-RM: mean log phi of
  the response tokens; DPO-RM: summed log-ratio), before and after training.
- `dense_rl_stage`: one RL run (`common.rl_loop.run_rl`) of LCO-KLD with the source's top-k advantages
  (`arms.DenseLCOPolicyLoss`) or of PPO-clip with the source's token reward (`arms.dense_reward`, critic +
  GAE as the rule-verifier PPO arm), in `rl`'s regime at its lr; then the test and sampled scores.
Models start from the toy world's rl-student (or the real task's policy); stages are cached under
`runs/lco/<scale>/dense/` by a hash of their resolved settings.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import torch

from common.generation import HFGenerator
from common.models import load_causal_lm, load_tokenizer
from common.rl_loop import run_rl
from common.sampling import SamplingParams
from common.stages import cached_json, stage_hash
from common.token_rm import (
    CausalLMTokenRM,
    DPORewardModel,
    RMTrainConfig,
    log_ratio_margins,
    pairwise_accuracy,
    train_dpo_reward_model,
    train_qrm,
)
from papers.lco.arms import DenseLCOPolicyLoss, DenseSource, ValueCritic, dense_reward
from papers.lco.config import DENSE_SOURCES, LCOConfig, regime
from papers.lco.stages import pass_at_1, policy_path, rl_config, task_of, val_greedy, val_sampled

VERSION = 1
RM_SEED = 0


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pair_up(prompt: str, texts: list[str], correct: list[bool], limit: int) -> list[dict]:
    """Up to `limit` (correct, incorrect) pairs of one prompt's samples, cycling through the shorter side."""
    good = [t for t, ok in zip(texts, correct) if ok]
    bad = [t for t, ok in zip(texts, correct) if not ok]
    if not good or not bad:
        return []
    n = min(limit, max(len(good), len(bad)))
    return [
        {"prompt": prompt, "chosen": good[i % len(good)], "rejected": bad[i % len(bad)]} for i in range(n)
    ]


def pairs_stage(cfg: LCOConfig, work: Path, force: bool, data_dir: str | None = None) -> dict:
    """{"train": [pairs], "heldout": [pairs], "stats": {...}} (module doc)."""
    rl, d = regime(cfg.rl), cfg.dense
    settings = {
        k: getattr(d, k) for k in ("pair_prompts", "pair_samples", "pairs_per_prompt", "heldout_pairs")
    }
    key = stage_hash({"rl": asdict(rl), "pairs": settings, "v": VERSION})

    def compute() -> dict:
        path, task = policy_path(rl), task_of(rl, data_dir)
        tok, policy = load_tokenizer(path), load_causal_lm(path, dtype=torch.float32, device=_device())
        order = list(range(len(task.train)))
        random.Random(0).shuffle(order)
        chosen = order[: d.pair_prompts]
        prompts = [task.train.prompts[i] for i in chosen]
        params = SamplingParams(
            n=d.pair_samples, temperature=rl.temperature, max_tokens=rl.max_tokens, seed=0
        )
        texts: list[list[str]] = [[] for _ in prompts]
        for c in HFGenerator(policy, tok, batch_size=128, progress=False).generate(prompts, params):
            texts[c.prompt_index].append(c.text)
        held_from = len(prompts) - len(prompts) // 5
        out: dict[str, list[dict]] = {"train": [], "heldout": []}
        correct_total = 0
        for j, (i, samples) in enumerate(zip(chosen, texts)):
            ok = [task.is_correct(t, task.train.answers[i]) for t in samples]
            correct_total += sum(ok)
            out["train" if j < held_from else "heldout"] += pair_up(
                prompts[j], samples, ok, d.pairs_per_prompt
            )
        out["heldout"] = out["heldout"][: d.heldout_pairs]
        if not out["train"] or not out["heldout"]:
            raise ValueError(
                f"lco dense pairs: {len(out['train'])} train / {len(out['heldout'])} held-out pairs"
            )
        stats = {
            "prompts": len(prompts),
            "samples": sum(map(len, texts)),
            "sample_accuracy": correct_total / max(1, sum(map(len, texts))),
            "train_pairs": len(out["train"]),
            "heldout_pairs": len(out["heldout"]),
        }
        return out | {"stats": stats}

    return cached_json(work / "dense" / f"pairs-{key}.json", force, compute)


def _rm_config(cfg: LCOConfig) -> RMTrainConfig:
    d = cfg.dense
    return RMTrainConfig(
        lr=d.rm_lr,
        batch_size=d.rm_batch_size,
        max_steps=d.rm_steps,
        max_len=d.rm_max_len,
        beta=d.qrm_beta,
        gamma=d.qrm_gamma,
        dpo_beta=d.dpo_beta,
        seed=RM_SEED,
        mixed_precision="no",
    )


def heldout_accuracy(kind: str, model, tok, pairs: list[dict], max_len: int) -> float:
    """Fraction of held-out pairs ranked right: Q-RM by mean log phi, DPO-RM by the summed log-ratio."""
    if kind == "qrm":
        return pairwise_accuracy(model, tok, pairs, "mean", batch_size=32, max_len=max_len)
    margins = log_ratio_margins(model, tok, pairs, batch_size=32, max_len=max_len)
    return sum(m > 0 for m in margins) / len(margins)


def rm_stage(source: str, cfg: LCOConfig, work: Path, force: bool, pairs: dict) -> dict:
    """Train one dense source (module doc); {"path", "kind", "accuracy_before", "accuracy", "losses"}."""
    rl, kind, rm_cfg = regime(cfg.rl), DENSE_SOURCES[source], _rm_config(cfg)
    key = stage_hash(
        {"rl": asdict(rl), "rm": asdict(rm_cfg), "pairs": pairs["stats"], "kind": kind, "v": VERSION}
    )
    out = work / "dense" / f"rm-{kind}-{key}"

    def compute() -> dict:
        path = policy_path(rl)
        tok, lm = load_tokenizer(path), load_causal_lm(path, dtype=torch.float32, device=_device())
        model = CausalLMTokenRM(lm) if kind == "qrm" else DPORewardModel(lm)
        before = heldout_accuracy(kind, model, tok, pairs["heldout"], rm_cfg.max_len)
        train = train_qrm if kind == "qrm" else train_dpo_reward_model
        losses = train(model, tok, pairs["train"], rm_cfg, progress=False)
        after = heldout_accuracy(kind, model, tok, pairs["heldout"], rm_cfg.max_len)
        (model.lm if kind == "qrm" else model.policy).save_pretrained(out / "model")
        tok.save_pretrained(out / "model")
        every = max(1, len(losses) // 10)
        return {
            "path": str(out / "model"),
            "kind": kind,
            "accuracy_before": before,
            "accuracy": after,
            "losses": losses[::every],
        }

    return cached_json(out / "result.json", force, compute)


def load_source(kind: str, rm_path: str, policy: str, batch: int | None) -> DenseSource:
    lm = load_causal_lm(rm_path, dtype=torch.float32, device=_device())
    if kind == "qrm":
        return DenseSource(kind, CausalLMTokenRM(lm), batch)
    reference = load_causal_lm(policy, dtype=torch.float32, device=_device())
    return DenseSource(kind, DPORewardModel(lm, reference=reference), batch)


def dense_rl_stage(
    source: str,
    method: str,
    seed: int,
    cfg: LCOConfig,
    work: Path,
    force: bool,
    rm: dict,
    data_dir: str | None = None,
    initial_eval: dict | None = None,
) -> dict:
    """One dense RL run: {"method": "<method> (<source>)", "source", "factor", "lr", "seed", "curve", "test"}."""
    rl, d = regime(cfg.rl), cfg.dense
    dense = {k: getattr(d, k) for k in ("k", "beta", "reward_sub_mean")}
    key = stage_hash(
        {"rl": asdict(rl), "dense": dense, "rm": rm["path"], "method": method, "seed": seed, "v": VERSION}
    )
    out = work / "dense" / f"rl-{method}-{DENSE_SOURCES[source]}-s{seed}-{key}"

    def compute() -> dict:
        path, task = policy_path(rl), task_of(rl, data_dir)
        tok = load_tokenizer(path)
        policy = load_causal_lm(path, dtype=torch.float32, device=_device())
        src = load_source(rm["kind"], rm["path"], path, rl.forward_batch_size)
        run = rl_config(cfg, method, 1.0, seed, out)
        critic, policy_loss = None, None
        if method == "PPO":
            critic = ValueCritic(load_causal_lm(path, dtype=torch.float32, device=_device()))
        else:
            policy_loss = DenseLCOPolicyLoss(src, d.beta, d.k, rl.forward_batch_size)
        reward = dense_reward(
            src, tok, task.train.prompts, task.train.answers, task.is_correct, d.reward_sub_mean
        )
        curve = run_rl(
            policy,
            tok,
            task.train.prompts,
            reward,
            run,
            critic=critic,
            evaluate=lambda m: val_greedy(m, tok, task, rl),
            initial_eval=initial_eval,
            forward_batch_size=rl.forward_batch_size,
            policy_loss=policy_loss,
        )
        return {
            "method": f"{method} ({source})",
            "source": source,
            "factor": 1.0,
            "lr": run.lr,
            "seed": seed,
            "curve": curve,
            "test": pass_at_1(policy, tok, task.test, task, rl.max_tokens),
            "val_sampled": val_sampled(policy, tok, task, rl),
        }

    return cached_json(out / "result.json", force, compute)
