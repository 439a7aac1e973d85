"""Best-of-N selection (`papers/ipvrm/bon.py`) against an independent numpy computation, ties, the
reference arms' bounds, and the one-line error when N exceeds the candidates drawn."""

import numpy as np
import pytest

from papers.ipvrm.bon import (
    best_of_n_picks,
    bon_accuracy,
    oracle_accuracy,
    random_pick_accuracy,
    solution_score,
)


def _pool(problems=30, width=64, seed=0, levels=None):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(problems, width))
    if levels:  # coarse scores: many ties
        scores = np.round(scores * levels) / levels
    grades = (rng.random((problems, width)) < 0.3).astype(int)
    return scores, grades


@pytest.mark.parametrize("n", [1, 4, 16, 64, 5])
@pytest.mark.parametrize("levels", [None, 1])
def test_bon_matches_numpy_groups(n, levels):
    scores, grades = _pool(levels=levels)
    groups = scores.shape[1] // n
    blocks = scores[:, : groups * n].reshape(len(scores), groups, n)
    picks = blocks.argmax(-1) + np.arange(groups) * n  # numpy's argmax: the first maximum
    assert best_of_n_picks(scores.tolist(), n) == picks.tolist()
    expected = np.take_along_axis(grades, picks, 1).mean()
    assert bon_accuracy(scores.tolist(), grades.tolist(), n) == pytest.approx(expected)
    g = grades[:, : groups * n].reshape(len(grades), groups, n)
    assert random_pick_accuracy(grades.tolist(), n) == pytest.approx(g.mean())
    assert oracle_accuracy(grades.tolist(), n) == pytest.approx(g.max(-1).mean())


def test_ties_pick_the_first_and_hand_example():
    assert best_of_n_picks([[1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 2.0]], 4) == [[0, 4]]
    scores = [[0.1, 0.9, 0.5, 0.9], [3.0, 1.0, 2.0, 0.0]]
    grades = [[0, 1, 1, 0], [0, 0, 1, 1]]
    assert bon_accuracy(scores, grades, 4) == 0.5  # picks 1 (right) and 0 (wrong)
    assert bon_accuracy(scores, grades, 2) == 0.5  # picks 1, 3 | 0, 2: grades 1, 0 | 0, 1
    assert random_pick_accuracy(grades, 4) == 0.5 and oracle_accuracy(grades, 4) == 1.0
    assert oracle_accuracy(grades, 1) == random_pick_accuracy(grades, 1) == 0.5


def test_oracle_bounds_every_pick():
    scores, grades = _pool(seed=3, levels=2)
    for n in (4, 16, 64):
        picks = best_of_n_picks(scores.tolist(), n)
        for p, row in enumerate(picks):
            for j, i in enumerate(row):
                assert grades[p, j * n : (j + 1) * n].max() >= grades[p, i]  # oracle >= the pick, per group
        assert oracle_accuracy(grades.tolist(), n) >= bon_accuracy(scores.tolist(), grades.tolist(), n)
        assert oracle_accuracy(grades.tolist(), n) >= random_pick_accuracy(grades.tolist(), n)


def test_scores_that_know_the_grade_reach_the_oracle():
    _, grades = _pool(seed=5)
    perfect = (grades + 0.0).tolist()
    for n in (4, 16, 64):
        assert bon_accuracy(perfect, grades.tolist(), n) == oracle_accuracy(grades.tolist(), n)


def test_n_larger_than_the_pool_is_one_line():
    scores, grades = _pool(width=16)
    for call in (
        lambda: bon_accuracy(scores.tolist(), grades.tolist(), 64),
        lambda: oracle_accuracy(grades.tolist(), 64),
        lambda: random_pick_accuracy(grades.tolist(), 64),
    ):
        with pytest.raises(ValueError, match="N = 64 is more than the 16 candidates") as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="same number"):
        bon_accuracy([[0.0, 1.0]], [[1, 0, 1]], 2)


def test_solution_score_rules():
    assert solution_score([1.0, 2.0, 3.0], "sum") == 6.0
    assert solution_score([1.0, 2.0, 3.0], "mean") == 2.0
    with pytest.raises(ValueError, match="no response tokens"):
        solution_score([], "sum")
    with pytest.raises(ValueError, match="unknown rule"):
        solution_score([1.0], "min")
