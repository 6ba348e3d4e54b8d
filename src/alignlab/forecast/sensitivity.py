"""Which inputs move the forecast: the tornado (one input at a time to its low and high) and
sweeps (one input over a list of values).

Every variant re-runs the whole model with the same seed, so the draws share their random
numbers (common random numbers) and a difference between variants is the input's effect, not
sampling noise. Inputs are changed through the same dotted keys as ``--set`` and the changed
scenario is checked again, so a sweep to an invalid value is refused like any other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from alignlab.forecast.model import simulate
from alignlab.forecast.scenario import Scenario, get_path, parse_assignment, scenario_from_dict, set_path

SUMMARY_QUANTILES = (0.1, 0.5, 0.9)


@dataclass
class Bar:
    """One row of the tornado: the median year with the input at its low and at its high."""

    key: str
    low: float
    high: float
    base_value: Any
    median_low: int | None
    median_high: int | None

    def swing(self, end_year: int) -> float:
        """Years between the two medians (a median past the end counts as end_year + 1)."""
        lo, hi = (end_year + 1 if m is None else m for m in (self.median_low, self.median_high))
        return abs(hi - lo)


def with_value(scenario: Scenario, key: str, value: Any) -> Scenario:
    """A checked copy of ``scenario`` with the input at dotted ``key`` set to ``value``."""
    data = copy.deepcopy(scenario.data)
    set_path(data, key, value)
    return scenario_from_dict(data, f"{scenario.name} with {key}={value!r}")


def summarize(scenario: Scenario, draws: int, seed: int, by_years: list[int]) -> dict[str, Any]:
    """Quantile years and P(by year) of one run (what a sweep reports per value)."""
    forecast = simulate(scenario, draws, seed)
    cdf = forecast.cdf()
    return {"quantiles": {str(q): forecast.quantile(q, cdf) for q in SUMMARY_QUANTILES},
            "p_by_year": {str(y): forecast.p_by(y) for y in by_years}}


def tornado(scenario: Scenario, draws: int = 200_000, seed: int = 0) -> tuple[int | None, list[Bar]]:
    """(base median, bars sorted by swing, largest first) over the scenario's [sensitivity] inputs."""
    base = simulate(scenario, draws, seed).quantile(0.5)
    end_year = scenario.years.stop - 1
    bars = []
    for key, (low, high) in scenario.data.get("sensitivity", {}).items():
        medians = [simulate(with_value(scenario, key, v), draws, seed).quantile(0.5) for v in (low, high)]
        bars.append(Bar(key, low, high, get_path(scenario.data, key), medians[0], medians[1]))
    bars.sort(key=lambda b: -b.swing(end_year))
    return base, bars


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """'spending.doubling_years=1.5,2,2.5' -> ('spending.doubling_years', [1.5, 2, 2.5])."""
    key, values = parse_assignment(text)
    if isinstance(values, list):
        parsed = values
    else:
        parsed = [parse_assignment(f"v={item.strip()}")[1] for item in str(values).split(",") if item.strip()]
    if not parsed:
        raise ValueError(f"--sweep {text!r}: expected KEY=V1,V2,..., e.g. --sweep spending.doubling_years=1.5,2,2.5")
    return key, parsed


def sweep(scenario: Scenario, key: str, values: list[Any], draws: int, seed: int,
          by_years: list[int]) -> list[dict[str, Any]]:
    """The forecast's summary for each value of one input."""
    try:
        get_path(scenario.data, key)
    except KeyError:
        raise ValueError(f"--sweep: '{key}' names no input of scenario {scenario.name}") from None
    return [{"value": v, **summarize(with_value(scenario, key, v), draws, seed, by_years)} for v in values]
