"""Inputs written as 90% intervals sample with the right percentiles; bad ones are refused."""

import numpy as np
import pytest

from alignlab.forecast.distributions import check_distribution, sample


def percentiles(value, n=400_000):
    return np.percentile(sample(value, np.random.default_rng(1), n), [5, 50, 95])


def test_a_normal_90_percent_interval_has_those_5th_and_95th_percentiles():
    assert percentiles({"normal": [11, 19.5]}) == pytest.approx([11, 15.25, 19.5], abs=0.03)


def test_a_lognormal_interval_is_on_the_value_itself():
    p = percentiles({"lognormal": [11, 19.5]})
    assert p == pytest.approx([11, np.sqrt(11 * 19.5), 19.5], abs=0.03)


def test_points_sums_moments_uniform_and_mixtures():
    rng = np.random.default_rng(0)
    assert np.all(sample(2.5, rng, 5) == 2.5)
    total = sample([{"normal": [20, 22]}, 16], rng, 200_000)
    assert np.median(total) == pytest.approx(37.0, abs=0.01)
    moments = sample({"mean": 8.7, "sd": 0.35}, rng, 200_000)
    assert moments.mean() == pytest.approx(8.7, abs=0.01) and moments.std() == pytest.approx(0.35, abs=0.01)
    uniform = sample({"uniform": [0, 3]}, rng, 200_000)
    assert uniform.min() >= 0 and uniform.max() <= 3
    mix = sample({"mixture": [0.0, 10.0], "weights": [0.25, 0.75]}, rng, 200_000)
    assert (mix == 10.0).mean() == pytest.approx(0.75, abs=0.01)


@pytest.mark.parametrize("value, message", [
    ({"normal": [3, 1]}, "low end must be below"),
    ({"lognormal": [0, 1]}, "above 0"),
    ({"normal": [1, 2], "sd": 1}, "exactly one"),
    ({"gamma": [1, 2]}, "exactly one"),
    ({"mixture": [1, 2], "weights": [0.5, 0.6]}, "sum to 1"),
    ({"normal": [1, 100]}, "out of range"),
    (True, "not a number"),
    ("high", "not a distribution"),
])
def test_bad_distributions_name_the_key(value, message):
    with pytest.raises(ValueError, match=message) as err:
        check_distribution(value, "anchor_defaults.brain_flops", 0, 40)
    assert "anchor_defaults.brain_flops" in str(err.value)
