"""Uncertain inputs as small TOML values, and vectorised sampling of them.

The report and its public re-implementations state most inputs as 90% credible intervals
("brain FLOP/s: 90% CI 1e11..1e19.5"); a scenario file writes them the same way:

    2.5                                     a point value
    { normal = [11, 19.5] }                 normal whose 5th..95th percentiles are 11..19.5
    { lognormal = [11, 19.5] }              lognormal with that 90% interval (values > 0)
    { uniform = [0, 3] }                    uniform between the two
    { mean = 8.7, sd = 0.35 }               normal given by its moments
    { mixture = [A, B], weights = [.5, .5] } one of A, B per draw (equal weights if omitted)
    [A, B, 16]                              the sum of independent draws of each term

The 90% convention (z = 1.6449) is squigglepy's, which the Rethink Priorities re-implementation
(whose percentiles the spec quotes) uses for ``sq.norm(a, b)`` and ``sq.lognorm(a, b)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Z90 = 1.6448536269514722
"""The standard normal's 95th percentile: a 90% interval spans mean +- Z90 sd."""

SHAPES = ("normal", "lognormal", "uniform", "mean", "mixture")


def check_distribution(value: Any, key: str, low: float, high: float, unit: str = "") -> None:
    """Raise ValueError naming ``key`` unless ``value`` is a valid distribution whose numbers lie
    in [low, high]."""
    accepted = f"accepted: a number in {low:g}..{high:g}{unit}, or a distribution of them " \
               "({ normal = [lo, hi] }, { lognormal = [lo, hi] }, { uniform = [lo, hi] }, " \
               "{ mean = m, sd = s }, { mixture = [...] }, or a list of terms to add)"
    if isinstance(value, bool):
        raise ValueError(f"{key} = {value!r} is not a number; {accepted}")
    if isinstance(value, (int, float)):
        if not low <= value <= high:
            raise ValueError(f"{key} = {value!r} is out of range; {accepted}")
        return
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{key} is an empty list; {accepted}")
        for i, term in enumerate(value):
            # Terms of a sum are checked for shape only: their ranges add up, each need not fit.
            check_distribution(term, f"{key}[{i}]", -1e9, 1e9)
        return
    if not isinstance(value, dict):
        raise ValueError(f"{key} = {value!r} is not a distribution; {accepted}")
    shapes = [s for s in SHAPES if s in value]
    allowed = set(shapes) | {"mean": {"sd"}, "mixture": {"weights"}}.get(shapes[0] if shapes else "", set())
    extra = sorted(set(value) - allowed)
    if len(shapes) != 1 or extra:
        raise ValueError(f"{key} = {value!r}: give exactly one of normal, lognormal, uniform, mean (with sd) "
                         f"or mixture{'; unexpected key ' + repr(extra[0]) if extra else ''}; {accepted}")
    shape = shapes[0]
    if shape == "mixture":
        _check_mixture(value, key, low, high, unit)
        return
    if shape == "mean":
        if "sd" not in value or not is_number(value["mean"]) or not is_number(value["sd"]):
            raise ValueError(f"{key}: a normal by moments needs numbers mean and sd; {accepted}")
        if value["sd"] < 0 or not low <= value["mean"] <= high:
            raise ValueError(f"{key} = {value!r} is out of range (sd >= 0, mean in {low:g}..{high:g}{unit})")
        return
    pair = value[shape]
    if not (isinstance(pair, list) and len(pair) == 2 and all(map(is_number, pair))):
        raise ValueError(f"{key}: {shape} needs two numbers, [low, high]; {accepted}")
    lo, hi = pair
    if not lo < hi:
        raise ValueError(f"{key} = {value!r}: the low end must be below the high end (a point value is a plain number)")
    if shape == "lognormal" and lo <= 0:
        raise ValueError(f"{key} = {value!r}: a lognormal's interval must be above 0")
    if not (low <= lo and hi <= high):
        raise ValueError(f"{key} = {value!r} is out of range; {accepted}")


def _check_mixture(value: dict, key: str, low: float, high: float, unit: str) -> None:
    parts = value["mixture"]
    if not isinstance(parts, list) or not parts:
        raise ValueError(f"{key}: mixture needs a list of distributions")
    for i, part in enumerate(parts):
        check_distribution(part, f"{key}.mixture[{i}]", low, high, unit)
    weights = value.get("weights")
    if weights is not None:
        if not (isinstance(weights, list) and len(weights) == len(parts) and all(map(is_number, weights))):
            raise ValueError(f"{key}: mixture weights must be {len(parts)} numbers, one per component")
        if min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"{key}: mixture weights {weights} must be >= 0 and sum to 1")


def is_number(x: Any) -> bool:
    """A real number (an int or float, not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def sample(value: Any, rng: np.random.Generator, n: int) -> np.ndarray:
    """n independent draws of the distribution ``value`` (already checked), as float64, shape (n,)."""
    if is_number(value):
        return np.full(n, float(value))
    if isinstance(value, list):
        total = np.zeros(n)
        for term in value:
            total += sample(term, rng, n)
        return total
    if "mixture" in value:
        parts = value["mixture"]
        weights = value.get("weights") or [1.0 / len(parts)] * len(parts)
        which = rng.choice(len(parts), size=n, p=np.asarray(weights, dtype=float) / np.sum(weights))
        out = np.empty(n)
        for i, part in enumerate(parts):
            chosen = which == i
            out[chosen] = sample(part, rng, int(chosen.sum()))
        return out
    if "mean" in value:
        return rng.normal(value["mean"], value["sd"], n)
    if "uniform" in value:
        lo, hi = value["uniform"]
        return rng.uniform(lo, hi, n)
    lo, hi = value["normal"] if "normal" in value else np.log(value["lognormal"])
    mean, sd = (lo + hi) / 2.0, (hi - lo) / (2.0 * Z90)
    draws = rng.normal(mean, sd, n)
    return draws if "normal" in value else np.exp(draws)

