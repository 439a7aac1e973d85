"""What an LCO run reports: the result rows (points, published.csv's units) and the curve plots. Reads only the
stages' outputs.

Stability check rows: setting `gru seed <s>`, benchmark `toy-gru (lr <lr>)`, metrics `final token accuracy`
and `max drawdown` (points), `grad norm, first quarter` / `grad norm, last quarter` (the mean gradient norm of
the first / last quarter of the optimizer steps). RL rows: setting `<task> seed <s>`, the test benchmark,
metric `pass@1` (toy) or `Pass@1` (real) for the regime's lr and `pass@1 (lr x<f>)` for the other factors,
`max drawdown (val)` / `max drawdown (val, lr x<f>)` of the validation curve, and the SFT row (no seed).
"""

from __future__ import annotations

from pathlib import Path

from common.plots import plot_curves
from common.results import result_row
from papers.lco.stability import max_drawdown

GRU_MODEL = "GRU-27k"


def points(x: float) -> float:
    return round(100 * x, 4)


def run_name(arm: str, lr: float) -> str:
    return f"{arm} @ {lr:g}"


def _row(setting, model, method, benchmark, metric, value) -> dict:
    table = "toy" if benchmark.startswith("toy") else "scaled"
    return result_row(table, setting, model, method, benchmark, metric, value)


def stability_rows(result: dict) -> list[dict]:
    rows = []
    for name, per_seed in result["summary"].items():
        arm, _, lr = name.partition(" @ ")
        bench = f"toy-gru (lr {lr})"
        for seed, s in per_seed.items():
            setting = f"gru seed {seed}"
            rows.append(
                _row(setting, GRU_MODEL, arm, bench, "final token accuracy", points(s["final_accuracy"]))
            )
            rows.append(_row(setting, GRU_MODEL, arm, bench, "max drawdown", points(s["max_drawdown"])))
            for q in ("first", "last"):
                value = round(s[f"grad_norm_{q}_quarter"], 6)
                rows.append(_row(setting, GRU_MODEL, arm, bench, f"grad norm, {q} quarter", value))
    return rows


def _suffix(factor: float, extra: str = "") -> str:
    parts = [p for p in (extra, "" if factor == 1 else f"lr x{factor:g}") if p]
    return f" ({', '.join(parts)})" if parts else ""


def rl_rows(task_name: str, benchmark: str, model: str, sft: dict, runs: list[dict]) -> list[dict]:
    pass1 = "pass@1" if task_name == "arith" else "Pass@1"
    rows = [_row(task_name, model, "SFT", benchmark, pass1, points(sft["test"]))]
    rows.append(_row(task_name, model, "SFT", benchmark, pass1 + " (val)", points(sft["val"])))
    if sft.get("val_sampled") is not None:
        rows.append(
            _row(task_name, model, "SFT", benchmark, f"sampled {pass1} (val)", points(sft["val_sampled"]))
        )
    for r in runs:
        setting = f"{task_name} seed {r['seed']}"
        val = [row["val_pass@1"] for row in r["curve"]]
        rows.append(
            _row(setting, model, r["method"], benchmark, pass1 + _suffix(r["factor"]), points(r["test"]))
        )
        final = {pass1: r["curve"][-1]["val_pass@1"], "sampled " + pass1: r.get("val_sampled")}
        for name, value in final.items():  # the final validation point (greedy, and sampled at T = 1)
            if value is not None:
                metric = name + _suffix(r["factor"], "val")
                rows.append(_row(setting, model, r["method"], benchmark, metric, points(value)))
        metric = "max drawdown" + _suffix(r["factor"], "val")
        rows.append(_row(setting, model, r["method"], benchmark, metric, points(max_drawdown(val))))
    return rows


def rm_rows(task_name: str, model: str, rms: dict[str, dict]) -> list[dict]:
    """The dense sources' held-out pairwise accuracy (points), before (the starting policy's own scores) and
    after RM training; one row each (the RMs are trained once, not per seed)."""
    rows = []
    for source, rm in rms.items():
        bench = f"toy-{task_name} pairs" if task_name == "arith" else f"{task_name} pairs"
        rows.append(_row(task_name, model, source, bench, "pairwise accuracy", points(rm["accuracy"])))
        before = points(rm["accuracy_before"])
        rows.append(_row(task_name, model, source, bench, "pairwise accuracy (untrained)", before))
    return rows


def criteria_markdown(result: dict) -> str:
    """The spec's five pass criteria of the GRU check as a markdown table (means over seeds, points), for
    results/<scale>/details.md, which `make tables` shows under the results table."""
    c, cfg = result["criteria"], result["config"]
    seeds = ", ".join(str(s) for s in cfg.get("seeds", []))
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    pt = lambda x: f"{100 * x:.1f}"  # noqa: E731
    c1, c2, c3, c4, c5 = (c[k] for k in sorted(c))
    falls = c5["per_run"]
    lines = [
        f"#### The spec's five pass criteria (GRU check, means over seeds {seeds}; `stability.json`)",
        "",
        "| criterion | LCO-KLD | baseline | passes |",
        "|---|---|---|---|",
        f"| 1. aggressive lr: final token accuracy LCO-KLD > PPO | {pt(c1['LCO-KLD'])} | PPO {pt(c1['PPO'])} "
        f"| {yes(c1['passed'])} |",
        f"| 2. aggressive lr: max drawdown LCO-KLD <= PPO | {pt(c2['LCO-KLD'])} | PPO {pt(c2['PPO'])} "
        f"| {yes(c2['passed'])} |",
        f"| 3. normal lr: LCO-KLD >= PPO - {pt(c3['tolerance'])} points | {pt(c3['LCO-KLD'])} | PPO "
        f"{pt(c3['PPO'])} | {yes(c3['passed'])} ({100 * (c3['LCO-KLD'] - c3['PPO']):+.1f}) |",
        f"| 4. normal lr: LCO-KLD beats PG-IS by >= {pt(c4['gap'])} points | {pt(c4['LCO-KLD'])} | PG-IS "
        f"{pt(c4['PG-IS'])} | {yes(c4['passed'])} ({100 * (c4['LCO-KLD'] - c4['PG-IS']):+.1f}) |",
        f"| 5. LCO-KLD's last-quarter gradient norm < first-quarter, every seed and lr | "
        f"{sum(falls.values())}/{len(falls)} runs | - | {yes(c5['passed'])} |",
    ]
    return "\n".join(lines) + "\n"


def plot_stability(result: dict, out: Path) -> list[Path]:
    """Accuracy per evaluation and gradient norm per iteration (mean of its optimizer steps), seeds as a band."""
    its = result["iterations"]
    acc = {
        name: [list(zip(its, (points(y) for y in c))) for c in per_seed.values()]
        for name, per_seed in result["curves"].items()
    }
    steps = result["config"]["steps_per_iteration"]
    norms = {
        name: [
            [(i + 1, sum(n[i * steps : (i + 1) * steps]) / steps) for i in range(len(n) // steps)]
            for n in per_seed.values()
        ]
        for name, per_seed in result["grad_norms"].items()
    }
    seeds = len(next(iter(result["curves"].values())))
    return [
        plot_curves(
            acc,
            out / "stability_accuracy.png",
            f"GRU stability check ({seeds} seeds)",
            "iteration",
            "greedy token accuracy (points)",
            band=True,
        ),
        plot_curves(
            norms,
            out / "stability_grad_norm.png",
            "GRU stability check: gradient norm",
            "iteration",
            "mean gradient norm per step",
            band=True,
        ),
    ]


def plot_rl(task_name: str, sft: dict, runs: list[dict], out: Path) -> list[Path]:
    """Validation Pass@1 and gradient norm per chunk, one colour per method @ lr, seeds as a band."""
    val, norms = {}, {}
    for r in runs:
        name = f"{r['method']} @ lr x{r['factor']:g}"
        val.setdefault(name, []).append([(row["chunk"], points(row["val_pass@1"])) for row in r["curve"]])
        norms.setdefault(name, []).append(
            [(row["chunk"], row["grad_norm"]) for row in r["curve"] if "grad_norm" in row]
        )
    return [
        plot_curves(
            val,
            out / f"{task_name}_val_pass1.png",
            f"{task_name}: validation greedy Pass@1",
            "chunk",
            "Pass@1 (points)",
            reference={"SFT": points(sft["val"])},
            band=True,
        ),
        plot_curves(
            norms,
            out / f"{task_name}_grad_norm.png",
            f"{task_name}: policy gradient norm",
            "chunk",
            "mean gradient norm (pre-clip)",
            band=True,
        ),
    ]
