"""What a Q-RM run reports: the result rows, the learning-curve plots, and steps-to-threshold.

Split from `pipeline.py` (which runs the stages); these functions only read the stages' outputs.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from common.tables import plot_curves
from papers.qrm.config import QRMConfig

SAMPLED_METRIC = "pass@1 (sampled, T=1)"
RM_NAMES = {"qrm": "Q-RM", "orm": "ORM", "dpo": "DPO-RM"}


def _model_name(name: str) -> str:
    return f"tiny-{name}" if name in ("student", "mid", "teacher") else Path(name).name


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
    }


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} (n={len(values)})"


def result_rows(
    cfg: QRMConfig, gru: dict | None, rms: dict, runs: list[dict], speed: list[dict], sft: dict
) -> list[dict]:
    model, rm_model = _model_name(cfg.policy), _model_name(cfg.rm.backbone)
    rows = []
    for r in [{"seed": None, "method": "SFT", **sft}] + runs:
        setting = "arith (before RL)" if r["seed"] is None else f"arith seed {r['seed']}"
        for key, metric in (("test_pass@1", "pass@1"), ("test_sampled_pass@1", SAMPLED_METRIC)):
            if key in r:
                rows.append(
                    {
                        "table": "toy",
                        "setting": setting,
                        "model": model,
                        "method": r["method"],
                        "benchmark": "toy-arith",
                        "metric": metric,
                        "value": r[key],
                    }
                )
        if r["seed"] is None:
            continue
        best = max(row["val_pass@1"] for row in r["curve"])
        rows.append(
            {
                "table": "toy",
                "setting": f"arith seed {r['seed']}",
                "model": model,
                "method": r["method"],
                "benchmark": "toy-arith-val",
                "metric": "best pass@1 over training",
                "value": best,
            }
        )
    for s in speed:
        for arm in ("qrm", "orm"):
            if s[f"{arm}_steps"] is not None:
                method = f"{s['algorithm']}+{'Q-RM' if arm == 'qrm' else 'ORM'}"
                rows.append(
                    {
                        "table": "toy",
                        "setting": f"arith seed {s['seed']}",
                        "model": model,
                        "method": method,
                        "benchmark": "toy-arith-val",
                        "metric": "steps to ORM-best pass@1",
                        "value": s[f"{arm}_steps"],
                    }
                )
        if s["defined"]:
            rows.append(
                {
                    "table": "toy",
                    "setting": f"arith seed {s['seed']}",
                    "model": model,
                    "method": f"{s['algorithm']}+Q-RM vs {s['algorithm']}+ORM",
                    "benchmark": "toy-arith-val",
                    "metric": "Q-RM reached ORM-best (1/0)",
                    "value": float(s["qrm_steps"] is not None),
                }
            )
        rows.append(
            {
                "table": "toy",
                "setting": f"arith seed {s['seed']}",
                "model": model,
                "method": f"{s['algorithm']}+ORM",
                "benchmark": "toy-arith-val",
                "metric": "ORM arm improved on SFT (1/0)",
                "value": float(s["defined"]),
            }
        )
    for kind, info in rms.items():
        rows.append(
            {
                "table": "toy",
                "setting": "arith validation pairs",
                "model": rm_model,
                "method": RM_NAMES[kind],
                "benchmark": "toy-arith-pairs",
                "metric": "pairwise accuracy",
                "value": info["val_pairwise_accuracy"],
            }
        )
    if gru:
        for kind, acc in gru["rm_accuracy"].items():
            rows.append(
                {
                    "table": "toy",
                    "setting": "gru check",
                    "model": "GRU-64",
                    "method": kind.upper().replace("QRM", "Q-RM"),
                    "benchmark": "toy-gru-pairs",
                    "metric": "pairwise accuracy",
                    "value": acc,
                }
            )
        names = {
            "qrm_a": "REINFORCE+Q-RM (state baseline, arm A)",
            "qrm_b": "REINFORCE+Q-RM (code default, arm B)",
            "orm": "REINFORCE+ORM",
        }
        for arm, per_seed in gru["curves"].items():
            for seed, curve in per_seed.items():
                early = [curve[gru["iterations"].index(i)] for i in (30, 60, 90) if i in gru["iterations"]]
                for metric, value in (
                    ("token accuracy mean@30/60/90", sum(early) / max(len(early), 1)),
                    ("token accuracy final", curve[-1]),
                ):
                    rows.append(
                        {
                            "table": "toy",
                            "setting": f"gru seed {seed}",
                            "model": "GRU-64",
                            "method": names.get(arm, arm),
                            "benchmark": "toy-gru",
                            "metric": metric,
                            "value": value,
                        }
                    )
        for name, crit in gru["criteria"].items():
            rows.append(
                {
                    "table": "toy",
                    "setting": "gru check",
                    "model": "GRU-64",
                    "method": "spec criterion",
                    "benchmark": "toy-gru",
                    "metric": f"{name} passed (1/0)",
                    "value": float(crit["passed"]),
                }
            )
    return rows


def plot_runs(runs: list[dict], out_dir: Path) -> list[Path]:
    """Validation Pass@1 vs policy updates, one line per method x seed, one PNG per algorithm."""
    paths = []
    for algorithm in ("REINFORCE", "PPO"):
        series = {
            f"{r['method']} s{r['seed']}": [(row["step"], row["val_pass@1"]) for row in r["curve"]]
            for r in runs
            if r["method"].startswith(algorithm)
        }
        if series:
            paths.append(
                plot_curves(
                    series,
                    out_dir / f"curves_{algorithm.lower()}.png",
                    f"toy arithmetic: {algorithm}",
                    "policy updates",
                    "validation pass@1 (greedy)",
                )
            )
    return paths
