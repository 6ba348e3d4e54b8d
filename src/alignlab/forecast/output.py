"""What a forecast prints and saves: one JSON object, a CSV of the CDFs, or a text report.

The JSON object is the contract other tools read: "cdf" (every projected year, as a string, to
a probability in 0..1), "quantiles" ("0.1", "0.25", ... to a year, or null when not reached by
the last year), "by_anchor" (hypothesis name to its own CDF, same shape as "cdf"), plus the
inputs and everything the text report shows.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from alignlab.forecast.model import Forecast
from alignlab.forecast.sensitivity import Bar

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
TABLE_STEP = 5


def _by_year(years: np.ndarray, values: np.ndarray, digits: int = 6) -> dict[str, float]:
    return {str(int(y)): round(float(v), digits) for y, v in zip(years, values)}


def forecast_dict(forecast: Forecast, by_years: list[int]) -> dict[str, Any]:
    """Everything about one forecast as plain JSON-ready data."""
    scenario, years = forecast.scenario, forecast.years
    cdf = forecast.cdf()
    anchors, by_anchor = {}, {}
    for i, h in enumerate(scenario.hypotheses):
        own = forecast.anchor_cdf(i)
        by_anchor[h.name] = _by_year(years, own)
        p10, p50, p90 = forecast.requirement_percentiles(i)
        anchors[h.name] = {
            "label": h.label, "weight": h.weight,
            "requirement_log10_flop": {"p10": round(p10, 3), "p50": round(p50, 3), "p90": round(p90, 3)},
            "algorithm_halving_years": h.halving_years, "algorithm_max_oom": h.max_oom,
            "quantiles": {str(q): forecast.quantile(q, own) for q in QUANTILES},
        }
    return {
        "scenario": scenario.name,
        "title": scenario.data.get("title", scenario.name),
        "source": scenario.data.get("source", ""),
        "draws": forecast.draws,
        "seed": forecast.seed,
        "affordability": "sampled (extension: --sample-affordability)" if forecast.sampled_affordability
                         else "point values (as in the report)",
        "years": [int(years[0]), int(years[-1])],
        "cdf": _by_year(years, cdf),
        "quantiles": {str(q): forecast.quantile(q, cdf) for q in QUANTILES},
        "p_by_year": {str(y): round(forecast.p_by(y), 6) for y in by_years},
        "never": round(scenario.never, 6),
        "by_anchor": by_anchor,
        "anchors": anchors,
        "trends_log10": {k: _by_year(years, v, 4) for k, v in forecast.trends.items()},
        "published": scenario.data.get("published", {}),
        "inputs": scenario.data,
    }


def tornado_dict(base_median: int | None, bars: list[Bar]) -> dict[str, Any]:
    return {"base_median": base_median,
            "inputs": [{"key": b.key, "value": b.base_value, "low": b.low, "high": b.high,
                        "median_at_low": b.median_low, "median_at_high": b.median_high} for b in bars]}


def forecast_csv(forecast: Forecast) -> str:
    """year, P(all anchors), then P for each anchor alone; one row per projected year."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [h.name for h in forecast.scenario.hypotheses]
    writer.writerow(["year", "cdf", *names])
    columns = [forecast.cdf()] + [forecast.anchor_cdf(i) for i in range(len(names))]
    for row, year in enumerate(forecast.years):
        writer.writerow([int(year), *(f"{c[row]:.6f}" for c in columns)])
    return buffer.getvalue()


def _year(y: int | None, end: int) -> str:
    return f">{end}" if y is None else str(y)


def forecast_text(result: dict[str, Any]) -> str:
    """The human-readable report of ``forecast_dict`` output (plus tornado/sweep if present)."""
    end = result["years"][1]
    lines = [f"Biological Anchors forecast: {result['title']} [{result['scenario']}]",
             f"{result['draws']:,} draws, seed {result['seed']}; affordability: {result['affordability']}"]
    if result.get("overrides"):
        lines.append(f"inputs changed from the scenario: {' '.join(result['overrides'])}")
    lines.append("")
    q = result["quantiles"]
    lines.append("TAI affordable by:  " + "   ".join(f"{float(k):.0%}: {_year(v, end)}" for k, v in q.items()))
    lines.append("P(by year):         " + "   ".join(f"{y}: {p:.1%}" for y, p in result["p_by_year"].items()))
    published = result.get("published") or {}
    if published.get("p_by_year"):
        ours = result["cdf"]
        pairs = [f"{y}: {p:.0%} (ours {ours.get(y, float('nan')):.1%})" for y, p in published["p_by_year"].items()]
        lines.append(f"published:          {'   '.join(pairs)}")
        lines.append(f"                    source: {published.get('source', '')}")
    lines += ["", f"{'anchor':<20}{'weight':>7}  {'requirement p10/p50/p90':>24}  {'halving':>7}  {'cap':>4}"
                  f"  {'median alone':>12}  {'P(' + str(end) + ') alone':>12}"]
    for name, a in result["anchors"].items():
        r = a["requirement_log10_flop"]
        lines.append(f"{a['label']:<20}{a['weight']:>7.0%}  {'1e%.1f / 1e%.1f / 1e%.1f' % (r['p10'], r['p50'], r['p90']):>24}"
                     f"  {a['algorithm_halving_years']:>6g}y  {a['algorithm_max_oom']:>4g}"
                     f"  {_year(a['quantiles']['0.5'], end):>12}  {result['by_anchor'][name][str(end)]:>12.1%}")
    lines.append(f"{'never':<20}{result['never']:>7.0%}")
    lines += ["", _cdf_table(result)]
    if "sensitivity" in result:
        lines += ["", _tornado_text(result["sensitivity"], end)]
    if "sweep" in result:
        lines += ["", _sweep_text(result["sweep"], end)]
    return "\n".join(lines)


def _cdf_table(result: dict[str, Any]) -> str:
    names = list(result["by_anchor"])
    width = max(9, *(len(n) + 1 for n in names))
    head = f"{'year':<6}{'all':>8}" + "".join(f"{n:>{width}}" for n in names)
    start, end = result["years"]
    years = [y for y in range(start, end + 1) if (y - start) % TABLE_STEP == 0 or y == end]
    rows = [f"{y:<6}{result['cdf'][str(y)]:>8.1%}" + "".join(f"{result['by_anchor'][n][str(y)]:>{width}.1%}" for n in names)
            for y in years]
    return "\n".join(["P(TAI by year): all anchors, then each anchor alone", head, *rows])


def _tornado_text(tornado: dict[str, Any], end: int) -> str:
    lines = [f"Sensitivity of the median (base {_year(tornado['base_median'], end)}), largest swing first:"]
    for row in tornado["inputs"]:
        lines.append(f"  {row['key']:<46} {row['low']:>9g} -> {_year(row['median_at_low'], end):>5}   "
                     f"{row['high']:>9g} -> {_year(row['median_at_high'], end):>5}   (now {row['value']:g})")
    return "\n".join(lines)


def _sweep_text(sweep: dict[str, Any], end: int) -> str:
    lines = [f"Sweep of {sweep['key']}:", f"  {'value':>12}  {'10%':>6}  {'50%':>6}  {'90%':>6}  P(by year)"]
    for row in sweep["rows"]:
        q = row["quantiles"]
        p = "  ".join(f"{y}: {v:.1%}" for y, v in row["p_by_year"].items())
        years = "  ".join(f"{_year(q[k], end):>6}" for k in ("0.1", "0.5", "0.9"))
        lines.append(f"  {row['value']!s:>12}  {years}  {p}")
    return "\n".join(lines)
