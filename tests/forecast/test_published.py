"""The shipped scenarios against the published figures, with the tolerances stated here.

Cotra 2020, "Forecasting TAI with biological anchors" (draft report; its summaries and the best-
guess spreadsheet): ~10% by 2031, median 2052-2053, ~78% by 2100 (90% is never reached before
2100), and the Evolution anchor alone ~50% by 2100; her curve's intermediate points as the
Rethink Priorities notebook lists them, each within 2 points.

Cotra 2022, "Two-year update on my personal AI timelines" (AI Alignment Forum, August 2022):
~15% by 2030, ~35% by 2036, median ~2040, ~60% by 2050. Those are her overall judgments, not a
re-run model; our cotra-2022 scenario states its own assumptions and misses 2040 by ~5 points
(docs/forecast.md explains why), hence the wider tolerance there.

One million draws, seed 0: Monte Carlo error is ~0.0005, far inside every tolerance.
"""

import pytest

from alignlab.forecast import load_scenario, simulate


@pytest.fixture(scope="module")
def cotra_2020():
    return simulate(load_scenario("cotra-2020"), 1_000_000, seed=0)


@pytest.fixture(scope="module")
def cotra_2022():
    return simulate(load_scenario("cotra-2022"), 1_000_000, seed=0)


def test_cotra_2020_best_guess_headline_figures(cotra_2020):
    assert cotra_2020.p_by(2031) == pytest.approx(0.10, abs=0.02)
    assert cotra_2020.quantile(0.1) in (2030, 2031, 2032)
    assert 2050 <= cotra_2020.quantile(0.5) <= 2055
    assert cotra_2020.p_by(2100) == pytest.approx(0.78, abs=0.03)
    assert cotra_2020.quantile(0.9) is None  # 90% is never reached before 2100


HER_CURVE = {2028: 0.05, 2031: 0.10, 2035: 0.15, 2040: 0.25, 2052: 0.50, 2060: 0.585, 2062: 0.60, 2084: 0.75,
             2100: 0.78}
"""Every point of Cotra's 2020 best-guess curve we have: her report's 10% by 2031, median
2052..2053 and ~78% by 2100; the points the Rethink Priorities notebook lists for her model (5%
by 2028, 15% by 2035, 25% by 2040, 60% by 2062, 75% by 2084); and about 58.5% in 2060 on her
spreadsheet."""


@pytest.mark.parametrize("year", sorted(HER_CURVE))
def test_cotra_2020_is_within_two_points_of_every_published_point(cotra_2020, year):
    assert abs(cotra_2020.p_by(year) - HER_CURVE[year]) <= 0.02, (year, cotra_2020.p_by(year))


def test_cotra_2020_evolution_anchor_alone_is_about_half_by_2100(cotra_2020):
    evolution = [h.name for h in cotra_2020.scenario.hypotheses].index("evolution")
    assert cotra_2020.anchor_cdf(evolution)[-1] == pytest.approx(0.50, abs=0.07)


def test_cotra_2022_update_figures(cotra_2022):
    assert cotra_2022.p_by(2030) == pytest.approx(0.15, abs=0.03)
    assert cotra_2022.p_by(2036) == pytest.approx(0.35, abs=0.03)
    assert cotra_2022.p_by(2040) == pytest.approx(0.50, abs=0.07)
    assert cotra_2022.p_by(2050) == pytest.approx(0.60, abs=0.03)
    assert 2038 <= cotra_2022.quantile(0.5) <= 2044


def test_the_2022_update_is_earlier_than_2020_from_2026_on(cotra_2020, cotra_2022):
    # In 2025 itself 2022 is a hair lower: its update against low requirements is one OOM stronger.
    assert (cotra_2022.cdf()[1:] > cotra_2020.cdf()[1:]).all()
    assert cotra_2022.p_by(2025) == pytest.approx(cotra_2020.p_by(2025), abs=0.005)
