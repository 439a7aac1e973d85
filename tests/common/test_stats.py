"""common.stats: t quantiles against closed forms and the printed table, the regularized incomplete
beta on identities, and the interval of paired deltas (t below 30 pairs, seeded bootstrap from 30)."""

import math

import pytest

from common import stats

# Student's t, two-sided 95 % (p = 0.975), df 1..30, as printed in every t table (3 decimals).
T_TABLE_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
               2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
               2.052, 2.048, 2.045, 2.042]  # fmt: skip


def _t4_closed_form(p):
    """df = 4: t = 2 sqrt(q - 1), q = cos(arccos(sqrt(a)) / 3) / sqrt(a), a = 4p(1 - p) (p > 1/2)."""
    a = 4 * p * (1 - p)
    return 2 * math.sqrt(math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a) - 1)


@pytest.mark.parametrize("p", [0.55, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995])
def test_t_quantile_matches_closed_forms_for_df_1_2_4(p):
    assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    assert stats.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert stats.t_quantile(p, 4) == pytest.approx(_t4_closed_form(p), rel=1e-12)
    assert stats.t_quantile(1 - p, 4) == -stats.t_quantile(p, 4)


def test_t_quantile_matches_the_printed_table_and_the_normal_limit():
    assert [round(stats.t_quantile(0.975, df), 3) for df in range(1, 31)] == T_TABLE_975
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert stats.t_quantile(0.975, math.inf) == pytest.approx(1.959963984540054, rel=1e-12)
    assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.959963984540054, rel=1e-5)
    for df in (1, 3, 7.5, 29):
        for p in (0.6, 0.975):
            assert stats.t_cdf(stats.t_quantile(p, df), df) == pytest.approx(p, abs=1e-14)
    with pytest.raises(ValueError, match="0 < p < 1 and df > 0"):
        stats.t_quantile(1.0, 4)


def test_betainc_identities():
    for x in (0.01, 0.3, 0.5, 0.97):
        assert stats._betainc(1.0, 1.0, x) == pytest.approx(x, rel=1e-13)  # uniform
        assert stats._betainc(3.0, 1.0, x) == pytest.approx(x**3, rel=1e-13)
        assert stats._betainc(2.5, 4.0, x) == pytest.approx(1 - stats._betainc(4.0, 2.5, 1 - x), abs=1e-14)
    assert stats._betainc(7.0, 7.0, 0.5) == pytest.approx(0.5, abs=1e-14)
    assert stats._betainc(2.0, 3.0, 0.0) == 0.0 and stats._betainc(2.0, 3.0, 1.0) == 1.0


def test_delta_stats_t_interval_and_one_pair():
    deltas = [1.33, 1.0, 1.0, 0.33, -1.34]
    got = stats.delta_stats(deltas)
    mean = sum(deltas) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert (got.n, got.method) == (5, "t")
    assert got.mean == pytest.approx(mean, rel=1e-14) and got.sd == pytest.approx(sd, rel=1e-14)
    assert got.low == pytest.approx(mean - half, rel=1e-12) and got.high == pytest.approx(
        mean + half, rel=1e-12
    )
    assert got.half_width == pytest.approx(half, rel=1e-12)
    one = stats.delta_stats([2.0])
    assert (one.mean, one.sd, one.low, one.high, one.method, one.half_width) == (
        2.0,
        None,
        None,
        None,
        "none",
        None,
    )
    tie = stats.delta_stats([3.0, 3.0, 3.0])
    assert (tie.low, tie.high) == (3.0, 3.0)
    with pytest.raises(ValueError, match="at least one delta"):
        stats.delta_stats([])


def test_delta_stats_bootstrap_from_30_pairs_is_seeded():
    deltas = [math.sin(i) + 0.3 for i in range(40)]
    got = stats.delta_stats(deltas)
    assert got.method == "bootstrap" and got.n == 40
    assert got == stats.delta_stats(deltas)  # same seed, same interval
    assert got != stats.delta_stats(deltas, seed=1)
    t = stats.delta_stats(deltas, bootstrap_min_n=1000)  # the t-interval of the same deltas
    assert t.method == "t" and got.low < got.mean < got.high
    assert got.half_width == pytest.approx(t.half_width, rel=0.1)  # the two agree for a smooth sample
    assert stats.delta_stats(deltas[:29]).method == "t"
