"""The toy run's data and reward-model stages: the world's splits and pairs, Q-RM / ORM scorers and the DPO-RM.

Spec `shared/papers/qrm.md` ("Step-by-step algorithm" 1-2, "Baselines as implemented"); README "Toy
design". The RMs are trained on the RM backbone (`RMConfig.backbone`: a toy base-model size, larger than
the policy as in the paper) on the train split's preference pairs, and their pairwise accuracy is
measured on the validation split's pairs (Q-RM: mean token score; ORM: last-token score; DPO-RM: the
summed log-ratio, DPO's implicit reward). Every stage is cached under `runs/qrm/<scale>/` by a hash of
its settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from common.models import load_causal_lm, load_tokenizer
from common.synthetic.base_models import get_base_model
from common.synthetic.flaws import preference_pairs
from common.synthetic.world import make_splits
from papers.qrm.config import QRMConfig
from papers.qrm.reward_models import (
    DPORewardModel,
    RMTrainConfig,
    TokenScorer,
    log_ratio_margins,
    pairwise_accuracy,
    train_dpo_reward_model,
    train_reward_model,
    world_preference_pairs,
)


def stage_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_json(path: Path, force: bool, compute, write: bool = True) -> dict:
    """Read path (JSON) unless forced; else compute, write atomically (unless `write` is False: the other
    processes of a multi-process run), return."""
    if path.exists() and not force:
        return json.loads(path.read_text())
    result = compute()
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(path)
    return result


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


def model_path(name: str) -> Path:
    """A toy base-model size ("student" | "mid" | "teacher", trained on first use) or a folder / hub id."""
    return get_base_model(name) if name in ("student", "mid", "teacher") else Path(name)


def rm_stage(kind: str, cfg: QRMConfig, rm_path: Path, data: dict, work: Path, force: bool) -> tuple:
    """Train (or load) the Q-RM / ORM scorer on the RM backbone; return (scorer, info with validation
    pairwise accuracy: mean token score for the Q-RM, last-token score for the ORM)."""
    rm = cfg.rm
    key = stage_hash(
        {"kind": kind, "rm": asdict(rm), "backbone": str(rm_path), "n": len(data["train_pairs"])}
    )
    out = work / f"rm-{kind}-{key}"
    tok = load_tokenizer(rm_path)
    if (out / "info.json").exists() and not force:
        return TokenScorer.load(out / "scorer"), json.loads((out / "info.json").read_text())
    start = time.perf_counter()
    scorer = TokenScorer.from_backbone(rm_path, lora_rank=rm.lora_rank, seed=rm.seed)
    losses = train_reward_model(scorer, tok, data["train_pairs"], kind, _rm_train_cfg(rm), progress=True)
    reduce = "mean" if kind == "qrm" else "last"
    acc = pairwise_accuracy(scorer, tok, data["val_pairs"], reduce=reduce, max_len=rm.max_len)
    info = _rm_info(kind, acc, losses, data, start)
    scorer.save(out / "scorer")
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return scorer, info


def _rm_train_cfg(rm, lr: float | None = None) -> RMTrainConfig:
    return RMTrainConfig(
        lr=rm.lr if lr is None else lr,
        batch_size=rm.batch_size,
        max_steps=rm.max_steps,
        max_len=rm.max_len,
        beta=rm.beta,
        gamma=rm.gamma,
        dpo_beta=rm.dpo_beta,
        seed=rm.seed,
    )


def _rm_info(kind: str, acc: float, losses: list[float], data: dict, start: float) -> dict:
    return {
        "kind": kind,
        "val_pairwise_accuracy": acc,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "steps": len(losses),
        "train_pairs": len(data["train_pairs"]),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def dpo_stage(cfg: QRMConfig, rm_path: Path, data: dict, work: Path, force: bool) -> tuple:
    """Train (or load) the DPO-RM: DPO (summed log-probs, beta rm.dpo_beta, lr rm.dpo_lr) of the RM backbone
    against its frozen copy on the same pairs as the Q-RM; return (DPORewardModel, info)."""
    rm = cfg.rm
    key = stage_hash(
        {"kind": "dpo", "rm": asdict(rm), "backbone": str(rm_path), "n": len(data["train_pairs"])}
    )
    out = work / f"rm-dpo-{key}"
    tok = load_tokenizer(rm_path)
    dpo = DPORewardModel(load_causal_lm(rm_path, dtype=torch.float32), lora_rank=rm.lora_rank)
    if (out / "info.json").exists() and not force:
        dpo.policy.load_state_dict(load_causal_lm(out / "policy", dtype=torch.float32).state_dict())
        return dpo.eval(), json.loads((out / "info.json").read_text())
    start = time.perf_counter()
    losses = train_dpo_reward_model(
        dpo, tok, data["train_pairs"], _rm_train_cfg(rm, rm.dpo_lr), progress=True
    )
    margins = log_ratio_margins(dpo, tok, data["val_pairs"], 32, max_len=rm.max_len)
    info = _rm_info("dpo", sum(m > 0 for m in margins) / len(margins), losses, data, start)
    dpo.policy.save_pretrained(out / "policy")
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return dpo.eval(), info
