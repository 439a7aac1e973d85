"""What a Q-RM run reports, at every scale: the result rows (points, published.csv's units), the learning-curve
plots and steps-to-threshold. These functions only read the stages' outputs.

Rows: one per seed (`setting` ends in ` seed <n>`; `common.tables` aggregates them); the SFT row has no seed.
Pass@k and accuracies are in points (41.6, not 0.416); steps are policy updates; "(1/0)" rows are flags.
"""

from __future__ import annotations

from pathlib import Path

from common.plots import plot_curves
from papers.qrm.config import RM_NAMES, QRMConfig
from papers.qrm.data import Task

TABLE = "math_main (table number UNCONFIRMED; source: paper notes)"  # published.csv's table name
AVERAGE = "GSM8K+MATH average"
GRU_ARMS = {
    "qrm_a": "REINFORCE+Q-RM (state baseline, arm A)",
    "qrm_b": "REINFORCE+Q-RM (code default, arm B)",
    "orm": "REINFORCE+ORM",
}


def points(x: float) -> float:
    """A fraction in points (x100), rounded to 4 decimals (float noise only)."""
    return round(100 * x, 4)


def model_name(name: str) -> str:
    return f"tiny-{name}" if name in ("student", "mid", "teacher") else str(name).rstrip("/").split("/")[-1]


def setting(cfg: QRMConfig, task: Task) -> str:
    """The row setting of a task's RL rows (published.csv's for the real tasks)."""
    if task.name == "arith":
        return "arith"
    lora = f"LoRA{cfg.rm.lora_rank}" if cfg.rm.lora_rank else "full FT"
    return f"RL on GSM8K/MATH train prompts; RMs {model_name(cfg.rm.backbone)} {lora}"


def steps_to_threshold(qrm_curve: list[dict], orm_curve: list[dict], key: str = "val_pass@1") -> dict:
    """Policy updates until each arm first reaches the ORM arm's best `key` (UNCONFIRMED definition of the
    paper's "N x faster": we take the ratio ORM steps / Q-RM steps); qrm_steps None when Q-RM never reaches
    it. Undefined ("defined": False, steps None) when the ORM arm's best is the policy before RL (step 0):
    there is then no convergence to time."""
    best = max(row[key] for row in orm_curve)
    orm_steps = next(row["step"] for row in orm_curve if row[key] >= best)
    if orm_steps == 0:
        return {"threshold": best, "defined": False, "orm_steps": None, "qrm_steps": None, "speedup": None}
    qrm_steps = next((row["step"] for row in qrm_curve if row[key] >= best), None)
    speedup = None if qrm_steps is None else orm_steps / max(qrm_steps, 1)
    return {
        "threshold": best,
        "defined": True,
        "orm_steps": orm_steps,
        "qrm_steps": qrm_steps,
        "speedup": speedup,
        # Q-RM never reached it within its run: the speedup is below ORM steps / all its steps
        "speedup_bound": orm_steps / max(qrm_curve[-1]["step"], 1) if qrm_steps is None else None,
    }


def speed_table(runs: list[dict]) -> list[dict]:
    """steps_to_threshold for every (task, algorithm, seed) with both a Q-RM and an ORM arm."""
    by = {(r["task"], r["method"], r["seed"]): r for r in runs}
    out = []
    for task, seed in dict.fromkeys((r["task"], r["seed"]) for r in runs):
        for algorithm in ("REINFORCE", "PPO"):
            q, o = by.get((task, f"{algorithm}+Q-RM", seed)), by.get((task, f"{algorithm}+ORM", seed))
            if q and o:
                out.append(
                    {
                        "task": task,
                        "algorithm": algorithm,
                        "seed": seed,
                        **steps_to_threshold(q["curve"], o["curve"]),
                    }
                )
    return out


def metric_name(name: str, task: Task) -> str:
    """A metric's row label: published.csv's spelling ("Pass@1") for GSM8K / MATH, the toy claims' (and the
    toy rows' since the first run) lower case "pass@1" for the toy world."""
    return name.replace("Pass@", "pass@") if task.name == "arith" else name


def _test_metric(name: str, cfg: QRMConfig, task: Task) -> str:
    sampled = f"Pass@1 (sampled, T={cfg.eval.pass_k_temperature:g})"
    return metric_name(sampled if name == "Pass@1 (sampled)" else name, task)


def result_rows(
    cfg: QRMConfig, tasks: list[Task], sft: dict, runs: list[dict], rms: list[dict], gru: dict | None = None
) -> list[dict]:
    """Every row of reproduced.csv (module doc); `sft`: task name -> sft_stage output."""
    model, by_name, rows = model_name(cfg.policy), {t.name: t for t in tasks}, []

    def row(
        table: str, setting_: str, method: str, benchmark: str, metric: str, value: float, m: str = model
    ) -> None:
        rows.append(
            {
                "table": table,
                "setting": setting_,
                "model": m,
                "method": method,
                "benchmark": benchmark,
                "metric": metric,
                "value": value,
            }
        )

    pass1: dict = {}
    entries = [("SFT", None, name, s["test"], None) for name, s in sft.items()]
    entries += [(r["method"], r["seed"], r["task"], r["test"], r["curve"]) for r in runs]
    for method, seed, name, test, curve in entries:
        task = by_name[name]
        table = "toy" if name == "arith" else TABLE
        where = setting(cfg, task) + ("" if seed is None else f" seed {seed}")
        for metric, value in test.items():
            row(table, where, method, task.benchmark, _test_metric(metric, cfg, task), points(value))
        pass1.setdefault((method, seed, where), {})[name] = test["Pass@1"]
        if curve:
            best = max(p["val_pass@1"] for p in curve)
            row(
                table,
                where,
                method,
                task.val_benchmark,
                metric_name("best Pass@1 over training", task),
                points(best),
            )
    for (method, _, where), by_task in pass1.items():
        if set(by_task) == {"gsm8k", "math"}:
            row(TABLE, where, method, AVERAGE, "Pass@1", points((by_task["gsm8k"] + by_task["math"]) / 2))
    for s in speed_table(runs):
        task = by_name[s["task"]]
        table, where, bench = (
            ("toy" if task.name == "arith" else TABLE),
            f"{setting(cfg, task)} seed {s['seed']}",
            task.val_benchmark,
        )
        for arm in ("qrm", "orm"):
            if s[f"{arm}_steps"] is not None:
                row(
                    table,
                    where,
                    f"{s['algorithm']}+{RM_NAMES[arm]}",
                    bench,
                    metric_name("steps to ORM-best Pass@1", task),
                    s[f"{arm}_steps"],
                )
        if s["defined"]:
            method = f"{s['algorithm']}+Q-RM vs {s['algorithm']}+ORM"
            row(table, where, method, bench, "Q-RM reached ORM-best (1/0)", float(s["qrm_steps"] is not None))
            # the claim's row (published.csv's benchmark and metric names): the speedup, or its upper bound
            speedup = s["speedup"] if s["speedup"] is not None else s["speedup_bound"]
            row(table, where, method, task.benchmark, "convergence speedup (x)", round(speedup, 4))
        row(
            table, where, f"{s['algorithm']}+ORM", bench, "ORM arm improved on SFT (1/0)", float(s["defined"])
        )
    for info in rms:
        task = by_name[info["task"]]
        table = "toy" if task.name == "arith" else "rm_pairwise"
        row(
            table,
            f"held-out pairs ({info['heldout_pairs']})",
            RM_NAMES[info["kind"]],
            f"{task.benchmark} pairs",
            "pairwise accuracy",
            points(info["heldout_pairwise_accuracy"]),
            model_name(cfg.rm.backbone),
        )
    if gru:
        rows += gru_rows(gru)
    return rows


def gru_rows(gru: dict) -> list[dict]:
    """The GRU check's rows: RM accuracies, per-seed token accuracies (points), the spec's criteria (1/0)."""
    base = {"table": "toy", "model": "GRU-64"}
    rows = [
        base
        | {
            "setting": "gru check",
            "method": RM_NAMES[kind],
            "benchmark": "toy-gru-pairs",
            "metric": "pairwise accuracy",
            "value": points(acc),
        }
        for kind, acc in gru["rm_accuracy"].items()
    ]
    for arm, per_seed in gru["curves"].items():
        for seed, curve in per_seed.items():
            early = [curve[gru["iterations"].index(i)] for i in (30, 60, 90) if i in gru["iterations"]]
            for metric, value in (
                ("token accuracy mean@30/60/90", sum(early) / max(len(early), 1)),
                ("token accuracy final", curve[-1]),
            ):
                rows.append(
                    base
                    | {
                        "setting": f"gru seed {seed}",
                        "method": GRU_ARMS.get(arm, arm),
                        "benchmark": "toy-gru",
                        "metric": metric,
                        "value": points(value),
                    }
                )
    for name, crit in gru["criteria"].items():
        rows.append(
            base
            | {
                "setting": "gru check",
                "method": "spec criterion",
                "benchmark": "toy-gru",
                "metric": f"{name} passed (1/0)",
                "value": float(crit["passed"]),
            }
        )
    return rows


def curve_series(runs: list[dict], task: str, algorithm: str) -> dict[str, list[list[tuple[int, float]]]]:
    """{method: [run of seed 0, run of seed 1, ...]}, each run [(policy updates, curve Pass@1 in points)]."""
    series: dict[str, list] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        if r["task"] == task and r["method"].startswith(algorithm + "+"):
            series.setdefault(r["method"], []).append(
                [(p["step"], points(p["val_pass@1"])) for p in r["curve"]]
            )
    return series


def plot_runs(cfg: QRMConfig, tasks: list[Task], runs: list[dict], sft: dict, out_dir: Path) -> list[Path]:
    """Curve Pass@1 vs policy updates, one colour per method, one PNG per task x algorithm, SFT as reference."""
    paths = []
    for task in tasks:
        for algorithm in ("REINFORCE", "PPO"):
            series = curve_series(runs, task.name, algorithm)
            if not series:
                continue
            name = (
                f"curves_{algorithm.lower()}.png"
                if task.name == "arith"
                else f"curves_{task.name}_{algorithm.lower()}.png"
            )
            paths.append(
                plot_curves(
                    series,
                    out_dir / name,
                    f"{task.benchmark}: {algorithm} from {model_name(cfg.policy)}",
                    "policy updates",
                    f"{task.val_benchmark} Pass@1 (greedy, points)",
                    reference={"SFT (before RL)": points(sft[task.name]["val"])},
                    band=True,
                )
            )
    return paths
