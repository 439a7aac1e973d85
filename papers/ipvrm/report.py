"""What an IPVRM toy run reports: result rows (published.csv's columns; accuracies and F1 in points), the
spec's Part B pass rule, and the plots. Reads only the stages' outputs.

Rows: `setting` = `chain` (pi_SFT, measured once) or `chain seed <s>`; `model` = the tiny preset;
Part A (benchmark `toy-processbench`): `F1` (process-level step scores, threshold tuned on the validation
set), `F1 (prefix-based)`, `prefix AUC after <k> steps` (a fraction); Part B (benchmark `toy-arith`):
`mean per-token RM score` (Eq. 19, last steps' rollouts), `verifier accuracy (rollouts, last steps)`,
`greedy accuracy` and `sampled accuracy (avg@4, T=1)` on the test prompts; pi_SFT's rows as method `SFT`;
Best-of-N (benchmark `toy-arith`): `BoN@<N> acc` and `BoN avg acc` per RM and the two reference arms.
"""

from __future__ import annotations

from pathlib import Path

from common.plots import plot_curves
from common.results import result_row

BENCH_A, BENCH_B = "toy-processbench", "toy-arith"
GRPO, DISTRL, CALIBRATION = "GRPO w/ IPVRM", "DistRL w/ IPVRM", "GRPO w/ VR"
RANDOM_PICK, ORACLE = "Random pick (Pass@1)", "Oracle pick (pass@N)"


def points(x: float) -> float:
    return round(100 * x, 4)


def _row(setting: str, model: str, method: str, benchmark: str, metric: str, value: float) -> dict:
    return result_row("toy", setting, model, method, benchmark, metric, value)


def sft_rows(model: str, sft: dict) -> list[dict]:
    rows = [
        _row("chain", model, "SFT", BENCH_B, "greedy accuracy", points(sft["test_greedy"])),
        _row("chain", model, "SFT", BENCH_B, "sampled accuracy (avg@4, T=1)", points(sft["test_sampled"])),
        _row("chain", model, "SFT", BENCH_B, "greedy accuracy (val)", points(sft["val_greedy"])),
        _row(
            "chain", model, "SFT", BENCH_B, "sampled accuracy (avg@4, T=1, val)", points(sft["val_sampled"])
        ),
    ]
    for k, acc in enumerate(sft["step_accuracy"]):
        rows.append(_row("chain", model, "SFT", BENCH_B, f"step {k + 1} digit accuracy (val)", points(acc)))
    return rows


def rm_rows(model: str, rms: list[dict]) -> list[dict]:
    rows = []
    for r in rms:
        setting, kind = f"chain seed {r['seed']}", r["kind"]
        rows.append(_row(setting, model, kind, BENCH_A, "F1", round(r["process"]["f1"], 4)))
        rows.append(_row(setting, model, kind, BENCH_A, "F1 (prefix-based)", round(r["prefix"]["f1"], 4)))
        for k, value in r["prefix_auc"].items():
            rows.append(_row(setting, model, kind, BENCH_A, f"prefix AUC after {k} steps", round(value, 4)))
    return rows


def processbench_rows(real: dict) -> list[dict]:
    """The real-data ProcessBench rows: per subset and the average, F1 under both threshold protocols and
    both step-score protocols (table `real`; the model is the RM, the method says it is its own reference)."""
    model = real["rm"]
    method = "RM = reference (untrained)" if real["rm"] == real["ref"] else f"RM vs {real['ref']}"
    rows = []
    for protocol, name in (("process", "process-level"), ("prefix", "prefix-based")):
        for threshold, res in real[protocol].items():
            for subset, r in res.items():
                bench = "ProcessBench-Avg" if subset == "average" else f"ProcessBench-{subset}"
                n = sum(real["n"].values()) if subset == "average" else real["n"][subset]
                metric = f"F1 ({name}, {threshold} threshold)"
                rows.append(
                    result_row("real", f"sample of {n}", model, method, bench, metric, round(r["f1"], 4))
                )
    return rows


def rl_rows(model: str, runs: list[dict]) -> list[dict]:
    rows = []
    for r in runs:
        setting, m = f"chain seed {r['seed']}", r["method"]
        rows.append(_row(setting, model, m, BENCH_B, "mean per-token RM score", round(r["last_rm_score"], 6)))
        rows.append(
            _row(
                setting,
                model,
                m,
                BENCH_B,
                "verifier accuracy (rollouts, last steps)",
                points(r["last_correct"]),
            )
        )
        rows.append(_row(setting, model, m, BENCH_B, "greedy accuracy", points(r["test_greedy"])))
        rows.append(
            _row(setting, model, m, BENCH_B, "sampled accuracy (avg@4, T=1)", points(r["test_sampled"]))
        )
    return rows


def bon_rows(model: str, pools: list[dict], bons: list[dict]) -> list[dict]:
    """Best-of-N rows (benchmark `toy-arith`, the test prompts; Table 1's metric names): per seed, each RM's
    `BoN@<N> acc` and `BoN avg acc` (the mean over the N, Table 1's per-dataset score), and the reference
    arms `RANDOM_PICK` (floor) and `ORACLE` (ceiling) on the same pool."""
    rows = []
    arms = [(RANDOM_PICK, p["seed"], p["random"]) for p in pools] + [
        (ORACLE, p["seed"], p["oracle"]) for p in pools
    ]
    for method, seed, acc in arms + [(b["kind"], b["seed"], b["accuracy"]) for b in bons]:
        setting = f"chain seed {seed}"
        for n, value in acc.items():
            rows.append(_row(setting, model, method, BENCH_B, f"BoN@{n} acc", points(value)))
        mean = sum(acc.values()) / len(acc)
        rows.append(_row(setting, model, method, BENCH_B, "BoN avg acc", points(mean)))
    return rows


def bon_calibration(pools: list[dict], bons: list[dict], n: int = 16) -> dict:
    """Per RM kind, BoN@n - random pick@n per seed (points) and the kinds above the floor in every seed (the
    noise-aware verdicts are the claims'); `n` falls back to the largest N drawn."""
    key = str(n) if all(str(n) in p["random"] for p in pools) else max(pools[0]["random"], key=int)
    floor = {p["seed"]: p["random"][key] for p in pools}
    out: dict = {"N": int(key)}
    for b in bons:
        out.setdefault(b["kind"], []).append(points(b["accuracy"][key] - floor[b["seed"]]))
    return out | {
        "above_random_in_every_seed": sorted(k for k, d in out.items() if k != "N" and min(d) > 0),
        "grader_agreement": min(p["grader_agreement"] for p in pools),
    }


def part_b_verdict(runs: list[dict], sft: dict) -> dict:
    """The spec's pass rule: DistRL's mean per-token RM score > GRPO's in >= 2 of 3 seeds and on the mean
    over seeds, with its rollout verifier accuracy not more than 2 points below GRPO's (mean over seeds);
    plus the calibration arm (GRPO w/ VR's test sampled accuracy above pi_SFT's, mean over seeds)."""
    by = {(r["method"], r["seed"]): r for r in runs}
    seeds = sorted({s for m, s in by if m == DISTRL and (GRPO, s) in by})
    out: dict = {}
    if seeds:
        d = [by[(DISTRL, s)]["last_rm_score"] - by[(GRPO, s)]["last_rm_score"] for s in seeds]
        acc = [points(by[(DISTRL, s)]["last_correct"] - by[(GRPO, s)]["last_correct"]) for s in seeds]
        wins, need = sum(x > 0 for x in d), 2 * len(seeds) / 3
        mean_d, mean_acc = sum(d) / len(d), sum(acc) / len(acc)
        out |= {
            "seeds": seeds,
            "rm_score_deltas": d,
            "rm_score_wins": wins,
            "mean_rm_score_delta": mean_d,
            "verifier_accuracy_deltas_points": acc,
            "mean_verifier_accuracy_delta_points": mean_acc,
            "passed": wins >= need and mean_d > 0 and mean_acc >= -2.0,
        }
    cal = [r["test_sampled"] for r in runs if r["method"] == CALIBRATION]
    if cal:
        deltas = [points(c - sft["test_sampled"]) for c in cal]
        out["calibration"] = {
            "sampled_accuracy_deltas_points": deltas,
            "moved": sum(deltas) / len(deltas) > 0,
        }
    return out


def plot_rl(runs: list[dict], sft: dict, out: Path) -> list[Path]:
    """Per chunk, the rollouts' mean per-token RM score and verifier accuracy: a colour per method, seeds
    as a band; pi_SFT's sampled accuracy as the reference line."""
    score, acc = {}, {}
    for r in sorted(runs, key=lambda r: (r["method"], r["seed"])):
        score.setdefault(r["method"], []).append([(c["chunk"], c["rm_score"]) for c in r["curve"]])
        acc.setdefault(r["method"], []).append([(c["chunk"], points(c["correct"])) for c in r["curve"]])
    return [
        plot_curves(
            score,
            out / "rl_rm_score.png",
            "Part B: mean per-token IPVRM score of the rollouts (Eq. 19)",
            "RL step",
            "(1/|y|) sum log pi_phi / pi_SFT",
            band=True,
        ),
        plot_curves(
            acc,
            out / "rl_verifier_accuracy.png",
            "Part B: verifier accuracy of the rollouts (T = 1)",
            "RL step",
            "accuracy (points)",
            reference={"SFT (test, T=1)": points(sft["test_sampled"])},
            band=True,
        ),
    ]
