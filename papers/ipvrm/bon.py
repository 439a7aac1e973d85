"""Best-of-N selection (paper step 4, Tables 1 / 12), as pure functions over a candidate pool.

A pool holds, per problem, S candidates from pi_SFT with one RM score and one 0/1 grade each. For N in
{4, 16, 64} the pool splits into S // N consecutive groups of N candidates (ImplicitPRM's `bon_eval`, the
protocol the spec names; the first group is "the first N"); a group's pick is its highest-scored
candidate, the first one in sample order on a tie. Accuracy = the mean over problems and groups of the
pick's grade. Reference arms over the same groups: a uniformly random pick (its expected grade, the
group's mean: Pass@1, the floor) and the oracle (any candidate of the group correct: pass@N, the ceiling).

How an RM turns a response into one score is not stated in the paper and no BoN script is in the repo
(spec "Best-of-N": UNCONFIRMED); `solution_score` is our choice, each RM's own trained sequence quantity.
"""

from __future__ import annotations

import math

BON_NS = (4, 16, 64)  # paper: N in {4, 16, 64}
SCORE_RULES = {  # RM kind -> how its per-token beta * l_t become one solution score (UNCONFIRMED, ours)
    "IPVRM": "mean",  # v̄_T = V_T / T: sigma(v̄_t) is what Eq. 9 trains to read P(correct | prefix)
    "Implicit PRM": "sum",  # V_T = beta sum l: Eq. 4's outcome logit R
    "DPO-RM": "sum",  # r(x, y) = beta sum l: Eq. 1's sequence reward
}


def solution_score(token_rewards: list[float], rule: str) -> float:
    """One candidate's score from its per-token rewards beta * l_t (response tokens): "sum" = V_T,
    "mean" = V_T / T (T = the response-token count)."""
    if not token_rewards:
        raise ValueError("solution_score: a candidate with no response tokens")
    total = math.fsum(token_rewards)
    if rule == "sum":
        return total
    if rule == "mean":
        return total / len(token_rewards)
    raise ValueError(f"solution_score: unknown rule {rule!r}; valid: sum, mean")


def _groups(width: int, n: int, where: str) -> range:
    if n < 1:
        raise ValueError(f"{where}: N must be >= 1, got {n}")
    if n > width:
        raise ValueError(f"{where}: N = {n} is more than the {width} candidates drawn per problem")
    return range(0, width - width % n, n)


def _check(scores: list[list[float]] | None, grades: list[list[int]]) -> int:
    if not grades:
        raise ValueError("best-of-N: no problems")
    width = len(grades[0])
    rows = grades if scores is None else [*grades, *scores]
    if any(len(r) != width for r in rows) or (scores is not None and len(scores) != len(grades)):
        raise ValueError("best-of-N: every problem needs the same number of scores and grades")
    return width


def best_of_n_picks(scores: list[list[float]], n: int) -> list[list[int]]:
    """Per problem, the index of each consecutive N-group's highest-scored candidate (first on a tie)."""
    width = len(scores[0]) if scores else 0
    starts = _groups(width, n, "best_of_n_picks")
    picks = []
    for row in scores:
        if len(row) != width:
            raise ValueError("best_of_n_picks: every problem needs the same number of scores")
        picks.append([max(range(s, s + n), key=lambda i: (row[i], -i)) for s in starts])
    return picks


def bon_accuracy(scores: list[list[float]], grades: list[list[int]], n: int) -> float:
    """Mean grade of the best-of-N picks over problems and groups (a fraction)."""
    _check(scores, grades)
    picks = best_of_n_picks(scores, n)
    hits = [g[i] for g, row in zip(grades, picks) for i in row]
    return sum(hits) / len(hits)


def random_pick_accuracy(grades: list[list[int]], n: int) -> float:
    """Expected grade of a uniformly random candidate of each group (= Pass@1 over the used candidates)."""
    width = _check(None, grades)
    starts = _groups(width, n, "random_pick_accuracy")
    means = [sum(g[s : s + n]) / n for g in grades for s in starts]
    return sum(means) / len(means)


def oracle_accuracy(grades: list[list[int]], n: int) -> float:
    """Fraction of groups holding at least one correct candidate (pass@N: no selector does better)."""
    width = _check(None, grades)
    starts = _groups(width, n, "oracle_accuracy")
    hits = [max(g[s : s + n]) for g in grades for s in starts]
    return sum(hits) / len(hits)
