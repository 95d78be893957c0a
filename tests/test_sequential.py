"""The group-sequential design: boundaries against published values, and the error
rates of its decisions under repeated looks, by simulation (docs/statistics.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from benchlab.sequential import Design, boundaries, nominal_levels, spent, welch_arrays

STUDIES = 10_000
ALPHA = 0.05


def _limit(alpha: float, studies: int = STUDIES) -> float:
    """alpha plus three Monte-Carlo standard errors."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / studies)


# --------------------------------------------------------------------------- boundaries


def test_obrien_fleming_boundaries_match_published_values():
    # Lan-DeMets O'Brien-Fleming type, 5 equally spaced looks, two-sided 0.05
    # (gsDesign sfLDOF / ldbounds: 4.8769 3.3569 2.6803 2.2898 2.0310)
    got = boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05)
    assert got == pytest.approx([4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=2e-4)
    one_sided = boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.025, sides=1)
    assert one_sided == pytest.approx(got, abs=2e-4)


def test_pocock_boundaries_match_published_values():
    got = boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, "pocock")
    assert got == pytest.approx([2.438, 2.427, 2.410, 2.397, 2.386], abs=1e-3)


def test_spending_runs_from_nothing_to_alpha():
    for kind in ("obrien-fleming", "pocock"):
        for sides in (1, 2):
            assert spent(0.0, ALPHA, kind, sides) == 0.0
            assert spent(1.0, ALPHA, kind, sides) == pytest.approx(ALPHA)
            values = spent(np.linspace(0.05, 1, 20), ALPHA, kind, sides)
            assert np.all(np.diff(values) > 0)
    assert spent(0.25, ALPHA) < spent(0.25, ALPHA, "pocock")  # O'Brien-Fleming: late


def test_the_crossing_probabilities_are_the_spent_alpha():
    """The joint normal law of the looks (corr sqrt(t_i / t_j)), by scipy's
    multivariate normal: P(no crossing) = 1 - alpha(t_K), look after look."""
    fractions = np.array([0.3, 0.55, 0.8, 1.0])
    for kind, sides in [("obrien-fleming", 2), ("pocock", 2), ("obrien-fleming", 1)]:
        c = boundaries(fractions, ALPHA, kind, sides)
        for k in range(1, len(fractions) + 1):
            t = fractions[:k]
            cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
            law = stats.multivariate_normal(np.zeros(k), cov)
            lower = -c[:k] if sides == 2 else np.full(k, -np.inf)
            stay = law.cdf(c[:k], lower_limit=lower)
            assert 1 - stay == pytest.approx(spent(t[-1], ALPHA, kind, sides), abs=5e-4)


def test_boundaries_of_earlier_looks_do_not_change_when_looks_are_added():
    short = boundaries([0.25, 0.5], ALPHA)
    long = boundaries([0.25, 0.5, 0.75, 1.0], ALPHA)
    assert long[:2] == pytest.approx(short, abs=1e-12)


def test_bad_designs_are_refused():
    with pytest.raises(ValueError, match="increase"):
        boundaries([0.5, 0.5], ALPHA)
    with pytest.raises(ValueError, match="spending"):
        Design(4, 12, 4, spending="haybittle")
    with pytest.raises(ValueError, match="min"):
        Design(1, 12, 4)
    assert Design(8, 50, 4).schedule() == (8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 50)
    assert Design(4, 4, 1).schedule() == (4,)


# --------------------------------------------------------------------------- simulation


def _looks(design: Design, delta: float, rng: np.random.Generator, sd_b: float = 1.0):
    """Welch t statistics (shifted later), df, at each look of STUDIES simulated studies:
    model a ~ N(delta, 1), model b ~ N(0, sd_b)."""
    n_max = design.max_runs
    a = rng.normal(delta, 1.0, (STUDIES, n_max))
    b = rng.normal(0.0, sd_b, (STUDIES, n_max))
    out = []
    for n in design.schedule():
        out.append((a[:, :n].mean(1), a[:, :n].var(1, ddof=1), b[:, :n].mean(1),
                    b[:, :n].var(1, ddof=1), n))
    return out


def _final_accuracy(design: Design, looks, margin: float, spend: bool = True) -> np.ndarray:
    """The decision of each simulated study about final accuracy: the first look's."""
    decided = np.full(STUDIES, "undecided", dtype="<U12")
    naive = Design(design.max_runs, design.max_runs, 1, design.alpha)  # one look: alpha
    for k, (ma, va, mb, vb, n) in enumerate(looks):
        t, df = welch_arrays(ma, va, n, mb, vb, n)
        t_lo, _ = welch_arrays(ma, va, n, mb, vb, n, shift=-margin)
        t_up, _ = welch_arrays(ma, va, n, mb, vb, n, shift=margin)
        p2, p_lo, p_up = 2 * stats.t.sf(np.abs(t), df), stats.t.sf(t_lo, df), stats.t.cdf(t_up, df)
        now = design.final_accuracy(p2, p_lo, p_up, k) if spend \
            else naive.final_accuracy(p2, p_lo, p_up, 0)
        fresh = np.isin(decided, ("undecided", "inconclusive"))
        decided[fresh] = now[fresh]
    return decided


@pytest.mark.parametrize("design", [Design(4, 12, 4), Design(8, 50, 4),
                                    Design(4, 24, 2, spending="pocock")],
                         ids=["4-12-4", "8-50-4", "pocock-4-24-2"])
def test_false_different_under_no_difference(design):
    rng = np.random.default_rng(17)
    looks = _looks(design, 0.0, rng, sd_b=1.5)
    rate = np.mean(_final_accuracy(design, looks, margin=0.5) == "different")
    assert rate <= _limit(ALPHA), rate
    naive = np.mean(_final_accuracy(design, looks, margin=0.5, spend=False) == "different")
    assert naive > _limit(ALPHA), naive  # testing every look at alpha: too many


@pytest.mark.parametrize("design", [Design(4, 12, 4), Design(8, 50, 4),
                                    Design(4, 24, 2, spending="pocock")],
                         ids=["4-12-4", "8-50-4", "pocock-4-24-2"])
def test_false_equivalent_at_the_margin(design):
    """A true difference exactly at the margin: "equivalent" is a false verdict. The
    margin is wide against the spread, so the lower one-sided test almost always
    rejects and the rate is that of the upper one alone: the bound is tight."""
    rng = np.random.default_rng(18)
    margin = 1.5
    looks = _looks(design, margin, rng)
    rate = np.mean(_final_accuracy(design, looks, margin) == "equivalent")
    assert rate <= _limit(ALPHA), rate
    naive = np.mean(_final_accuracy(design, looks, margin, spend=False) == "equivalent")
    assert naive > _limit(ALPHA), naive


def _convergence(design: Design, rng: np.random.Generator, spend: bool = True) -> float:
    """The rate of a decided convergence part (three statistics, no difference in any;
    two of them correlated as steps-to-threshold statistics are)."""
    n_max, m = design.max_runs, 3
    base = rng.normal(size=(2, STUDIES, n_max))
    data = np.stack([base, 0.7 * base + math.sqrt(1 - 0.49) * rng.normal(size=base.shape),
                     rng.normal(size=base.shape)])  # (statistic, model, study, run)
    rejected = np.zeros((m, STUDIES), dtype=bool)
    naive = Design(n_max, n_max, 1, design.alpha)
    for k, n in enumerate(design.schedule()):
        x = data[..., :n]
        t, df = welch_arrays(x[:, 0].mean(-1), x[:, 0].var(-1, ddof=1), n,
                             x[:, 1].mean(-1), x[:, 1].var(-1, ddof=1), n)
        p = 2 * stats.t.sf(np.abs(t), df)
        rejected = design.holm(p, rejected, k) if spend else naive.holm(p, rejected, 0)
    return float(rejected.any(axis=0).mean())


def test_false_faster_under_no_difference():
    rng = np.random.default_rng(19)
    design = Design(4, 12, 4)
    assert _convergence(design, rng) <= _limit(ALPHA)
    assert _convergence(design, np.random.default_rng(19), spend=False) > _limit(ALPHA)


def test_holm_steps_down():
    design = Design(10, 10, 1)  # one look: the fixed-sample Holm
    got = design.holm(np.array([0.01, 0.04, 0.02]), np.zeros(3, bool), 0)
    assert got.tolist() == [True, True, True]  # 0.01 < .05/3, 0.02 < .05/2, 0.04 < .05
    got = design.holm(np.array([0.01, 0.04, 0.03]), np.zeros(3, bool), 0)
    assert got.tolist() == [True, False, False]  # 0.03 > .05/2: Holm stops
    got = design.holm(np.array([0.02, 0.04, 0.03]), np.zeros(3, bool), 0)
    assert got.tolist() == [False, False, False]
    got = design.holm(np.array([0.01, np.nan, 0.03]), np.zeros(3, bool), 0)
    assert got.tolist() == [True, False, True]  # two testable: .05/2, then .05
    got = design.holm(np.array([0.5, 0.5]), np.array([True, False]), 0)
    assert got.tolist() == [True, False]  # rejected at an earlier look: stays


def test_nominal_levels_are_below_alpha_and_grow():
    levels = nominal_levels([0.25, 0.5, 0.75, 1.0], ALPHA)
    assert np.all(np.diff(levels) > 0) and levels[-1] < ALPHA


def _rates():  # pragma: no cover - the numbers docs/statistics.md quotes
    for design in (Design(4, 12, 4), Design(8, 50, 4), Design(4, 24, 2, spending="pocock")):
        looks = _looks(design, 0.0, np.random.default_rng(17), sd_b=1.5)
        at_margin = _looks(design, 1.5, np.random.default_rng(18))
        print(design.schedule(), design.spending,
              "different", np.mean(_final_accuracy(design, looks, 0.5) == "different"),
              np.mean(_final_accuracy(design, looks, 0.5, spend=False) == "different"),
              "equivalent", np.mean(_final_accuracy(design, at_margin, 1.5) == "equivalent"),
              np.mean(_final_accuracy(design, at_margin, 1.5, spend=False) == "equivalent"),
              "faster", _convergence(design, np.random.default_rng(19)),
              _convergence(design, np.random.default_rng(19), spend=False))


if __name__ == "__main__":  # pragma: no cover
    _rates()


# --------------------------------------------------------------------------- robustness parts


def _cells(rng: np.random.Generator, n_max: int, shifts: list[float], rho: float = 0.8):
    """Per-run accuracies of two models in len(shifts) correlated (attack, ε) cells:
    (cell, model, study, run); model a is shifted by ``shifts[cell]``."""
    common = rng.normal(size=(2, STUDIES, n_max))
    cells = [rho * common + math.sqrt(1 - rho**2) * rng.normal(size=common.shape)
             for _ in shifts]
    data = np.stack(cells)
    data[:, 0] += np.asarray(shifts)[:, None, None]
    return data


def _robustness(design: Design, data: np.ndarray, margin: float) -> tuple[float, float]:
    """Rates of a decided "different" (Holm's step-down under the spending over the
    cells) and of "equivalent" (every cell's TOST at the one-sided boundary) at the
    first look that decides, as :func:`benchlab.looks._robustness` decides them."""
    m = data.shape[0]
    rejected = np.zeros((m, STUDIES), dtype=bool)
    decided = np.zeros(STUDIES, dtype=bool)
    different = np.zeros(STUDIES, dtype=bool)
    equivalent = np.zeros(STUDIES, dtype=bool)
    for k, n in enumerate(design.schedule()):
        x = data[..., :n]
        stats_ = (x[:, 0].mean(-1), x[:, 0].var(-1, ddof=1), n,
                  x[:, 1].mean(-1), x[:, 1].var(-1, ddof=1), n)
        t, df = welch_arrays(*stats_)
        rejected = design.holm(2 * stats.t.sf(np.abs(t), df), rejected, k)
        t_lo, _ = welch_arrays(*stats_, shift=-margin)
        t_up, _ = welch_arrays(*stats_, shift=margin)
        equal_now = design.equivalence(stats.t.sf(t_lo, df), stats.t.cdf(t_up, df), k).all(0)
        differ_now = rejected.any(0)
        different |= ~decided & differ_now
        equivalent |= ~decided & ~differ_now & equal_now
        decided |= differ_now | equal_now
    return float(different.mean()), float(equivalent.mean())


def test_robustness_parts_keep_their_error_rates_over_the_looks():
    design = Design(4, 12, 4)
    # no difference in any of six correlated cells: a false "different"
    false_different, _ = _robustness(design, _cells(np.random.default_rng(21), 12, [0.0] * 6),
                                     margin=0.5)
    assert false_different <= _limit(ALPHA), false_different
    # one cell exactly at the margin, the others equal: "equivalent" is false; a wide
    # margin makes the other cells' tests all but certain, so the bound is tight
    _, false_equivalent = _robustness(design, _cells(np.random.default_rng(22), 12,
                                                     [1.5, 0.0, 0.0]), margin=1.5)
    assert false_equivalent <= _limit(ALPHA), false_equivalent
    assert false_equivalent > 0.01  # the check has power to fail: the rate is near alpha
