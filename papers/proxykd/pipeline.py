"""Proxy-KD end to end, one driver for every scale: `python -m common.reproduce proxykd --scale toy|small|paper`.

What the recipe does (spec `../shared/papers/proxykd.md`), on a task (`data.markov_task`: the spec's
black-box Markov chain with GRU proxy and student; `data.real_task`: GSM8K train questions, an HF or
OpenAI-compatible teacher, HF proxy and student, the paper's mirrored test sets):
1. the teacher answers every prompt, text only, into a resumable cache (failed calls recorded, never used);
2. the answers are split D_w / D_p / D_s (paper 10 / 45 / 45 %; toy 500 / 2,000 / 500 per seed);
3. proxy: warm-up SFT on D_w (the unaligned proxy), NLL epochs on D_p, then K iterations of NLL + DPO on
   D_p (chosen = the teacher's answer, rejected = the previous proxy's own sample, reference = the previous
   proxy); the same iterations without the preference loss give the NLL-only ablation proxy;
4. offline, each proxy's top-k logits and the per-token mean log-prob of the teacher's answer on D_s;
5. students (1 seed each): SFT on D_s (black-box KD), Proxy-KD (NLL + alpha * Eq. 9-weighted top-k KL),
   the unaligned proxy weighted / unweighted (TAKD), the NLL-only proxy, plain KL (w = 1), white-box KD
   from the true teacher (calibration, the toy only) and SFT on all teacher data (reference);
6. evaluation: toy, the exact KL to the teacher on 1,000 fresh sequences; real, greedy accuracy with the
   code's graders (strict and answered-only). Rows per seed via common.results; the alignment plot.

Where it departs from the paper (README "Deviations"): the toy is a Markov chain with GRUs (the spec's
calibrated check), not LLMs; the real training prompts are GSM8K's (the paper's 1M GPT-4 answers from
OpenOrca / Nectar / synthetic data are not on disk); alpha, K and beta are UNCONFIRMED third-party or
spec-toy values (config.py).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from common.config import apply_overrides, config_dict
from common.data import DataError
from common.models import ModelNotFoundError
from common.plots import plot_curves
from common.results import write_results
from common.stages import StageError, is_main_process, read_json, runs_dir, stage_hash
from papers.proxykd.config import ARITH, ProxyKDConfig
from papers.proxykd.data import Task, arith_task, markov_task, real_task
from papers.proxykd.proxy import proxy_evals, proxy_stage
from papers.proxykd.stages import ARMS, split_rows, student_stage, targets_stage, teacher_stage
from papers.proxykd.teacher import TeacherError
from papers.proxykd.training import BadSetting, EmptyAnswer, encode_rows

SLUG = "proxykd"
log = logging.getLogger(__name__)
GRADER = (
    "toy: exact KL(p_teacher || p_model) over the test positions (nats); real: the probable authors' "
    "evaluator (papers/proxykd/grading.py), strict = correct / all, answered = correct / answered"
)
BENCH = {
    "markov": ("toy-markov", "KL to teacher"),
    "arith": ("toy-arith", "accuracy"),
    "gsm8k": ("GSM8K", "accuracy"),
}
"""The benchmark and metric of each task's alignment plot."""
PROXY_LABELS = {"warmup": "proxy: warm-up SFT", "nll_only": "proxy: NLL only", "aligned": "proxy: NLL + DPO"}


def reproduce(
    cfg: ProxyKDConfig, force: bool = False, data_dir: str | None = None, results_root: Path | None = None
) -> Path:
    """Every stage for the resolved `cfg`; returns papers/proxykd/results/<scale>/ (`results_root`: another
    repo root, for tests). A dead endpoint, an empty answer, a missing file or model stops with one line."""
    try:
        return _reproduce(cfg, force, data_dir, results_root)
    except (TeacherError, EmptyAnswer, BadSetting, DataError, ModelNotFoundError, StageError) as err:
        raise SystemExit(f"proxykd {cfg.scale}: {str(err).splitlines()[0]}") from None


def _task(cfg: ProxyKDConfig, source: str, seed: int, data_dir: str | None, cache: dict) -> Task:
    if source == "markov":
        return markov_task(cfg, seed)
    if source == "arith":  # one world and one set of teacher answers for every seed
        if "arith" not in cache:
            cache["arith"] = arith_task(cfg)
        return cache["arith"]
    if source != "gsm8k":
        raise DataError(f"data.sources: {source!r} is not a task; valid: markov, arith, gsm8k")
    if "real" not in cache:
        cache["real"] = real_task(cfg, data_dir)
    return cache["real"]


def run_seed(task: Task, cfg: ProxyKDConfig, seed: int, root: Path) -> dict:
    """Every stage of one seed: {arms: {arm: metrics}, proxies: {name: [eval per step]}, top1: {...}}."""
    rows = teacher_stage(task, cfg, root)
    d_w, d_p, d_s = split_rows(rows, cfg.split, seed)
    log.info("proxykd %s seed %d: D_w %d, D_p %d, D_s %d", task.name, seed, len(d_w), len(d_p), len(d_s))
    arms = [a for a in cfg.run.arms if a != "white_box" or task.white_box is not None]
    if len(arms) < len(cfg.run.arms):
        log.warning("proxykd %s: no white-box arm (the teacher's logits are unknown)", task.name)
    needed = {ARMS[a][2] for a in arms} - {None, "teacher"}
    proxies = proxy_stage(task, cfg, d_w, d_p, seed, root, tuple(needed)) if needed else {}
    enc_s = encode_rows(task, d_s, "D_s")
    data = {"student": enc_s, "all": encode_rows(task, d_w + d_p, "D_w + D_p") + enc_s}
    targets, out = {}, {"arms": {}, "top1_on_d_s": {}}
    for name in sorted(needed):
        key = stage_hash({"proxy": str(proxies[name]), "d_s": [r["id"] for r in d_s], "k": cfg.student.top_k})
        targets[name] = targets_stage(
            task, cfg, proxies[name], enc_s, root / "targets" / f"{name}-s{seed}-{key}"
        )
        out["top1_on_d_s"][name] = targets[name]["top1_agreement"]
    for arm in arms:
        method, which, proxy, _ = ARMS[arm]
        blob = {"arm": arm, "student": asdict(cfg.student), "data": [r["id"] for r in d_s], "seed": seed}
        blob |= {"proxy": str(proxies.get(proxy, proxy)), "which": which, "task": task.key, "v": 1}
        folder = root / "student" / f"{arm}-s{seed}-{stage_hash(blob)}"
        out["arms"][arm] = student_stage(task, cfg, arm, data[which], targets.get(proxy), seed, folder)
    if proxies:
        out["proxies"] = {
            "warmup": [read_eval(proxies["warmup"])],
            **proxy_evals(proxies, cfg.proxy.iterations),
        }
    return out


def read_eval(folder: Path) -> dict:
    return read_json(folder / "info.json")["eval"]


def result_rows(task: Task, per_seed: dict[int, dict], table: str) -> list[dict]:
    """One row per seed, method, benchmark and metric, in the published units (points; KL in nats);
    the toy adds `KL relative to SFT` (arm KL / SFT KL of the seed: the spec's pass ratio) and the proxies'
    own KL to the teacher and top-1 agreement on D_s (App. A.2)."""
    rows = []
    for seed, out in per_seed.items():
        base = {"table": table, "setting": f"{task.setting} seed {seed}"}
        for m in out["arms"].values():
            for bench, metrics in m["eval"].items():
                for metric, value in metrics.items():
                    row = {**base, "model": task.model_label, "method": m["method"], "benchmark": bench}
                    rows.append({**row, "metric": metric, "value": round(value, 5)})
                    if metric == "KL to teacher" and "sft" in out["arms"]:
                        sft = out["arms"]["sft"]["eval"][bench][metric]
                        rows.append({**row, "metric": "KL relative to SFT", "value": round(value / sft, 5)})
        for name, evals in out.get("proxies", {}).items():
            for bench, metrics in (evals[-1] or {}).items():
                for metric, value in metrics.items():
                    row = {
                        **base,
                        "model": task.model_label,
                        "method": PROXY_LABELS[name],
                        "benchmark": bench,
                    }
                    rows.append({**row, "metric": metric, "value": round(value, 5)})
        for name, value in out["top1_on_d_s"].items():
            row = {**base, "model": task.model_label, "method": PROXY_LABELS[name]}
            row["benchmark"] = f"D_s ({task.name})"
            rows.append({**row, "metric": "top-1 = teacher token", "value": round(value, 3)})
    return rows


def summary(rows: list[dict]) -> dict:
    """Per method, benchmark and metric: [mean, population sd, n] over the seeds."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(f"{r['method']} | {r['benchmark']} | {r['metric']}", []).append(r["value"])
    return {
        k: [round(statistics.mean(v), 5), round(statistics.pstdev(v), 5), len(v)] for k, v in groups.items()
    }


def _plot(per_seed: dict[int, dict], path: Path, bench: str, metric: str) -> None:
    series = {}
    for name in ("aligned", "nll_only"):
        runs = [
            [(x, e[bench][metric]) for x, e in enumerate(o["proxies"][name])]
            for o in per_seed.values()
            if name in o.get("proxies", {}) and all(bench in e for e in o["proxies"][name])
        ]
        if runs:
            series[PROXY_LABELS[name]] = runs
    if not series:
        return
    reference = {}
    for arm in ("sft", "proxykd", "sft_all"):
        vals = [o["arms"][arm]["eval"][bench][metric] for o in per_seed.values() if arm in o["arms"]]
        if vals:
            reference[f"student {ARMS[arm][0]}"] = statistics.mean(vals)
    plot_curves(
        series,
        path,
        title=f"Proxy alignment ({bench}): 0 warm-up, 1 NLL on D_p, 1+k iteration k",
        xlabel="alignment step",
        ylabel=metric,
        reference=reference,
    )


def _reproduce(cfg: ProxyKDConfig, force: bool, data_dir: str | None, results_root: Path | None) -> Path:
    torch.set_num_threads(cfg.run.torch_threads)
    start, root, cache = time.perf_counter(), runs_dir() / SLUG / cfg.scale, {}
    if force and root.exists():  # rerun every stage; the teacher's answers are kept (a paid endpoint)
        for child in root.iterdir():
            if child.name != "teacher":
                shutil.rmtree(child)
    rows, extra, plots = [], {"per_seed": {}}, []
    for source in cfg.data.sources:
        tcfg = apply_overrides(cfg, ARITH) if source == "arith" else cfg
        per_seed = {}
        for seed in cfg.seeds:
            task = _task(tcfg, source, seed, data_dir, cache)
            per_seed[seed] = run_seed(task, tcfg, seed, root)
        rows += result_rows(task, per_seed, "table1" if source == "gsm8k" else "toy")
        extra["per_seed"][task.name] = per_seed
        plots.append((task.name, per_seed, *BENCH[source]))
    if not is_main_process():
        return root
    stats = summary(rows)
    log.info("proxykd %s: %s", cfg.scale, stats)
    out = write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=list(cfg.seeds),
        config=config_dict(cfg),
        wall_time_s=time.perf_counter() - start,
        grader=GRADER,
        sampling={"eval": "markov: exact KL; others: greedy", "teacher": config_dict(cfg)["teacher"]},
        extra={"summary": stats, **extra},
        root=results_root,
    )
    for name, per_seed, bench, metric in plots:
        _plot(per_seed, out / f"proxy_alignment_{name}.png", bench, metric)
    return out
