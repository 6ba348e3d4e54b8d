import math

import numpy as np
import pytest

from alignlab.pressure.fits import fit_gao, past_peak_flags


@pytest.mark.parametrize("form,alpha,beta", [("bon", 0.8, 0.25), ("rl", 0.5, 0.3), ("bon", 1.2, 0.05)])
def test_fits_recover_known_coefficients_from_noiseless_curves(form, alpha, beta):
    d = np.linspace(0.1, 6.0, 25)
    gain = d * (alpha - beta * (d if form == "bon" else np.log(d)))
    fit = fit_gao(d, gain, form)
    assert fit.alpha == pytest.approx(alpha, rel=1e-9) and fit.beta == pytest.approx(beta, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.rmse == pytest.approx(0.0, abs=1e-9)


def test_fits_recover_coefficients_under_noise_and_place_the_peak():
    rng = np.random.default_rng(0)
    d = np.repeat(np.linspace(0.2, 4.0, 20), 5)
    bon = fit_gao(d, d * (1.0 - 0.2 * d) + rng.normal(0, 0.05, d.size), "bon")
    assert bon.alpha == pytest.approx(1.0, abs=0.05) and bon.beta == pytest.approx(0.2, abs=0.02)
    assert bon.peak_d == pytest.approx(1.0 / 0.4, rel=0.1)  # alpha / (2 beta)
    rl = fit_gao(d, d * (0.6 - 0.5 * np.log(d)) + rng.normal(0, 0.05, d.size), "rl")
    assert rl.peak_d == pytest.approx(math.exp(0.6 / 0.5 - 1), rel=0.1)  # exp(alpha / beta - 1)
    # the peak is where the fitted curve is highest
    grid = np.linspace(0.01, 8, 4000)
    assert grid[np.argmax(rl(grid))] == pytest.approx(rl.peak_d, rel=0.01)
    assert grid[np.argmax(bon(grid))] == pytest.approx(bon.peak_d, rel=0.01)


def test_a_still_rising_curve_has_no_peak_and_bad_input_is_named():
    d = np.linspace(0.1, 2, 10)
    fit = fit_gao(d, 0.5 * d + 0.1 * d * d, "bon")
    assert fit.beta < 0 and math.isinf(fit.peak_d) and fit.to_dict()["peak_d"] is None
    with pytest.raises(ValueError, match="at least two points"):
        fit_gao([0.0, 1.0], [0.0, 0.3], "rl")
    with pytest.raises(ValueError, match="unknown Goodhart form"):
        fit_gao(d, d, "ppo")


def test_flags_mark_points_past_the_peak_where_proxy_rises_and_gold_falls():
    d = [0.0, 1.0, 2.0, 3.0, 4.0]
    proxy = [0.0, 0.5, 0.9, 1.3, 1.6]
    gold = [0.0, 0.6, 0.8, 0.6, 0.2]
    fit = fit_gao(d, gold, "bon")
    assert 1.0 < fit.peak_d < 3.0
    assert past_peak_flags(d, proxy, gold, fit) == [False, False, False, True, True]
    # without a fit, the best observed gold stands for the peak; order of the input does not matter
    assert past_peak_flags(d[::-1], proxy[::-1], gold[::-1], None) == [True, True, False, False, False]
    # proxy that also falls is not the overoptimisation signature
    assert not any(past_peak_flags(d, [0, 0.5, 0.9, 0.4, 0.1], gold, fit))
