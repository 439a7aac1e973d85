"""alpha-UMi end to end, one driver for every scale: `python -m common.reproduce umi --scale toy|small|paper`.

What it does (spec `../shared/papers/umi.md`):
1. MiniToolBench (`cfg.toy`): per seed, a seeded world; 3,000 gold trajectories cut into backbone / planner
   / caller / summarizer samples by the production preprocessing; the four conditions of `stages.py`
   trained at an equal step budget; each evaluated on the static teacher-forced test steps (Plan ACC,
   Act. EM, Arg. F1, Hallu., R-L; `metrics.py`) and in the live loop where the roles call the world's
   tools (pass rate); the most-frequent-tool baseline; the spec's pass criteria over the seeds.
2. Real ToolBench OOD (`cfg.real`): the 1,547 static steps of the mirrored out_of_domain.json
   (stratified subsample `real.limit`), predicted by an HF model in all three roles: at toy scale
   SmolLM2-135M-Instruct zero-shot (a floor, not a reproduction), at small/paper scale after GLPFT on the
   mirrored train-example role data (`real.train`).
Departures (README "Deviations"): the toy budget is scaled down (config.TOY), the toy uses short
templates with the official slots, R-L is a plain LCS F1, the live pass rate is exact match in a
deterministic world (no ChatGPT judge), prompts at inference match training unless
`eval.official_prompts=true`.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from common.config import config_dict
from common.data import DataError
from common.generation import VLLMGenerator, resolve_backend, save_for_vllm
from common.models import ModelNotFoundError, build_tiny_causal_lm, load_causal_lm, load_tokenizer
from common.results import results_redirected, write_results
from common.stages import StageError, cached_json, runs_dir, stage_hash
from papers.umi.agent import predict_static, run_live
from papers.umi.config import UmiConfig
from papers.umi.data import (
    OOD_TEST,
    TRAIN_EXAMPLE,
    load_trajectories,
    role_datasets,
    static_steps,
    subsample_steps,
    toolbench_root,
)
from papers.umi.metrics import static_metrics
from papers.umi.preprocess import TrajectoryError
from papers.umi.report import write_block
from papers.umi.stages import CONDITIONS, generator, make_agent, train_condition
from papers.umi.training import encode_samples
from papers.umi.world import TOY_TEMPLATES, MiniToolBench, WordTokenizer

SLUG = "umi"
log = logging.getLogger(__name__)
GRADER = "papers/umi/metrics.py (official evaluate-multi_agent.py rules; R-L = LCS F1 on whitespace tokens)"
METRICS = ("Plan ACC", "Act. EM", "Arg. F1", "Hallu.", "Rouge-L")


def reproduce(
    cfg: UmiConfig, force: bool = False, data_dir: str | None = None, results_root: Path | None = None
) -> Path:
    """Every stage for the resolved `cfg`; returns papers/umi/results/<scale>/. A missing or malformed
    file, an unknown role or model stops with one line naming it."""
    try:
        return _reproduce(cfg, force, data_dir, results_root)
    except (DataError, TrajectoryError, ModelNotFoundError, StageError) as err:
        raise SystemExit(f"umi {cfg.scale}: {str(err).splitlines()[0]}") from None


def toy_seed(cfg: UmiConfig, seed: int, root: Path, force: bool) -> dict:
    """One seed of the MiniToolBench check: {condition: {static, live pass rate, losses}, frequent_tool}."""
    world = MiniToolBench(seed)
    train, test = world.trajectories(cfg.world.n_train, "train"), world.trajectories(cfg.world.n_test, "test")
    samples = role_datasets(
        train, f"minitoolbench seed {seed} train", cfg.train.stale_giveup_input, TOY_TEMPLATES
    )
    tok = WordTokenizer(s["input"] + s["target"] for rows in samples.values() for s in rows)
    prefix = "system: " if cfg.train.system_prefix else ""
    encoded = {r: encode_samples(tok, rows, cfg.train.max_len, prefix) for r, rows in samples.items()}
    steps = static_steps(test, f"minitoolbench seed {seed} test")
    m = cfg.model

    def new_model():
        return build_tiny_causal_lm(
            "tiny-student", vocab_size=len(tok), seed=seed, tokenizer=tok, hidden_size=m.hidden,
            num_hidden_layers=m.layers, num_attention_heads=m.heads, num_key_value_heads=m.heads,
            intermediate_size=m.ffn, max_position_embeddings=m.context,
        )  # fmt: skip

    out = {}
    for condition in CONDITIONS:
        blob = {
            "c": condition,
            "seed": seed,
            "train": config_dict(cfg)["train"],
            "model": config_dict(cfg)["model"],
        }
        blob |= {"world": config_dict(cfg)["world"], "eval": config_dict(cfg)["eval"], "v": 1}
        folder = root / "minitoolbench" / f"{condition.replace(' ', '_')}-s{seed}-{stage_hash(blob)}"

        def compute(condition=condition, folder=folder):
            t0 = time.perf_counter()
            models, losses = train_condition(
                condition, new_model, encoded, cfg, folder, seed, tok.pad_token_id
            )
            max_input = m.context - cfg.eval.max_new_tokens
            agent = make_agent(
                condition, models, lambda mod: generator(mod, tok, cfg, max_input, seed), TOY_TEMPLATES, cfg
            )
            preds = predict_static(agent, steps, cfg.eval.batch_size)
            live = run_live(agent, world, test[: cfg.world.n_live], cfg.eval.live_max_steps)
            return {
                "static": static_metrics(preds),
                "pass rate": 100 * statistics.mean(r["pass"] for r in live),
                "losses": losses,
                "wall_s": round(time.perf_counter() - t0, 1),
                "examples": [{k: p[k] for k in ("id", "reference", "prediction")} for p in preds[:5]],
            }

        out[condition] = cached_json(folder / "result.json", force, compute)
        log.info("umi toy seed %d %s: %s", seed, condition, json.dumps(out[condition]["static"]))
    actions = [s["target"].split("\n")[0] for s in samples["caller"]]
    top = max(sorted(set(actions)), key=actions.count).removeprefix("Action: ")
    calls = [s for s in steps if s["plan"] == "call"]
    out["frequent_tool"] = {
        "tool": top,
        "Act. EM": 100 * statistics.mean(top in s["gold"].split("\n")[0] for s in calls),
    }
    out["sizes"] = {
        "train samples": {r: len(v) for r, v in samples.items()},
        "test steps": len(steps),
        "vocab": len(tok),
    }
    return out


def criteria(per_seed: dict[int, dict]) -> dict:
    """The spec toy's pass criteria over the seeds' means."""

    def mean(cond, key):
        return statistics.mean(o[cond]["static"][key] for o in per_seed.values())

    def em_f1(cond):
        return (mean(cond, "Act. EM") + mean(cond, "Arg. F1")) / 2

    umi, single, one = em_f1("alpha-UMi"), em_f1("Single-LLM"), em_f1("Multi-LLM one-stage")
    freq = statistics.mean(o["frequent_tool"]["Act. EM"] for o in per_seed.values())
    return {
        "(EM+F1)/2 alpha-UMi >= Single-LLM + 2": [round(umi, 2), round(single, 2), umi >= single + 2],
        "(EM+F1)/2 alpha-UMi >= Multi-LLM one-stage": [round(umi, 2), round(one, 2), umi >= one],
        "Hallu. alpha-UMi <= Single-LLM": [
            round(mean("alpha-UMi", "Hallu."), 2), round(mean("Single-LLM", "Hallu."), 2),
            mean("alpha-UMi", "Hallu.") <= mean("Single-LLM", "Hallu."),
        ],
        "every condition beats the most-frequent tool on Act. EM": [
            {c: round(mean(c, "Act. EM"), 2) for c in CONDITIONS}, round(freq, 2),
            all(mean(c, "Act. EM") > freq for c in CONDITIONS),
        ],
    }  # fmt: skip


def role_engines(cfg: UmiConfig, tok, folder: Path) -> Callable:
    """`model -> Generator | None` for the real eval: None (the HF loop) unless the backend resolves to
    vLLM; then one vLLM engine per distinct model, the unmodified `real.model` loaded from its own path and
    a trained role model from a folder saved for vLLM, each given an equal share of the GPU's memory."""
    backend = resolve_backend(cfg.real.backend)
    if backend == "hf":
        return lambda model: None
    share = (
        {"gpu_memory_utilization": 0.85 / (3 if cfg.real.train else 1)} if torch.cuda.is_available() else {}
    )
    made: dict[int, VLLMGenerator] = {}

    def engine(model):
        if id(model) not in made:
            path = cfg.real.model
            if cfg.real.train:
                path = save_for_vllm(model, tok, folder / f"vllm-{len(made)}")
            made[id(model)] = VLLMGenerator(path, seed=0, **share)
        return made[id(model)]

    return engine


def real_eval(cfg: UmiConfig, data_dir: str | None, root: Path, force: bool) -> dict:
    """Static eval of an HF model on the ToolBench OOD steps (optionally after GLPFT on the mirrored
    train-example role data)."""
    tb = toolbench_root(data_dir)
    steps = subsample_steps(
        static_steps(load_trajectories(tb / OOD_TEST), str(tb / OOD_TEST)), cfg.real.limit
    )
    key = stage_hash(
        {
            "real": config_dict(cfg)["real"],
            "eval": config_dict(cfg)["eval"],
            "train": config_dict(cfg)["train"],
        }
    )
    folder = root / "real" / f"{cfg.real.model.replace('/', '_')}-{key}"

    cfg = replace(cfg, eval=replace(cfg.eval, max_new_tokens=cfg.real.max_new_tokens))

    def compute():
        t0 = time.perf_counter()
        tok = load_tokenizer(cfg.real.model)
        engines = role_engines(cfg, tok, folder)
        gen_fn = lambda mod: generator(  # noqa: E731
            mod, tok, cfg, cfg.real.max_input_tokens, 0, stop=("</s>",), engine=engines(mod)
        )
        if cfg.real.train:
            samples = role_datasets(
                load_trajectories(tb / TRAIN_EXAMPLE), str(tb / TRAIN_EXAMPLE), cfg.train.stale_giveup_input
            )
            prefix = "system: " if cfg.train.system_prefix else ""
            encoded = {r: encode_samples(tok, rows, cfg.train.max_len, prefix) for r, rows in samples.items()}
            steps_ = {
                "s1": cfg.real.train_steps,
                "s2": cfg.real.train_steps // 2,
                "batch_size": cfg.real.train_batch,
            }
            run_cfg = replace(cfg, train=replace(cfg.train, **steps_))
            models, _ = train_condition(
                "alpha-UMi",
                lambda: load_causal_lm(cfg.real.model, dtype=torch.float32),
                encoded,
                run_cfg,
                folder,
                0,
                tok.pad_token_id,
            )
            method = "alpha-UMi (GLPFT on train-example)"
        else:
            model = load_causal_lm(cfg.real.model)
            models = dict.fromkeys(("planner", "caller", "summarizer"), model)
            method = "zero-shot (floor)"
        agent = make_agent("alpha-UMi", models, gen_fn, None, cfg)
        preds = predict_static(agent, steps, cfg.eval.batch_size)
        return {"method": method, "static": static_metrics(preds), "wall_s": round(time.perf_counter() - t0, 1),
                "examples": [{k: p[k] for k in ("id", "reference", "prediction")} for p in preds[:3]]}  # fmt: skip

    return cached_json(folder / "result.json", force, compute)


def _reproduce(cfg: UmiConfig, force: bool, data_dir: str | None, results_root: Path | None) -> Path:
    torch.set_num_threads(cfg.torch_threads)
    start, root = time.perf_counter(), runs_dir() / SLUG / cfg.scale
    rows, extra = [], {}
    if cfg.toy:
        per_seed = {seed: toy_seed(cfg, seed, root, force) for seed in cfg.seeds}
        for seed, out in per_seed.items():
            base = {
                "table": "toy",
                "setting": f"minitoolbench seed {seed}",
                "model": "tiny-0.1M",
                "benchmark": "toy-tools",
            }
            for c in CONDITIONS:
                s = out[c]["static"]
                for metric in METRICS:
                    rows.append({**base, "method": c, "metric": metric, "value": round(s[metric], 4)})
                rows.append(
                    {
                        **base,
                        "method": c,
                        "metric": "(Act. EM + Arg. F1)/2",
                        "value": round((s["Act. EM"] + s["Arg. F1"]) / 2, 4),
                    }
                )
                rows.append(
                    {**base, "method": c, "metric": "live pass rate", "value": round(out[c]["pass rate"], 4)}
                )
            rows.append(
                {
                    **base,
                    "method": "most-frequent tool",
                    "metric": "Act. EM",
                    "value": round(out["frequent_tool"]["Act. EM"], 4),
                }
            )
        extra["toy_per_seed"] = per_seed
        extra["toy_criteria"] = criteria(per_seed)
    if cfg.real.enabled:
        real = real_eval(cfg, data_dir, root, force)
        n = real["static"]["n steps"]
        for metric in METRICS:
            rows.append({"table": "table1", "setting": f"OOD {n} of 1547 steps", "model": cfg.real.model,
                         "method": real["method"], "benchmark": "ToolBench-out-of-domain", "metric": metric,
                         "value": round(real["static"][metric], 4)})  # fmt: skip
        extra["real"] = real
    out = write_results(
        SLUG, cfg.scale, rows, seeds=list(cfg.seeds), config=config_dict(cfg),
        wall_time_s=time.perf_counter() - start, grader=GRADER,
        sampling={"eval": "greedy" if cfg.eval.greedy else f"T={cfg.eval.temperature}, top_p={cfg.eval.top_p}"},
        extra=extra, root=results_root,
    )  # fmt: skip
    if results_root is None and cfg.scale == "toy" and not results_redirected():
        write_block(cfg.scale)  # the README's verdict block, from the provenance just written
    return out
