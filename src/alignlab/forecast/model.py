"""The Biological Anchors model (Cotra 2020), as a vectorised Monte Carlo over draws.

Sources: Ajeya Cotra, "Forecasting TAI with biological anchors" (draft report, 2020), its
best-guess spreadsheet and its Colab notebook; the requirement construction follows the public
re-implementation by Rethink Priorities (Peter Wildeford's squigglepy notebooks), whose anchor
percentiles the spec quotes. In words, for each draw:

1. pick a hypothesis h with probability w_h, or "never" with the rest (1 - sum w_h);
2. draw its requirement r, log10 training FLOP with 2020 algorithms, built from the anchor's
   own inputs: r = b + e + t + h (+ S_ref + alpha (p - P_ref) for the data-scaling anchors);
3. push requirements below ~1e27 up (runs of GPT-3 scale did not produce TAI);
4. TAI arrives in the first year Y with r - A_h(Y) <= log10 FLOP_per_dollar(Y) + log10 spend(Y),
   A_h being the OOM of algorithmic progress for h by Y.

Affordability is a point value per year, as in the spreadsheet, so step 4 is one binary search
per draw against a (years,) threshold curve per hypothesis. ``sample_affordability=True`` draws
the affordability inputs too (a labelled extension: the report does not) and walks the years.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alignlab.forecast.distributions import sample
from alignlab.forecast.scenario import AFFORDABILITY, SCHEMA, Hypothesis, Scenario
from alignlab.forecast.trends import algorithmic_progress_oom, gdp_log10, hardware_log10, spending_log10

NEVER = -1
"""Hypothesis index of draws in which no anchor is right."""


def sample_requirements(hypothesis: Hypothesis, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) log10 training FLOP (2020 algorithms) for one hypothesis, before the low update.

    log10 C = b + e + t + h                              (lifetime, evolution: data_scaling false)
    log10 C = b + e + t + h + S_ref + alpha (p - P_ref)  (neural network, genome: data_scaling true)
    with p = b + e - f unless the hypothesis gives its parameter count p itself (genome).
    """
    x = hypothesis.inputs
    brain = sample(x["brain_flops"], rng, n)
    inefficiency = sample(x["inefficiency"], rng, n)
    log_flop = brain + inefficiency + sample(x["transformative_vs_human"], rng, n) + sample(x["horizon"], rng, n)
    if hypothesis.data_scaling:
        alpha = sample(x["scaling_exponent"], rng, n)
        if "parameters" in x:
            params = sample(x["parameters"], rng, n)
        else:
            params = brain + inefficiency - sample(x["flop_per_param"], rng, n)
        log_flop += x["reference_samples"] + alpha * (params - x["reference_params"])
    return log_flop


def update_against_low(log_flop: np.ndarray, update: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Push up requirements that runs already done (GPT-3, ~3e23 FLOP) make implausible.

    The report updates against requirements below ~1e24..1e27; this is the form the Rethink
    Priorities re-implementation uses: for each threshold in turn (27, 26, 25, 24), a draw still
    below it moves up by ``shift`` OOM (never down) with ``shift_probability``; then nothing
    stays below ``floor``. Returns a new array.
    """
    out = log_flop.copy()
    if not update["enabled"]:
        return out
    for threshold, chance in zip(update["thresholds"], update["shift_probability"]):
        moved = (out < threshold) & (rng.random(out.shape[0]) < chance)
        out[moved] += np.maximum(sample(update["shift"], rng, int(moved.sum())), 0.0)
    return np.maximum(out, update["floor"])


def point_affordability(scenario: Scenario, years: np.ndarray) -> dict[str, np.ndarray]:
    """log10 FLOP per dollar, log10 GDP, log10 spending and log10 affordable FLOP, each (Y,)."""
    return affordability(years, scenario.section("hardware"), scenario.section("spending"), scenario.section("gdp"))


def affordability(years: np.ndarray, hardware: dict, spending: dict, gdp: dict) -> dict[str, np.ndarray]:
    """The three trends for ``years``; inputs may be scalars or (N, 1) arrays (sampled)."""
    hw = hardware_log10(years, hardware["flop_per_dollar"], hardware["reference_year"],
                        hardware["doubling_years"], hardware["max_flop_per_dollar"])
    log_gdp = gdp_log10(years, gdp["dollars"], gdp["reference_year"], gdp["growth"])
    spend = spending_log10(years, spending["dollars"], spending["reference_year"], spending["doubling_years"],
                           spending["max_gdp_fraction"], log_gdp)
    return {"flop_per_dollar": hw, "gdp": log_gdp, "spending": spend, "flop": hw + spend}


def algorithm_curves(scenario: Scenario, years: np.ndarray) -> np.ndarray:
    """(H, Y) OOM of algorithmic progress for each hypothesis in each year."""
    ref = scenario.section("algorithms")["reference_year"]
    return np.stack([algorithmic_progress_oom(years, ref, h.halving_years, h.max_oom) for h in scenario.hypotheses])


@dataclass
class Forecast:
    """The draws of one run of the model and what is read off them."""

    scenario: Scenario
    years: np.ndarray
    """(Y,) projected years."""
    hypothesis: np.ndarray
    """(N,) index into scenario.hypotheses, or NEVER."""
    requirement: np.ndarray
    """(N,) log10 training FLOP with 2020 algorithms, after the low update; inf for NEVER."""
    arrival: np.ndarray
    """(N,) index into years of the first affordable year; len(years) when not by the end."""
    trends: dict[str, np.ndarray]
    """(Y,) log10 trends with the point inputs: flop_per_dollar, gdp, spending, flop."""
    algorithms: np.ndarray
    """(H, Y) OOM of algorithmic progress per hypothesis."""
    seed: int
    sampled_affordability: bool = False

    @property
    def draws(self) -> int:
        return int(self.hypothesis.shape[0])

    def cdf(self) -> np.ndarray:
        """(Y,) P(TAI affordable by the end of each year)."""
        counts = np.bincount(self.arrival, minlength=len(self.years) + 1)[: len(self.years)]
        return np.cumsum(counts) / self.draws

    def anchor_cdf(self, index: int) -> np.ndarray:
        """(Y,) P(affordable by each year | hypothesis ``index`` is the right one)."""
        chosen = self.arrival[self.hypothesis == index]
        if chosen.size == 0:
            return np.zeros(len(self.years))
        counts = np.bincount(chosen, minlength=len(self.years) + 1)[: len(self.years)]
        return np.cumsum(counts) / chosen.size

    def quantile(self, q: float, cdf: np.ndarray | None = None) -> int | None:
        """The first year by which P(TAI) >= q, or None when not reached by the last year."""
        cdf = self.cdf() if cdf is None else cdf
        reached = np.nonzero(cdf >= q - 1e-12)[0]
        return int(self.years[reached[0]]) if reached.size else None

    def p_by(self, year: int) -> float:
        """P(TAI affordable by the end of ``year``); years before the first projected one give the
        mass already affordable then (the jump), years past the last give the last value."""
        cdf = self.cdf()
        i = int(np.clip(year - self.years[0], 0, len(self.years) - 1))
        return float(cdf[i])

    def requirement_percentiles(self, index: int, qs=(10, 50, 90)) -> list[float]:
        """Percentiles of hypothesis ``index``'s requirement (log10 FLOP, 2020 algorithms)."""
        chosen = self.requirement[self.hypothesis == index]
        return [float(v) for v in np.percentile(chosen, qs)] if chosen.size else [float("nan")] * len(qs)


def draw_requirements(scenario: Scenario, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(hypothesis index, requirement) per draw: steps 1-3. NEVER draws get an infinite requirement."""
    weights = np.array([h.weight for h in scenario.hypotheses] + [scenario.never])
    which = rng.choice(len(weights), size=draws, p=weights / weights.sum())
    which[which == len(scenario.hypotheses)] = NEVER
    requirement = np.full(draws, np.inf)
    update = scenario.section("low_requirement_update")
    for i, hypothesis in enumerate(scenario.hypotheses):
        chosen = np.nonzero(which == i)[0]
        if chosen.size:
            requirement[chosen] = update_against_low(sample_requirements(hypothesis, rng, chosen.size), update, rng)
    return which.astype(np.int32), requirement


def first_affordable(thresholds: np.ndarray, requirement: np.ndarray) -> np.ndarray:
    """Index of the first year whose threshold reaches each requirement (len if none).

    ``thresholds`` (Y,) is log10 affordable FLOP plus algorithmic progress, in 2020-algorithm
    FLOP. A running maximum makes it non-decreasing, which changes no first crossing and lets a
    binary search find it (a shrinking economy can make spending dip).
    """
    return np.searchsorted(np.maximum.accumulate(thresholds), requirement, side="left")


def simulate(scenario: Scenario, draws: int = 1_000_000, seed: int = 0,
             sample_affordability: bool = False) -> Forecast:
    """Run the model: ``draws`` Monte Carlo draws over the scenario's years, reproducible by ``seed``."""
    if draws < 1:
        raise ValueError(f"draws = {draws}; accepted: a whole number >= 1")
    rng = np.random.default_rng(seed)
    years = np.arange(scenario.years.start, scenario.years.stop)
    which, requirement = draw_requirements(scenario, draws, rng)
    trends = point_affordability(scenario, years)
    algorithms = algorithm_curves(scenario, years)
    if sample_affordability:
        arrival = _arrival_with_sampled_affordability(scenario, years, which, requirement, algorithms, rng)
    else:
        arrival = np.full(draws, len(years), dtype=np.int32)
        for i in range(len(scenario.hypotheses)):
            chosen = np.nonzero(which == i)[0]
            arrival[chosen] = first_affordable(trends["flop"] + algorithms[i], requirement[chosen])
    return Forecast(scenario, years, which, requirement, arrival, trends, algorithms, seed, sample_affordability)


def sample_affordability_inputs(scenario: Scenario, rng: np.random.Generator, n: int) -> dict[str, dict]:
    """Affordability sections with each input named in [uncertainty] drawn per draw, as (n, 1)
    arrays clipped to the input's accepted range; the others stay point values."""
    sections = {s: dict(scenario.section(s)) for s in AFFORDABILITY}
    for section, entries in scenario.data.get("uncertainty", {}).items():
        for key, dist in entries.items():
            spec = SCHEMA[section][key]
            low = spec.low + (1e-6 if spec.above else 0.0)
            sections[section][key] = np.clip(sample(dist, rng, n), low, spec.high)[:, None]
    return sections


def _arrival_with_sampled_affordability(scenario: Scenario, years: np.ndarray, which: np.ndarray,
                                        requirement: np.ndarray, algorithms: np.ndarray,
                                        rng: np.random.Generator) -> np.ndarray:
    """First affordable year per draw when each draw has its own affordability trends.

    One year at a time (a (N, Y) matrix of thresholds would be 600 MB at a million draws);
    each year costs a few vectorised passes over the draws.
    """
    n = which.shape[0]
    sections = sample_affordability_inputs(scenario, rng, n)
    progress = np.vstack([algorithms, np.zeros(len(years))])  # row -1 (NEVER) gets no progress
    arrival = np.full(n, len(years), dtype=np.int32)
    pending = np.isfinite(requirement)
    for yi, year in enumerate(years):
        idx = np.nonzero(pending)[0]
        if idx.size == 0:
            break
        picked = {s: {k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in d.items()} for s, d in sections.items()}
        flop = affordability(np.array([year]), picked["hardware"], picked["spending"], picked["gdp"])["flop"]
        threshold = np.broadcast_to(flop, (idx.size, 1))[:, 0] + progress[which[idx], yi]
        done = idx[threshold >= requirement[idx]]
        arrival[done] = yi
        pending[done] = False
    return arrival
