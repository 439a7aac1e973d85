"""The stages of the recipe, one set for every scale: GLPFT and its baselines (train), static eval, live loop.

    models = train_condition("alpha-UMi", new_model, encoded, steps, work, seed)   # {role: model}
    agent = make_agent(condition, models, gen_fn, templates, prefix, planner_tag)

Conditions (spec "Toy-scale check", equal step budget S = s1 + s2 per model):
    Single-LLM              one model on D_backbone for S steps (backbone format at inference)
    Single-LLM multi-task   one model on D_planner + D_caller + D_summarizer for S steps, all three roles
    Multi-LLM one-stage     three models from scratch, each on its own role data for S steps
    alpha-UMi               GLPFT: one model on D_backbone for s1 steps, three copies, each s2 steps on its role
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from common.generation import HFGenerator, SamplingParams
from common.train import TrainConfig
from papers.umi.agent import Agent
from papers.umi.config import UmiConfig
from papers.umi.training import train_sft

log = logging.getLogger(__name__)
CONDITIONS = ("Single-LLM", "Single-LLM multi-task", "Multi-LLM one-stage", "alpha-UMi")
SPLIT_ROLES = ("planner", "caller", "summarizer")


def _train(model, data, steps: int, lr: float, cfg: UmiConfig, out: Path, seed: int, pad_id: int) -> float:
    tc = TrainConfig(
        output_dir=str(out),
        max_steps=steps,
        batch_size=min(cfg.train.batch_size, len(data)),
        lr=lr,
        weight_decay=cfg.train.weight_decay,
        warmup_steps=round(cfg.train.warmup * steps),
        lr_schedule="cosine",
        seed=seed,
        progress=False,
        report_to="none",
    )
    return train_sft(model, data, tc, pad_id).final_loss


def train_condition(
    condition: str,
    new_model: Callable[[], torch.nn.Module],
    encoded: dict[str, list[dict]],
    cfg: UmiConfig,
    work: Path,
    seed: int,
    pad_id: int,
) -> tuple[dict[str, torch.nn.Module], dict[str, float]]:
    """The trained models of one condition ({role: model}; roles may share one model) and final losses."""
    s1, s2, total = cfg.train.s1, cfg.train.s2, cfg.train.s1 + cfg.train.s2
    lr2 = cfg.train.lr_stage2 or cfg.train.lr
    losses: dict[str, float] = {}
    if condition == "Single-LLM":
        model = new_model()
        losses["backbone"] = _train(
            model, encoded["backbone"], total, cfg.train.lr, cfg, work / "backbone", seed, pad_id
        )
        return {"backbone": model}, losses
    if condition == "Single-LLM multi-task":
        model = new_model()
        union = [ex for r in SPLIT_ROLES for ex in encoded[r]]
        losses["multitask"] = _train(model, union, total, cfg.train.lr, cfg, work / "multitask", seed, pad_id)
        return dict.fromkeys(SPLIT_ROLES, model), losses
    if condition == "Multi-LLM one-stage":
        models = {}
        for r in SPLIT_ROLES:
            models[r] = new_model()
            losses[r] = _train(models[r], encoded[r], total, cfg.train.lr, cfg, work / r, seed, pad_id)
        return models, losses
    if condition != "alpha-UMi":
        raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")
    base = new_model()
    losses["stage1"] = _train(base, encoded["backbone"], s1, cfg.train.lr, cfg, work / "stage1", seed, pad_id)
    models = {}
    for r in SPLIT_ROLES:  # stage 2: three separate copies of the global model
        models[r] = copy.deepcopy(base)
        losses[r] = _train(models[r], encoded[r], s2, lr2, cfg, work / f"stage2-{r}", seed, pad_id)
    return models, losses


def generator(
    model, tokenizer, cfg: UmiConfig, max_input: int, seed: int, stop: tuple[str, ...] = (), engine=None
):
    """`prompts -> texts` for one model: prompts left-truncated to `max_input` tokens, greedy by default
    (the official sampling with `eval.greedy=false`). `engine`: a ready `Generator` serving `model` (e.g. a
    `VLLMGenerator` on its saved folder); None: our HF decode loop on the in-memory model."""
    gen = engine or HFGenerator(model, tokenizer, batch_size=cfg.eval.batch_size, progress=False)
    if cfg.eval.greedy:
        params = SamplingParams(
            temperature=0.0, max_tokens=cfg.eval.max_new_tokens, stop=list(stop), seed=seed
        )
    else:
        params = SamplingParams(
            temperature=cfg.eval.temperature,
            top_p=cfg.eval.top_p,
            max_tokens=cfg.eval.max_new_tokens,
            stop=list(stop),
            seed=seed,
        )

    def run(prompts: list[str]) -> list[str]:
        if hasattr(tokenizer, "stoi"):
            ids = [tokenizer.encode(p)[-max_input:] for p in prompts]
        else:
            ids = [tokenizer(p)["input_ids"][-max_input:] for p in prompts]
        return [c.text for c in gen.generate(ids, params)]

    return run


def make_agent(
    condition: str, models: dict, gen_fn: Callable, templates: dict | None, cfg: UmiConfig
) -> Agent:
    """The agent of one condition; `gen_fn(model) -> prompts -> texts`."""
    prefix = "system: " if cfg.train.system_prefix and not cfg.eval.official_prompts else ""
    tag = "planner" if cfg.eval.official_prompts else "assistant"
    cache: dict[int, Callable] = {}
    roles = {}
    for role, model in models.items():
        if id(model) not in cache:
            cache[id(model)] = gen_fn(model)
        roles[role] = cache[id(model)]
    mode = "backbone" if condition == "Single-LLM" else "multi"
    return Agent(roles=roles, mode=mode, templates=templates, prefix=prefix, planner_tag=tag)
