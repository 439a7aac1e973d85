"""AD-KD end to end, one driver for every scale: `python -m common.reproduce adkd --scale toy|small|paper`.

What the recipe does (spec `../shared/papers/adkd.md`), for each task of each experiment (`synthetic`:
the spec's signed-sum world, `data.synthetic_task`; `glue`: real GLUE tasks, `data.glue_task`):
1. teacher: fine-tune (toy world: a 2-layer encoder from scratch; SST-2 at toy scale: all-MiniLM-L6-v2;
   small/paper: bert-base-uncased), keep the epoch best on held-out training examples, test it;
2. students, each method on every seed, same data and initialisation per seed: KD = (1 - alpha) CE +
   alpha softCE(tau); AD-KD = KD + beta L_attr (m-step IG at the embedding output, teacher top-K maps,
   per-example L2 normalisation, double backward into the student); PKD = KD + normalised-[CLS] MSE
   (small/paper); the teacher's logits, [CLS] states and maps are computed once per arm (stages.py);
3. rows in points (accuracy; CoLA MCC, MRPC F1, STS-B Spearman where the task has them), one per seed,
   via common.results, and a plot of the per-seed test accuracies against the teacher's.

Where it departs from the paper / code (README "Deviations"): the toy teacher/student are the spec's
own toy models; the SST-2 run at toy scale uses MiniLM (d = 384) with a truncated 3-layer student on 400
sentences, 4 epochs, and reports the last epoch (the code reports the best dev epoch, i.e. it selects on
the reported set; `student.select=best-dev` does that); teachers select their epoch on held-out training
rows, not on dev; the teacher's targets are precomputed (identical numbers, see stages.py).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from common.config import config_dict
from common.data import DataError, shared_mirror
from common.models import ModelNotFoundError, load_config, load_tokenizer
from common.plots import plot_curves
from common.results import write_results
from common.stages import runs_dir, stage_hash, worker_pool
from papers.adkd.config import METHODS, AdkdConfig, ExperimentConfig, task_settings
from papers.adkd.data import Task, glue_task, synthetic_task
from papers.adkd.stages import ArmJob, main_metric, quiet_libraries, run_arm, teacher_stage

SLUG = "adkd"
log = logging.getLogger(__name__)
GRADER = "argmax accuracy on the test set (GLUE dev), in points; CoLA MCC, MRPC/QQP F1, STS-B Spearman x100"


class ConfigProblem(ValueError):
    """A setting that cannot run (K > d, an unknown method); the message is one line."""


def reproduce(
    cfg: AdkdConfig, *, force: bool = False, data_dir: str | None = None, results_root: Path | None = None
) -> Path:
    """Every stage for the resolved `cfg`; returns papers/adkd/results/<scale>/ (`results_root`: another
    repo root, for tests). A missing file or model, a bad row or an impossible setting stops with one line."""
    try:
        return _reproduce(cfg, force, data_dir, results_root)
    except (DataError, ModelNotFoundError, ConfigProblem) as err:
        raise SystemExit(f"adkd {cfg.scale}: {str(err).splitlines()[0]}") from None


def experiments(cfg: AdkdConfig) -> list[tuple[str, ExperimentConfig]]:
    return [(name, exp) for name, exp in (("synthetic", cfg.synthetic), ("glue", cfg.glue)) if exp.enabled]


def build_task(name: str, exp: ExperimentConfig, data_dir: str | None, from_shared: bool) -> Task:
    if name == "toy-signal-sum":
        return synthetic_task(exp.data)
    if data_dir is None and from_shared:
        mirror = shared_mirror()
        data_dir = str(mirror) if mirror is not None else None
    _, student = task_settings(exp, name)
    tokenizer = load_tokenizer(student.net.model if student.net.model != "toy" else exp.teacher.net.model)
    return glue_task(name, exp.data, tokenizer, data_dir)


def check_settings(task: Task, exp: ExperimentConfig, student) -> None:
    """One line for a setting that cannot run: an unknown method, K > d, PKD across hidden sizes."""
    unknown = [m for m in student.methods if m not in METHODS]
    if unknown:
        raise ConfigProblem(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    teacher, _ = task_settings(exp, task.name)
    d = _hidden_size(teacher.net)
    if student.top_k is not None and not 1 <= student.top_k <= d:
        raise ConfigProblem(
            f"{task.name}: top-K K = {student.top_k} must be between 1 and the teacher's hidden size d = {d}"
        )
    if "PKD" in student.methods and _hidden_size(student.net) != d:
        raise ConfigProblem(
            f"{task.name}: PKD needs the student's hidden size ({_hidden_size(student.net)}) to equal the "
            f"teacher's ({d}); drop PKD from student.methods"
        )


def _hidden_size(net) -> int:
    return net.d_model if net.model == "toy" else load_config(net.model).hidden_size


def _reproduce(cfg: AdkdConfig, force: bool, data_dir: str | None, results_root: Path | None) -> Path:
    torch.set_num_threads(cfg.run.torch_threads)
    quiet_libraries()
    start, root = time.perf_counter(), runs_dir() / SLUG / cfg.scale
    rows, extra, plots = [], {"tasks": {}}, {}
    for exp_name, exp in experiments(cfg):
        for name in exp.tasks:
            task = build_task(name, exp, data_dir, cfg.run.data_from_shared)
            teacher_cfg, student_cfg = task_settings(exp, name)
            check_settings(task, exp, student_cfg)
            teacher = teacher_stage(task, teacher_cfg, root, force)
            jobs = [
                ArmJob(
                    task.name,
                    task.num_labels,
                    task.pad_id,
                    task.student_train(seed),
                    task.test,
                    teacher_cfg.net,
                    teacher["weights"],
                    student_cfg,
                    method,
                    seed,
                    str(
                        root
                        / task.name
                        / f"{method}-seed{seed}-{_arm_key(task, teacher, student_cfg, method, seed)}"
                    ),
                    force,
                    cfg.run.torch_threads,
                )
                for seed in cfg.seeds
                for method in student_cfg.methods
            ]
            with worker_pool(cfg.run.workers, cfg.run.torch_threads) as pool:
                arms = [f.result() for f in [pool.submit(run_arm, job) for job in jobs]]
            model_label = _model_label(exp_name, teacher_cfg, student_cfg)
            rows += result_rows(task, model_label, arms) + teacher_rows(task, teacher_cfg, teacher)
            extra["tasks"][task.name] = {"teacher": teacher, "summary": summary(arms), "arms": arms}
            plots[task.name] = (task, teacher, arms)
            log.info("adkd %s: teacher %s; %s", task.name, teacher["test"], summary(arms))
    out = write_results(
        SLUG,
        cfg.scale,
        rows,
        seeds=list(cfg.seeds),
        config=config_dict(cfg),
        wall_time_s=time.perf_counter() - start,
        grader=GRADER,
        extra=extra,
        root=results_root,
    )
    for name, (task, teacher, arms) in plots.items():
        plot_seeds(task, teacher, arms, out / f"{name}.png")
    return out


# Student fields that do not change an arm of the given method (so e.g. a new beta reruns AD-KD only).
UNUSED_FIELDS = {
    "KD": ("methods", "beta", "top_k", "ig_steps", "multi_view", "pkd_beta"),
    "AD-KD": ("methods", "pkd_beta"),
    "PKD": ("methods", "beta", "top_k", "ig_steps", "multi_view"),
}


def _arm_key(task: Task, teacher: dict, student, method: str, seed: int) -> str:
    settings = {k: v for k, v in asdict(student).items() if k not in UNUSED_FIELDS[method]}
    return stage_hash(
        {"task": task.key, "teacher": teacher["weights"], "cfg": settings, "m": method, "s": seed}
    )


def _model_label(exp_name: str, teacher, student) -> str:
    if exp_name == "synthetic":
        return f"toy {teacher.net.num_layers}L-d{teacher.net.d_model} -> {student.net.num_layers}L-d{student.net.d_model}"
    layers = f" (first {student.net.num_layers} layers)" if student.net.num_layers else ""
    return f"{teacher.net.model} -> {student.net.model}{layers}"


def result_rows(task: Task, model_label: str, arms: list[dict]) -> list[dict]:
    """One row per arm and metric, in points; `setting` carries the seed (common.results convention)."""
    rows = []
    for arm in arms:
        for metric, value in arm["test"].items():
            rows.append(
                {
                    "table": "toy" if task.name == "toy-signal-sum" else "glue-dev",
                    "setting": f"{task.name} n_student={arm['n_train']} seed {arm['seed']}",
                    "model": model_label,
                    "method": arm["method"],
                    "benchmark": task.benchmark,
                    "metric": metric,
                    "value": value,
                }
            )
    return rows


def teacher_rows(task: Task, cfg, teacher: dict) -> list[dict]:
    """The teacher's test scores (one run, method `teacher`): the level the students distil from."""
    return [
        {
            "table": "toy" if task.name == "toy-signal-sum" else "glue-dev",
            "setting": f"{task.name} n_teacher={len(task.teacher_train)}",
            "model": cfg.net.model
            if cfg.net.model != "toy"
            else f"toy {cfg.net.num_layers}L-d{cfg.net.d_model}",
            "method": "teacher",
            "benchmark": task.benchmark,
            "metric": metric,
            "value": value,
        }
        for metric, value in teacher["test"].items()
    ]


def summary(arms: list[dict]) -> dict[str, str]:
    """method -> "mean +- sd (n)" of its main metric over seeds (for the log and provenance)."""
    by_method: dict[str, list[float]] = {}
    for arm in arms:
        by_method.setdefault(arm["method"], []).append(main_metric(arm["test"]))
    return {
        m: f"{statistics.mean(v):.2f} +- {statistics.stdev(v) if len(v) > 1 else 0:.2f} (n={len(v)})"
        for m, v in by_method.items()
    }


def plot_seeds(task: Task, teacher: dict, arms: list[dict], path: Path) -> Path:
    """Per-seed test score of each method (x = seed), the teacher's as the reference line."""
    series: dict[str, list[tuple[float, float]]] = {}
    for arm in arms:
        series.setdefault(arm["method"], []).append((arm["seed"], main_metric(arm["test"])))
    return plot_curves(
        series,
        path,
        title=f"AD-KD vs baselines on {task.benchmark} (student, per seed)",
        xlabel="seed",
        ylabel="test score (points)",
        reference={"teacher": main_metric(teacher["test"])},
    )
