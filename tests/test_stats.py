"""Statistics of per-run measurements, against values computed by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from benchlab.stats import first_epoch_reaching, format_mean_std, summarize, welch


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
