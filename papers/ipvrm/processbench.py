"""ProcessBench scoring for scalar step scores: earliest-error prediction, F1 and the two threshold protocols.

Spec `shared/papers/ipvrm.md`, "Evaluation" and invariant 13; ProcessBench code/run_eval.py and its issues
#3 and #6; the IPVRM/ImplicitPRM process_eval.py.
- Prediction: the first step whose score is below the threshold tau, -1 when none is.
- F1 (ProcessBench's, not a precision/recall F1): acc_err = mean(pred == label) over the samples with
  label != -1, acc_cor = mean(pred == -1) over label == -1, F1 = 2 acc_err acc_cor / (acc_err + acc_cor)
  (0 when both are 0). Reported x 100 here, as the paper's tables.
- Thresholds, both protocols (the paper does not say which its Table 2 used: UNCONFIRMED):
  - "calibrated" (ProcessBench's convention, issue #3): tau tuned by F1 on one subset (GSM8K) and fixed
    for every subset;
  - "oracle" (the released IPVRM / ImplicitPRM code): the best F1 over the grid on each evaluated subset
    itself, an optimistic upper bound.
  The official grid is np.linspace(-1, 1, 1000) (`official_grid`); `midpoint_grid` holds every distinct
  cut of the given scores (each midpoint of the sorted distinct scores and one value beyond each end), so
  the search over it is exact. Ties go to the first threshold in grid order (the code keeps a strict `>`).
- Rows: `read_processbench(split, data_dir)` reads `common.data`'s "processbench" (the mirror
  <data_dir>/ipvrm/processbench/<split>.json, or the hub when no mirror is given) and checks each
  label against its steps.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path

from common.data import DataError, load_rows, resolve_data_dir

SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")
CALIBRATION_SPLIT = "gsm8k"  # ProcessBench issue #3: the threshold is tuned on GSM8K
OFFICIAL_GRID_SIZE = 1000  # process_eval.py --num_thresholds default


def parse_threshold(value: object, where: str = "threshold") -> float:
    """A finite float from a number or a numeric string; else one ValueError line naming `where`."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        tau = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(tau):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return tau


def predict_first_error(step_scores: Sequence[float], threshold: float) -> int:
    """The index of the first step whose score is < `threshold`; -1 when every step is >= it."""
    tau = parse_threshold(threshold)
    for k, score in enumerate(step_scores):
        if float(score) < tau:
            return k
    return -1


def _check_labels(labels: Sequence[int], n: int, where: str) -> None:
    if len(labels) != n:
        raise ValueError(f"{where}: {n} predictions or score lists but {len(labels)} labels")
    if not any(label == -1 for label in labels) or not any(label != -1 for label in labels):
        raise ValueError(f"{where}: labels need both correct (-1) and erroneous (>= 0) samples")


def processbench_f1(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """{"acc_erroneous", "acc_correct", "f1"} in percent (ProcessBench run_eval.py)."""
    _check_labels(labels, len(predictions), "processbench_f1")
    err = [p == y for p, y in zip(predictions, labels) if y != -1]
    cor = [p == -1 for p, y in zip(predictions, labels) if y == -1]
    acc_err, acc_cor = sum(err) / len(err), sum(cor) / len(cor)
    f1 = 0.0 if acc_err + acc_cor == 0 else 2 * acc_err * acc_cor / (acc_err + acc_cor)
    return {"acc_erroneous": 100 * acc_err, "acc_correct": 100 * acc_cor, "f1": 100 * f1}


def f1_at_threshold(
    step_scores: Sequence[Sequence[float]], labels: Sequence[int], threshold: float
) -> dict[str, float]:
    """`processbench_f1` of the predictions at one threshold, with "threshold" added."""
    tau = parse_threshold(threshold)
    preds = [predict_first_error(scores, tau) for scores in step_scores]
    return {"threshold": tau, **processbench_f1(preds, labels)}


def official_grid(num_thresholds: int = OFFICIAL_GRID_SIZE) -> list[float]:
    """np.linspace(-1, 1, num_thresholds) (process_eval.py), as floats."""
    if num_thresholds < 2:
        raise ValueError(f"official_grid: num_thresholds must be >= 2, got {num_thresholds}")
    return [-1 + 2 * i / (num_thresholds - 1) for i in range(num_thresholds)]


def midpoint_grid(step_scores: Sequence[Sequence[float]]) -> list[float]:
    """Every distinct cut of these scores: one below the minimum, the midpoints, one above the maximum."""
    values = sorted({float(s) for scores in step_scores for s in scores})
    if not values:
        raise ValueError("midpoint_grid: no step scores")
    mids = [(a + b) / 2 for a, b in zip(values, values[1:])]
    return [values[0] - 1.0, *mids, values[-1] + 1.0]


def _correct_interval(scores: Sequence[float], label: int) -> tuple[float, float]:
    """(lo, hi): the prediction is right exactly when lo < tau <= hi (lo = -inf: tau <= hi).

    pred == -1 iff tau <= min_k s_k; pred == y >= 0 iff s_y < tau <= min_{k<y} s_k."""
    if label == -1:
        return -math.inf, min(map(float, scores), default=math.inf)
    if not 0 <= label < len(scores):
        raise ValueError(f"best_threshold: label {label} is not a step index of {len(scores)} scores")
    return float(scores[label]), min(map(float, scores[:label]), default=math.inf)


def best_threshold(
    step_scores: Sequence[Sequence[float]],
    labels: Sequence[int],
    thresholds: Sequence[float] | None = None,
) -> dict[str, float]:
    """The threshold of highest F1 on these samples (the first in grid order on ties), with its metrics.

    `thresholds` None: `midpoint_grid(step_scores)` (exact); `official_grid()` is the released code's.
    Each sample is right on one interval of tau (`_correct_interval`), so the counts at every grid
    point come from one sweep over the sorted grid instead of a pass over the samples per threshold."""
    _check_labels(labels, len(step_scores), "best_threshold")
    grid = midpoint_grid(step_scores) if thresholds is None else [parse_threshold(t) for t in thresholds]
    if not grid:
        raise ValueError("best_threshold: no thresholds")
    order = sorted(range(len(grid)), key=grid.__getitem__)
    ordered = [grid[i] for i in order]
    hits = {"err": [0] * (len(grid) + 1), "cor": [0] * (len(grid) + 1)}
    for scores, label in zip(step_scores, labels):
        lo, hi = _correct_interval(scores, label)
        start, end = bisect.bisect_right(ordered, lo), bisect.bisect_right(ordered, hi)
        if start < end:
            diff = hits["cor" if label == -1 else "err"]
            diff[start] += 1
            diff[end] -= 1
    n_err = sum(label != -1 for label in labels)
    n_cor = len(labels) - n_err
    f1 = [0.0] * len(grid)
    run_err = run_cor = 0
    for pos, i in enumerate(order):
        run_err, run_cor = run_err + hits["err"][pos], run_cor + hits["cor"][pos]
        a_err, a_cor = run_err / n_err, run_cor / n_cor
        f1[i] = 0.0 if a_err + a_cor == 0 else 2 * a_err * a_cor / (a_err + a_cor)
    best = max(range(len(grid)), key=lambda i: (f1[i], -i))
    return f1_at_threshold(step_scores, labels, grid[best])


def evaluate_subsets(
    subsets: dict[str, tuple[Sequence[Sequence[float]], Sequence[int]]],
    protocol: str = "calibrated",
    calibrate_on: str = CALIBRATION_SPLIT,
    thresholds: Sequence[float] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-subset metrics {name: {"threshold", "acc_erroneous", "acc_correct", "f1"}} plus "average"
    (the mean F1 over the subsets, the paper's Avg column) under `protocol`:
    "calibrated" tau tuned on `calibrate_on` and fixed; "oracle" tau tuned on each subset itself."""
    if protocol not in ("calibrated", "oracle"):
        raise ValueError(f"evaluate_subsets: protocol {protocol!r}; valid: calibrated, oracle")
    if not subsets:
        raise ValueError("evaluate_subsets: no subsets")
    out: dict[str, dict[str, float]] = {}
    if protocol == "calibrated":
        if calibrate_on not in subsets:
            raise ValueError(
                f"evaluate_subsets: calibrate_on {calibrate_on!r} is not among {sorted(subsets)}"
            )
        tau = best_threshold(*subsets[calibrate_on], thresholds)["threshold"]
        for name, (scores, labels) in subsets.items():
            out[name] = f1_at_threshold(scores, labels, tau)
    else:
        for name, (scores, labels) in subsets.items():
            out[name] = best_threshold(scores, labels, thresholds)
    out["average"] = {"f1": sum(r["f1"] for r in out.values()) / len(subsets)}
    return out


def _source(split: str, data_dir: str | Path | None) -> str:
    root = resolve_data_dir(data_dir)  # as load_rows: no mirror given means the hub copy
    if root is None:
        return f"hf://Qwen/ProcessBench:{split}"
    return str(Path(root) / "ipvrm" / "processbench" / f"{split}.json")


def read_processbench(split: str, data_dir: str | Path | None = None) -> list[dict]:
    """The rows of one ProcessBench subset (`common.data` "processbench": id, question, steps, label,
    final_answer_correct, generator); a row whose label is not -1 or a step index is a DataError
    naming the file and row (a missing label is `common.data`'s same one-line DataError)."""
    if split not in SPLITS:
        raise DataError(f"processbench: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    rows = load_rows("processbench", split, data_dir)
    for number, row in enumerate(rows, start=1):
        if not (row["label"] == -1 or 0 <= row["label"] < len(row["steps"])):
            raise DataError(
                f"{_source(split, data_dir)} row {number}: label {row['label']} is neither -1 nor a step "
                f"index of its {len(row['steps'])} steps"
            )
    return rows
