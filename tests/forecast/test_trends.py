"""The logistic trends against hand computations: start values, doubling times, caps."""

import math

import numpy as np
import pytest

from alignlab.forecast.trends import (algorithmic_progress_oom, gdp_log10, hardware_log10, logistic_log10,
                                      spending_log10)


def test_logistic_matches_the_formula_written_out():
    # X(t) = X0 e^(kt) / (1 + X0/Xmax e^(kt)), k = ln2/d; X0 = 1e17, Xmax = 1e24, d = 2.5, t = 10
    ekt = math.exp(math.log(2) / 2.5 * 10)  # = 2^4 = 16
    by_hand = math.log10(1e17 * ekt / (1 + 1e17 / 1e24 * ekt))
    assert logistic_log10(17.0, 24.0, 2.5, 10.0) == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(math.log10(16e17), abs=1e-5)  # far from the cap: plain doubling


def test_far_below_the_cap_it_doubles_every_doubling_time():
    t = np.array([0.0, 2.5, 5.0, 7.5])
    x = logistic_log10(17.0, 40.0, 2.5, t)
    assert np.diff(x) == pytest.approx([math.log10(2)] * 3, abs=1e-9)


def test_it_levels_off_at_the_cap_and_never_passes_it():
    t = np.array([0.0, 50.0, 100.0, 500.0, 5000.0])
    x = logistic_log10(17.0, 24.0, 2.5, t)
    assert np.all(x < 24.0 + 1e-12) and np.all(np.diff(x) >= 0)
    assert x[-2] == pytest.approx(24.0, abs=1e-12) and np.isfinite(x).all()  # e^(kt) would overflow here
    # halfway up in log terms: when X0 e^(kt) = Xmax, X = Xmax / 2
    t_half = 2.5 * math.log2(1e7)
    assert logistic_log10(17.0, 24.0, 2.5, t_half) == pytest.approx(24.0 - math.log10(2), abs=1e-9)


def test_hardware_is_about_4e17_flop_per_dollar_in_2025():
    # spec: ~1e17 FLOP/$ in 2020, about 4e17 in 2025 with a 2.5-year doubling
    x = hardware_log10(np.array([2020, 2025]), 1e17, 2020, 2.5, 1e24)
    assert 10 ** x[0] == pytest.approx(1e17, rel=1e-6)
    assert 10 ** x[1] == pytest.approx(4e17, rel=1e-5)


def test_gdp_compounds_three_percent_a_year():
    x = gdp_log10(np.array([2020, 2025, 2100]), 2.13e13, 2020, 0.03)
    assert 10 ** x[1] == pytest.approx(2.13e13 * 1.03 ** 5, rel=1e-12)  # ~2.47e13
    assert 10 ** x[2] == pytest.approx(2.13e13 * 1.03 ** 80, rel=1e-12)


def test_spending_starts_at_a_billion_and_is_capped_by_a_growing_gdp():
    years = np.array([2025, 2027, 2100, 2200])
    gdp = gdp_log10(years, 2.13e13, 2020, 0.03)
    x = spending_log10(years, 1e9, 2025, 2.0, 0.01, gdp)
    cap = np.log10(0.01) + gdp
    assert 10 ** x[0] == pytest.approx(1e9 / (1 + 1e9 / 10 ** cap[0]), rel=1e-12)
    assert 10 ** (x[1] - x[0]) == pytest.approx(2.0, rel=0.01)  # doubles in 2 years while far from the cap
    assert np.all(x <= cap) and x[2] == pytest.approx(cap[2], abs=1e-3)
    assert x[3] > x[2] + 1  # the cap keeps rising with GDP


def test_algorithmic_progress_starts_at_zero_halves_and_caps():
    years = np.array([2015, 2025, 2028, 2031, 2200])
    a = algorithmic_progress_oom(years, 2025, 3.0, 2.0)
    assert a[0] == 0.0 and a[1] == 0.0  # nothing before or at the reference year
    assert a[2] == pytest.approx(math.log10(2 / (1 + 2 / 100)), abs=1e-9)  # one halving, cap 100x
    assert a[3] == pytest.approx(math.log10(4 / (1 + 4 / 100)), abs=1e-9)
    assert a[4] == pytest.approx(2.0, abs=1e-9)


def test_arrays_of_parameters_broadcast_against_years():
    years = np.arange(2025, 2031)
    x = logistic_log10(np.array([[17.0], [18.0]]), 24.0, np.array([[2.5], [1.0]]), years - 2025)
    assert x.shape == (2, 6)
    assert x[1] == pytest.approx(logistic_log10(18.0, 24.0, 1.0, years - 2025))
