"""`alignlab forecast`: when does training transformative AI become affordable? (Biological Anchors)

    alignlab forecast --scenario cotra-2020
    alignlab forecast --scenario cotra-2022 --format json
    alignlab forecast --scenario my.toml --set spending.doubling_years=2.5 --out plots/
    alignlab forecast --sweep spending.doubling_years=1.5,2,2.5,3

Every run leaves a run folder (config, environment, results.json, cdf.csv, and the plots when
they are drawn); with --out the same files also go to that folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignlab.cli import Command


@dataclass
class ForecastConfig:
    """Forecast the year training transformative AI becomes affordable (Cotra 2020, Biological Anchors)."""

    scenario: str = "cotra-2020"
    """A shipped scenario (cotra-2020: her 2020 best guess; cotra-2022: her 2022 update) or a scenario TOML file."""
    draws: int = 1_000_000
    """Monte Carlo draws (a million take well under a second)."""
    seed: int = 0
    """Random seed: the same seed and inputs give the same numbers."""
    format: Literal["text", "json", "csv"] = "text"
    """What to print: a report, one JSON object, or the CDFs as CSV."""
    out: Path | None = None
    """Also write results.json, cdf.csv and the plots (CDF, trajectories, sensitivity tornado) into this folder."""
    set: list[str] = field(default_factory=list, metadata={"metavar": "KEY=VALUE"})
    """Change scenario inputs, several after one --set: --set spending.doubling_years=2.5 hypotheses.evolution.weight=0."""
    by_year: list[int] = field(default_factory=lambda: [2030, 2036, 2040, 2050, 2100])
    """Years to report P(TAI by year) for."""
    sample_affordability: bool = False
    """Extension (the report uses point values): also draw the affordability inputs from the scenario's [uncertainty]."""
    sensitivity: bool = False
    """Compute the tornado (median with each [sensitivity] input at its low and high) even without --out."""
    sweep: str | None = None
    """Re-run with one input at several values and report each, e.g. --sweep spending.doubling_years=1.5,2,2.5,3."""
    sensitivity_draws: int = 200_000
    """Draws for each re-run of the tornado and of a sweep."""


def run_forecast(config: ForecastConfig) -> int:
    """Run the model, print the result in the chosen format, and save a run folder."""
    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.forecast.model import simulate
    from alignlab.forecast.output import forecast_csv, forecast_dict, forecast_text
    from alignlab.forecast.scenario import load_scenario
    from alignlab.runs import Run

    for name in ("draws", "sensitivity_draws"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} = {getattr(config, name)}; accepted: a whole number >= 1")
    scenario = load_scenario(config.scenario, config.set)
    forecast = simulate(scenario, config.draws, config.seed, sample_affordability=config.sample_affordability)
    result = forecast_dict(forecast, list(config.by_year))
    result["overrides"] = list(config.set)
    tornado = _add_sensitivity(result, scenario, config) if (config.out or config.sensitivity) else None
    if config.sweep:
        _add_sweep(result, scenario, config)
    csv_text = forecast_csv(forecast)
    with Run.create("forecast", config, seed=config.seed) as run:
        atomic_write_json(run.path / "results.json", result)
        atomic_write_text(run.path / "cdf.csv", csv_text)
        run.log_metrics(0, **{f"q{k}": v for k, v in result["quantiles"].items()},
                        **{f"p{y}": p for y, p in result["p_by_year"].items()})
        if config.out is not None:
            written = _write_out(config.out, forecast, result, csv_text, tornado)
            for path in written:
                if path.suffix == ".png":
                    shutil.copyfile(path, run.path / path.name)
        run.finish(median=result["quantiles"]["0.5"], p_end=result["cdf"][str(result["years"][1])])
    if config.format == "json":
        print(json.dumps(result, indent=1))
    elif config.format == "csv":
        print(csv_text, end="")
    else:
        print(forecast_text(result))
        if config.out is not None:
            print(f"\nwrote results.json, cdf.csv, cdf.png, trajectory.png, tornado.png to {config.out}")
    print(f"run {run.id} saved to {run.path}", file=sys.stderr)
    return 0


def _add_sensitivity(result: dict[str, Any], scenario, config: ForecastConfig):
    from alignlab.forecast.output import tornado_dict
    from alignlab.forecast.sensitivity import tornado

    base, bars = tornado(scenario, config.sensitivity_draws, config.seed)
    result["sensitivity"] = tornado_dict(base, bars)
    return base, bars


def _add_sweep(result: dict[str, Any], scenario, config: ForecastConfig) -> None:
    from alignlab.forecast.sensitivity import parse_sweep, sweep

    key, values = parse_sweep(config.sweep)
    result["sweep"] = {"key": key, "rows": sweep(scenario, key, values, config.sensitivity_draws, config.seed,
                                                 list(config.by_year))}


def _write_out(folder: Path, forecast, result: dict[str, Any], csv_text: str, tornado) -> list[Path]:
    """results.json, cdf.csv and the three plots into ``folder``; returns the paths written."""
    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.forecast.plots import plot_cdf, plot_tornado, plot_trajectory

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "results.json", result)
    atomic_write_text(folder / "cdf.csv", csv_text)
    base, bars = tornado
    end_year = int(forecast.years[-1])
    return [folder / "results.json", folder / "cdf.csv",
            plot_cdf(forecast, folder / "cdf.png"),
            plot_trajectory(forecast, folder / "trajectory.png"),
            plot_tornado(base, bars, end_year, result["title"], folder / "tornado.png")]


FORECAST = Command("forecast", "Biological Anchors compute forecast", ForecastConfig, run_forecast,
                   description=__doc__.split("\n\n")[0])
