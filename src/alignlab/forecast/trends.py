"""The affordability trends of the Biological Anchors model, in log10 throughout.

Cotra (2020), "Forecasting TAI with biological anchors", Part 4 and its best-guess spreadsheet,
models each of the three things that make a training run affordable as logistic growth toward a
cap, starting from a value in a reference year:

    X(t) = X0 * e^(k t) / (1 + (X0 / Xmax) * e^(k t)),   k = ln 2 / doubling_time

- hardware price-performance (FLOP per dollar), capped at a maximum FLOP per dollar;
- spending on the largest single training run, capped at a fraction of the GDP of the largest
  country (so the cap itself grows with GDP);
- algorithmic progress: the factor by which the 2020-algorithms requirement has shrunk, starting
  at 1 and capped at 10^max_oom, with a halving time and cap that differ per hypothesis.

Early on X doubles every ``doubling_time``; near the cap it levels off. Everything here returns
log10 X so that FLOP counts of 1e40 and more never overflow or lose precision; e^(k t) is kept
inside ``np.logaddexp`` for the same reason (at t = 300 years it is e^83).
"""

from __future__ import annotations

import numpy as np

LN10 = float(np.log(10.0))
LN2 = float(np.log(2.0))


def logistic_log10(log10_start: np.ndarray | float, log10_cap: np.ndarray | float,
                   doubling_years: np.ndarray | float, years_elapsed: np.ndarray | float) -> np.ndarray:
    """log10 X(t) of the logistic trend X0 e^(kt) / (1 + (X0/Xmax) e^(kt)), k = ln 2 / doubling.

    Arguments broadcast: pass a (Y,) array of elapsed years and scalars for one trend, or (N, 1)
    parameters against (Y,) years for N sampled trends. ``years_elapsed`` may be negative (years
    before the reference year): the curve then runs backwards toward zero.
    """
    kt = LN2 / np.asarray(doubling_years, dtype=float) * np.asarray(years_elapsed, dtype=float)
    log_ratio = (np.asarray(log10_start, dtype=float) - np.asarray(log10_cap, dtype=float)) * LN10
    # log10(X0) + kt/ln10 - log10(1 + e^(log_ratio + kt)), the last term as a stable logaddexp
    return np.asarray(log10_start, dtype=float) + (kt - np.logaddexp(0.0, log_ratio + kt)) / LN10


def hardware_log10(years: np.ndarray, flop_per_dollar: float, reference_year: float,
                   doubling_years: float, max_flop_per_dollar: float) -> np.ndarray:
    """log10 FLOP per dollar in each of ``years``: ``flop_per_dollar`` in ``reference_year``,
    doubling every ``doubling_years``, levelling off at ``max_flop_per_dollar``."""
    return logistic_log10(np.log10(flop_per_dollar), np.log10(max_flop_per_dollar),
                          doubling_years, np.asarray(years, dtype=float) - reference_year)


def gdp_log10(years: np.ndarray, dollars: float, reference_year: float, growth: float) -> np.ndarray:
    """log10 GDP of the largest economy: ``dollars`` in ``reference_year``, growing by ``growth``
    (0.03 = 3%) a year, compounded yearly as in the report's spreadsheet."""
    return np.log10(dollars) + (np.asarray(years, dtype=float) - reference_year) * np.log10(1.0 + growth)


def spending_log10(years: np.ndarray, dollars: float, reference_year: float, doubling_years: float,
                   max_gdp_fraction: float, log10_gdp: np.ndarray) -> np.ndarray:
    """log10 dollars spent on the largest training run in each year: ``dollars`` in
    ``reference_year``, doubling every ``doubling_years``, levelling off at ``max_gdp_fraction``
    of GDP (``log10_gdp``, one value per year, so the cap moves with the economy)."""
    return logistic_log10(np.log10(dollars), np.log10(max_gdp_fraction) + np.asarray(log10_gdp),
                          doubling_years, np.asarray(years, dtype=float) - reference_year)


def algorithmic_progress_oom(years: np.ndarray, reference_year: float, halving_years: np.ndarray | float,
                             max_oom: np.ndarray | float) -> np.ndarray:
    """Orders of magnitude by which algorithms have cut a requirement since ``reference_year``.

    The requirement halves every ``halving_years`` and the cut levels off at ``max_oom``: the
    logistic trend with X0 = 1 and Xmax = 10^max_oom. It is floored at 0 (the logistic starts a
    hair below 1, at 1 / (1 + 10^-max_oom), and progress never makes a requirement larger), and
    it is 0 before the reference year.
    """
    elapsed = np.maximum(np.asarray(years, dtype=float) - reference_year, 0.0)
    return np.maximum(logistic_log10(0.0, max_oom, halving_years, elapsed), 0.0)
