"""Statistics of per-run measurements, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchlab.stats import (
    bootstrap_diff_ci,
    early_auc,
    first_epoch_reaching,
    first_step_reaching,
    format_mean_std,
    holm,
    p_from_interval,
    runs_needed,
    summarize,
    t_test_power,
    tost,
    tost_power,
    welch,
    welch_ci,
)


def test_summarize_by_hand():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s.mean == 2.5 and s.n == 4
    assert s.std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, ddof 1
    # t(0.975, 3) = 3.182446...
    assert s.ci95 == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-5)


def test_summarize_edge_cases():
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)
    one = summarize([0.5])
    assert one.mean == 0.5 and math.isnan(one.std) and one.n == 1
    assert summarize([1.0, float("nan"), 3.0]).n == 2


def test_welch_by_hand():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0]
    va, vb = 1.0 / 3, (20 / 3) / 4  # sample variances 1 and 20/3, over n
    t = (2.0 - 7.0) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    result = welch(a, b)
    assert result.t == pytest.approx(t)
    assert result.df == pytest.approx(df)
    assert result.p == pytest.approx(2 * scipy_stats.t.sf(abs(t), df))
    assert result.p == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_degenerate_inputs():
    assert math.isnan(welch([1.0], [1.0, 2.0]).p)
    assert welch([0.9, 0.9], [0.9, 0.9]).p == 1.0
    assert welch([0.9, 0.9], [0.8, 0.8]).p == 0.0


def test_first_epoch_reaching():
    assert first_epoch_reaching([3, 1, 2], [0.99, 0.97, 0.985], 0.98) == 2
    assert first_epoch_reaching([1, 2], [0.5, 0.6], 0.98) is None


def test_format_mean_std():
    assert format_mean_std(summarize([0.98, 0.99]), 100) == "98.50 ± 0.71"
    assert format_mean_std(summarize([0.5]), 100) == "50.00"


# -- confidence intervals ------------------------------------------------------------------

A = [1.0, 2.0, 3.0]
B = [4.0, 6.0, 8.0, 10.0]


def test_welch_ci_by_hand_and_against_scipy():
    va, vb = 1.0 / 3, (20 / 3) / 4
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert welch_ci(A, B) == pytest.approx((-5 - half, -5 + half))
    ci = scipy_stats.ttest_ind(A, B, equal_var=False).confidence_interval(0.95)
    assert welch_ci(A, B) == pytest.approx((ci.low, ci.high))
    assert welch_ci(A, B, 0.9)[1] - welch_ci(A, B, 0.9)[0] < half * 2
    assert all(math.isnan(v) for v in welch_ci([1.0], B))
    assert welch_ci([2.0, 2.0], [1.0, 1.0]) == (1.0, 1.0)


def test_bootstrap_ci_is_seeded_and_close_to_the_t_interval_for_normal_data():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.3, 1.0, 200), rng.normal(0.0, 1.0, 200)
    first = bootstrap_diff_ci(a, b)
    assert first == bootstrap_diff_ci(a, b)  # same seed, same interval
    low, high = welch_ci(a, b)
    assert first[0] == pytest.approx(low, abs=0.03) and first[1] == pytest.approx(high, abs=0.03)
    assert bootstrap_diff_ci([1.0, 1.0], [0.0, 0.0]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_diff_ci([1.0], [0.0, 1.0]))


# -- equivalence -----------------------------------------------------------------------------

def test_tost_hand_worked_example():
    # a: mean 10.0, variance 0.01 (n 3); b: mean 10.05, variance 0.0025 (n 2); margin 0.2
    a, b = [9.9, 10.0, 10.1], [10.0, 10.1]
    se = math.sqrt(0.01 / 3 + 0.0025)  # var(b) = 0.005, / n = 0.0025
    df = (0.01 / 3 + 0.0025) ** 2 / ((0.01 / 3) ** 2 / 2 + 0.0025**2 / 1)
    t_lower, t_upper = (-0.05 + 0.2) / se, (-0.05 - 0.2) / se
    result = tost(a, b, margin=0.2)
    assert result.diff == pytest.approx(-0.05)
    assert result.df == pytest.approx(df)
    assert result.p_lower == pytest.approx(scipy_stats.t.sf(t_lower, df))
    assert result.p_upper == pytest.approx(scipy_stats.t.cdf(t_upper, df))
    assert result.p == max(result.p_lower, result.p_upper)


def test_tost_against_one_sided_scipy_tests_on_shifted_samples():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.990, 0.001, 8), rng.normal(0.9903, 0.0015, 6)
    margin = 0.002
    result = tost(a, b, margin)
    lower = scipy_stats.ttest_ind(a + margin, b, equal_var=False, alternative="greater")
    upper = scipy_stats.ttest_ind(a - margin, b, equal_var=False, alternative="less")
    assert result.p_lower == pytest.approx(lower.pvalue)
    assert result.p_upper == pytest.approx(upper.pvalue)
    # TOST at alpha agrees with the (1 - 2 alpha) interval lying inside the margin
    low, high = result.ci
    assert (result.p < 0.05) == (-margin < low and high < margin)
    assert (low, high) == pytest.approx(welch_ci(a, b, 0.90))


def test_tost_decides_both_ways():
    same = [0.990, 0.991, 0.989, 0.990]
    assert tost(same, [0.9901, 0.9899, 0.9902, 0.9898], margin=0.001).p < 0.05
    assert tost(same, [0.980, 0.981, 0.979, 0.980], margin=0.001).p > 0.5
    assert math.isnan(tost([0.9], same, margin=0.001).p)
    with pytest.raises(ValueError):
        tost(same, same, margin=0)


# -- multiple comparisons -------------------------------------------------------------------

def test_holm_hand_worked_example():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    adjusted = holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)
    assert holm([]) == []


# -- power -------------------------------------------------------------------------------------

def test_t_test_power_matches_cohens_table():
    # Cohen (1988): d = 0.5 needs 64 per group and d = 0.8 needs 26 for 80% power at 5%
    assert runs_needed(lambda n: t_test_power(0.5, 1.0, n)) == 64
    assert runs_needed(lambda n: t_test_power(0.8, 1.0, n)) == 26
    assert t_test_power(0.0, 1.0, 10) == pytest.approx(0.05, abs=1e-9)
    assert runs_needed(lambda n: 0.0) is None


def test_tost_power_against_a_simulation():
    rng = np.random.default_rng(11)
    sd, margin, n = 1.0, 1.0, 15
    a = rng.normal(0, sd, (20000, n))
    b = rng.normal(0, sd, (20000, n))
    diff = a.mean(1) - b.mean(1)
    se = np.sqrt(a.var(1, ddof=1) / n + b.var(1, ddof=1) / n)
    df = 2 * n - 2  # equal n and sd: Welch's df is close to 2n - 2
    crit = scipy_stats.t.ppf(0.95, df)
    simulated = np.mean(((diff + margin) / se > crit) & ((margin - diff) / se > crit))
    assert tost_power(sd, margin, n) == pytest.approx(simulated, abs=0.02)
    assert tost_power(sd, margin, 2) < tost_power(sd, margin, 50)
    assert runs_needed(lambda k: tost_power(sd, margin, k, diff=1.5)) is None


# -- learning curves -----------------------------------------------------------------------------

def test_early_auc_by_hand():
    steps, acc = [0, 100, 200, 300], [0.1, 0.5, 0.9, 1.0]
    # window 0..200: trapezoids 100*(0.1+0.5)/2 + 100*(0.5+0.9)/2 = 100; / 200
    assert early_auc(steps, acc, 200) == pytest.approx(0.5)
    # window 0..250 interpolates 0.95 at 250: 100 + 50*(0.9+0.95)/2 = 146.25; / 250
    assert early_auc(steps, acc, 250) == pytest.approx(146.25 / 250)
    assert math.isnan(early_auc(steps, acc, 400))  # the curve stops before the window ends
    assert early_auc([300, 0, 100, 200], [1.0, 0.1, 0.5, 0.9], 200) == pytest.approx(0.5)


def test_first_step_reaching():
    assert first_step_reaching([0, 100, 200], [0.1, 0.975, 0.99], 0.97) == 100
    assert first_step_reaching([0, 100], [0.1, 0.5], 0.97) is None


def test_p_from_interval_inverts_a_normal_interval():
    # a 95% normal interval of half-width 1.96 * se: the estimate at 1.96 se has p = 0.05
    se = 0.3
    half = scipy_stats.norm.ppf(0.975) * se
    assert p_from_interval(1.96 * se, 1.96 * se - half, 1.96 * se + half) == \
        pytest.approx(0.05, abs=1e-3)
    assert p_from_interval(0.0, -half, half) == pytest.approx(1.0)
    # a 90% interval as wide as a 95% one means a larger standard error: a larger p
    assert p_from_interval(0.5, 0.5 - half, 0.5 + half, level=0.90) > \
        p_from_interval(0.5, 0.5 - half, 0.5 + half)
    assert math.isnan(p_from_interval(0.1, math.nan, 0.2))
    assert math.isnan(p_from_interval(0.1, 0.1, 0.1))  # no width: nothing to read


def test_p_from_interval_with_degrees_of_freedom_is_the_t_test_of_the_runs():
    runs = [0.071, 0.080, 0.069, 0.078, 0.077]  # five runs' means
    s = summarize(runs)
    p = p_from_interval(s.mean, s.mean - s.ci95, s.mean + s.ci95, df=len(runs) - 1)
    assert p == pytest.approx(scipy_stats.ttest_1samp(runs, 0.0).pvalue, rel=1e-9)
    # the normal reading of the same interval is far smaller: what df guards against
    assert p_from_interval(s.mean, s.mean - s.ci95, s.mean + s.ci95) < p / 1e6
    assert math.isnan(p_from_interval(0.1, 0.0, 0.2, df=0))
