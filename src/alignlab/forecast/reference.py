"""The same model as model.py, written the straightforward way: one draw at a time, one year at a time.

This is the slow reference path. Tests check that the vectorised Monte Carlo agrees with it
(same distribution of arrival years, within sampling error), and benchmarks/bench_forecast.py
times both. It uses only the standard library (``random``, ``math``), the way a spreadsheet
port or a first notebook would.
"""

from __future__ import annotations

import math
import random
from typing import Any

from alignlab.forecast.distributions import Z90
from alignlab.forecast.scenario import Hypothesis, Scenario


def sample_one(value: Any, rnd: random.Random) -> float:
    """One draw of a distribution value (see distributions.py for the forms)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return sum(sample_one(term, rnd) for term in value)
    if "mixture" in value:
        parts = value["mixture"]
        weights = value.get("weights") or [1.0] * len(parts)
        return sample_one(rnd.choices(parts, weights=weights)[0], rnd)
    if "mean" in value:
        return rnd.gauss(value["mean"], value["sd"])
    if "uniform" in value:
        return rnd.uniform(*value["uniform"])
    if "normal" in value:
        lo, hi = value["normal"]
        return rnd.gauss((lo + hi) / 2, (hi - lo) / (2 * Z90))
    lo, hi = math.log(value["lognormal"][0]), math.log(value["lognormal"][1])
    return math.exp(rnd.gauss((lo + hi) / 2, (hi - lo) / (2 * Z90)))


def requirement_one(hypothesis: Hypothesis, update: dict[str, Any], rnd: random.Random) -> float:
    """One draw of log10 training FLOP (2020 algorithms) for a hypothesis, after the low update."""
    x = hypothesis.inputs
    brain, inefficiency = sample_one(x["brain_flops"], rnd), sample_one(x["inefficiency"], rnd)
    flop = brain + inefficiency + sample_one(x["transformative_vs_human"], rnd) + sample_one(x["horizon"], rnd)
    if hypothesis.data_scaling:
        alpha = sample_one(x["scaling_exponent"], rnd)
        if "parameters" in x:
            params = sample_one(x["parameters"], rnd)
        else:
            params = brain + inefficiency - sample_one(x["flop_per_param"], rnd)
        flop += x["reference_samples"] + alpha * (params - x["reference_params"])
    if update["enabled"]:
        for threshold, chance in zip(update["thresholds"], update["shift_probability"]):
            if flop < threshold and rnd.random() < chance:
                flop += max(sample_one(update["shift"], rnd), 0.0)
        flop = max(flop, update["floor"])
    return flop


def logistic_log10(x0: float, cap: float, doubling: float, t: float) -> float:
    """log10 of X0 e^(kt) / (1 + X0/Xmax e^(kt)), written out as in the report's spreadsheet."""
    kt = math.log(2) / doubling * t
    if kt > 700:  # e^kt overflows a float; the trend is at its cap long before
        return math.log10(cap)
    return math.log10(x0 * math.exp(kt) / (1 + x0 / cap * math.exp(kt)))


def affordable_one(scenario: Scenario, hypothesis: Hypothesis, year: int) -> float:
    """log10 effective FLOP (2020 algorithms) affordable in ``year`` under ``hypothesis``."""
    hw, sp, gdp = scenario.section("hardware"), scenario.section("spending"), scenario.section("gdp")
    flop_per_dollar = logistic_log10(hw["flop_per_dollar"], hw["max_flop_per_dollar"], hw["doubling_years"],
                                     year - hw["reference_year"])
    economy = gdp["dollars"] * (1 + gdp["growth"]) ** (year - gdp["reference_year"])
    spend = logistic_log10(sp["dollars"], sp["max_gdp_fraction"] * economy, sp["doubling_years"],
                           year - sp["reference_year"])
    elapsed = max(year - scenario.section("algorithms")["reference_year"], 0)
    progress = max(logistic_log10(1.0, 10 ** hypothesis.max_oom, hypothesis.halving_years, elapsed), 0.0)
    return flop_per_dollar + spend + progress


def simulate_loop(scenario: Scenario, draws: int, seed: int = 0) -> list[int | None]:
    """Arrival year of each draw (None: not by the last projected year), one draw at a time."""
    rnd = random.Random(seed)
    weights = [h.weight for h in scenario.hypotheses] + [scenario.never]
    choices = list(scenario.hypotheses) + [None]
    update = scenario.section("low_requirement_update")
    arrivals: list[int | None] = []
    for _ in range(draws):
        hypothesis = rnd.choices(choices, weights=weights)[0]
        if hypothesis is None:
            arrivals.append(None)
            continue
        requirement = requirement_one(hypothesis, update, rnd)
        arrival = None
        for year in scenario.years:
            if requirement <= affordable_one(scenario, hypothesis, year):
                arrival = year
                break
        arrivals.append(arrival)
    return arrivals


def loop_cdf(scenario: Scenario, draws: int, seed: int = 0) -> list[float]:
    """P(TAI by each projected year) from ``simulate_loop``."""
    arrivals = simulate_loop(scenario, draws, seed)
    years = list(scenario.years)
    counts = [0] * len(years)
    for year in arrivals:
        if year is not None:
            counts[year - years[0]] += 1
    out, total = [], 0
    for c in counts:
        total += c
        out.append(total / draws)
    return out
