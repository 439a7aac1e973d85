"""ProcessBench scoring (spec invariant 13 and the two threshold protocols) on the mirrored ProcessBench
rows (../shared/data/ipvrm/processbench, SOURCE.md) with synthetic step scores, and the row reader's
one-line errors. Expected values are recomputed here with plain loops over the real labels."""

import json
from pathlib import Path

import pytest

from common.data import DataError
from papers.ipvrm.processbench import (
    SPLITS,
    best_threshold,
    evaluate_subsets,
    f1_at_threshold,
    midpoint_grid,
    official_grid,
    parse_threshold,
    predict_first_error,
    processbench_f1,
    read_processbench,
)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
COUNTS = {"gsm8k": (400, 193), "math": (1000, 406), "olympiadbench": (1000, 339), "omnimath": (1000, 241)}

needs_data = pytest.mark.skipif(
    not (DATA / "ipvrm" / "processbench").is_dir(), reason="no ProcessBench mirror beside the checkout"
)


@pytest.fixture(scope="module")
def subsets():
    return {s: read_processbench(s, DATA) for s in SPLITS}


def oracle_scores(row):
    """1 on steps before the first error, 0 on it and after; all 1 on a correct solution."""
    n, y = len(row["steps"]), row["label"]
    return [1.0] * n if y == -1 else [1.0 if k < y else 0.0 for k in range(n)]


@needs_data
def test_rows_match_source_counts(subsets):
    for split, rows in subsets.items():
        total, correct = COUNTS[split]
        assert len(rows) == total
        assert sum(r["label"] == -1 for r in rows) == correct
        assert all(isinstance(r["steps"], list) and r["steps"] for r in rows)


@needs_data
def test_oracle_scores_give_f1_100_both_protocols(subsets):
    data = {s: ([oracle_scores(r) for r in rows], [r["label"] for r in rows]) for s, rows in subsets.items()}
    for protocol in ("calibrated", "oracle"):
        out = evaluate_subsets(data, protocol)
        assert out["average"]["f1"] == 100.0
        assert all(out[s]["f1"] == 100.0 for s in SPLITS)
    assert f1_at_threshold(*data["math"], 0.5)["f1"] == 100.0


@needs_data
def test_constant_score_gives_zero_f1(subsets):
    rows = subsets["gsm8k"]
    scores, labels = [[0.3] * len(r["steps"]) for r in rows], [r["label"] for r in rows]
    below = f1_at_threshold(scores, labels, 0.3)  # tau <= every score: all -1 (invariant 13)
    assert below == {"threshold": 0.3, "acc_erroneous": 0.0, "acc_correct": 100.0, "f1": 0.0}
    above = f1_at_threshold(scores, labels, 0.31)  # every prediction is step 0
    n_err = sum(y != -1 for y in labels)
    want_err = 100 * sum(y == 0 for y in labels) / n_err
    assert above["acc_erroneous"] == pytest.approx(want_err) and above["acc_correct"] == 0.0
    assert above["f1"] == 0.0
    assert best_threshold(scores, labels)["f1"] == 0.0


@needs_data
@pytest.mark.parametrize("split", SPLITS)
def test_position_scores_oracle_equals_hand_count(subsets, split):
    """Score s_k = -k: tau in (-j-1, -j) predicts step j+1... so every threshold predicts "step j if the
    solution has more than j steps, else -1" for one j; the oracle F1 is the best such j."""
    rows = subsets[split]
    scores, labels = [[-float(k) for k in range(len(r["steps"]))] for r in rows], [r["label"] for r in rows]
    err = [r for r in rows if r["label"] != -1]
    cor = [r for r in rows if r["label"] == -1]
    best = 0.0
    for j in range(max(len(r["steps"]) for r in rows) + 1):
        a_err = sum(r["label"] == j for r in err) / len(err)
        a_cor = sum(len(r["steps"]) <= j for r in cor) / len(cor)
        f1 = 0.0 if a_err + a_cor == 0 else 2 * a_err * a_cor / (a_err + a_cor)
        best = max(best, 100 * f1)
    got = best_threshold(scores, labels)
    assert got["f1"] == pytest.approx(best, rel=1e-12)
    assert got["f1"] <= min(100.0, 2 * min(got["acc_erroneous"], got["acc_correct"])) + 1e-9


@needs_data
def test_calibrated_never_beats_oracle_and_uses_one_threshold(subsets):
    import random

    rng = random.Random(0)
    data = {}
    for s, rows in subsets.items():
        # noisy oracle: the first error scores lower on average, with overlap
        noisy = [[v + rng.gauss(0, 0.6) for v in oracle_scores(r)] for r in rows]
        data[s] = (noisy, [r["label"] for r in rows])
    cal = evaluate_subsets(data, "calibrated")
    ora = evaluate_subsets(data, "oracle")
    taus = {cal[s]["threshold"] for s in SPLITS}
    assert len(taus) == 1
    assert taus == {best_threshold(*data["gsm8k"])["threshold"]}
    assert cal["gsm8k"] == ora["gsm8k"]
    for s in SPLITS:
        assert cal[s]["f1"] <= ora[s]["f1"] + 1e-12
    assert ora["average"]["f1"] == pytest.approx(sum(ora[s]["f1"] for s in SPLITS) / 4)
    assert 0 < cal["average"]["f1"] < 100
    # the official grid can only do as well as the exact search
    off = best_threshold(*data["math"], official_grid())
    assert off["f1"] <= ora["math"]["f1"] + 1e-12


def test_f1_definition_and_invariants():
    labels = [-1, -1, 0, 2, 1]
    assert processbench_f1([-1] * 5, labels) == {"acc_erroneous": 0.0, "acc_correct": 100.0, "f1": 0.0}
    assert processbench_f1(labels, labels)["f1"] == 100.0
    got = processbench_f1([-1, 0, 0, 2, 0], labels)  # acc_cor 1/2, acc_err 2/3
    assert got["f1"] == pytest.approx(100 * 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert got["f1"] <= 2 * min(got["acc_erroneous"], got["acc_correct"])


def test_prediction_and_grids():
    assert predict_first_error([0.9, 0.4, 0.1], 0.5) == 1
    assert predict_first_error([0.9, 0.5], 0.5) == -1  # "below": a score equal to tau passes
    assert predict_first_error([0.2, 0.3], 0.2) == -1  # tau <= min score: -1 (invariant 13)
    grid = official_grid()
    assert len(grid) == 1000 and grid[0] == -1 and grid[-1] == 1
    assert midpoint_grid([[0.2, 0.6], [0.4]]) == pytest.approx([-0.8, 0.3, 0.5, 1.6])


@pytest.mark.parametrize("bad", ["abc", None, "nan", float("inf"), True, [0.5]])
def test_threshold_not_a_number_is_one_line(bad):
    with pytest.raises(ValueError, match="threshold: expected a") as e:
        parse_threshold(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="threshold"):
        f1_at_threshold([[0.1], [0.2]], [-1, 0], bad)
    assert parse_threshold("0.25") == 0.25


def test_labels_need_both_kinds():
    with pytest.raises(ValueError, match="both correct"):
        processbench_f1([-1, -1], [-1, -1])
    with pytest.raises(ValueError, match="2 predictions or score lists but 3 labels"):
        processbench_f1([-1, 0], [-1, 0, 1])


def _mirror(tmp_path, rows):
    folder = tmp_path / "ipvrm" / "processbench"
    folder.mkdir(parents=True)
    (folder / "gsm8k.json").write_text(json.dumps(rows))
    return folder / "gsm8k.json"


def _row(i, **change):
    row = {
        "id": f"x-{i}",
        "generator": "g",
        "problem": "p",
        "steps": ["a", "b"],
        "final_answer_correct": True,
    }
    return row | {"label": -1} | change


def test_row_without_label_names_file_and_row(tmp_path):
    bad = _row(2)
    del bad["label"]
    path = _mirror(tmp_path, [_row(1), bad])
    with pytest.raises(DataError) as e:
        read_processbench("gsm8k", tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "row 2" in msg and "'label'" in msg and "\n" not in msg


def test_row_with_out_of_range_label_names_file_and_row(tmp_path):
    path = _mirror(tmp_path, [_row(1), _row(2, label=0), _row(3, label=2)])
    with pytest.raises(DataError) as e:
        read_processbench("gsm8k", tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{path} row 3: label 2") and "\n" not in msg
    with pytest.raises(DataError, match="unknown split 'aime'"):
        read_processbench("aime", tmp_path)


def test_best_threshold_sweep_equals_brute_force():
    import random

    rng = random.Random(1)
    labels, scores = [], []
    for i in range(60):
        n = rng.randint(1, 6)
        labels.append(-1 if i % 3 == 0 else rng.randrange(n))
        scores.append([round(rng.random(), 1) for _ in range(n)])  # coarse: many ties
    for grid in (None, official_grid(101), [0.5, 0.3, 0.3, 0.7, -2.0]):
        taus = midpoint_grid(scores) if grid is None else grid
        brute = None
        for tau in taus:
            preds = [next((k for k, s in enumerate(row) if s < tau), -1) for row in scores]
            err = [p == y for p, y in zip(preds, labels) if y != -1]
            cor = [p == -1 for p, y in zip(preds, labels) if y == -1]
            a, c = sum(err) / len(err), sum(cor) / len(cor)
            f1 = 0.0 if a + c == 0 else 200 * a * c / (a + c)
            if brute is None or f1 > brute[1]:
                brute = (tau, f1)
        got = best_threshold(scores, labels, grid)
        assert got["threshold"] == brute[0] and got["f1"] == pytest.approx(brute[1], rel=1e-12)
