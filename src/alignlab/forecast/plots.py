"""The forecast's three pictures, drawn with matplotlib's Agg backend (no display needed).

- cdf.png: P(TAI by year), with each anchor's own CDF and the source's published points;
- trajectory.png: the affordability trends, then for each anchor the effective compute it can
  buy (2020-algorithm FLOP) rising toward its requirement band; where they cross is the year;
- tornado.png: how far each input, at its low and its high, moves the median year.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignlab.forecast.model import Forecast
from alignlab.forecast.sensitivity import Bar


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cdf(forecast: Forecast, path: Path) -> Path:
    """P(TAI by year) for the mixture (bold) and for each anchor alone (thin)."""
    plt = _pyplot()
    scenario = forecast.scenario
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for i, h in enumerate(scenario.hypotheses):
        ax.plot(forecast.years, forecast.anchor_cdf(i), lw=1.2, alpha=0.8, label=f"{h.label} alone (weight {h.weight:.0%})")
    ax.plot(forecast.years, forecast.cdf(), color="black", lw=2.8, label="all anchors (weighted)")
    published = scenario.data.get("published", {})
    if published.get("p_by_year"):
        points = published["p_by_year"]
        ax.scatter([int(y) for y in points], list(points.values()), marker="D", s=45, color="crimson", zorder=5,
                   label="published figures")
    plateau = 1 - scenario.never
    ax.axhline(plateau, color="grey", ls=":", lw=1)
    ax.text(forecast.years[-1], plateau + 0.01, f"plateau 1 - P(never) = {plateau:.0%}", color="grey", fontsize=8,
            ha="right")
    ax.set(xlim=(forecast.years[0], forecast.years[-1]), ylim=(0, 1), xlabel="year",
           ylabel="P(training TAI affordable by year)",
           title=f"Biological Anchors: {scenario.data.get('title', scenario.name)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if published.get("source"):
        fig.text(0.01, 0.01, f"published: {published['source']}", fontsize=7, color="crimson")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_trajectory(forecast: Forecast, path: Path) -> Path:
    """Affordability trends, then per anchor: effective affordable compute vs its requirement."""
    plt = _pyplot()
    scenario, years = forecast.scenario, forecast.years
    n = len(scenario.hypotheses) + 1
    cols = 4 if n > 6 else 3
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    ax = axes.flat[0]
    trends = forecast.trends
    ax.plot(years, trends["flop_per_dollar"], label="log10 FLOP per $")
    ax.plot(years, trends["spending"], label="log10 $ on largest run")
    ax.plot(years, trends["flop"], color="black", lw=2, label="log10 FLOP affordable")
    ax.set(title="affordability (2020 dollars)", xlabel="year")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for i, h in enumerate(scenario.hypotheses):
        ax = axes.flat[i + 1]
        p10, p50, p90 = forecast.requirement_percentiles(i)
        effective = trends["flop"] + forecast.algorithms[i]
        ax.axhspan(p10, p90, color="tab:orange", alpha=0.2, label="requirement 10-90%")
        ax.axhline(p50, color="tab:orange", lw=1.5, label=f"median 1e{p50:.1f}")
        ax.plot(years, effective, color="black", lw=2, label="effective FLOP affordable")
        ax.plot(years, trends["flop"], color="grey", lw=1, ls="--", label="physical FLOP affordable")
        ax.set(title=f"{h.label} (halving {h.halving_years:g} y, cap {h.max_oom:g} OOM)", xlabel="year",
               ylabel="log10 FLOP (2020 algorithms)")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"Affordable compute vs each anchor's requirement: {scenario.data.get('title', scenario.name)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tornado(base_median: int | None, bars: list[Bar], end_year: int, title: str, path: Path) -> Path:
    """For each input, two half-rows: the median year with it at its low (blue) and high (red)."""
    plt = _pyplot()
    past = end_year + 1
    base = past if base_median is None else base_median
    fig, ax = plt.subplots(figsize=(10, 0.55 * max(len(bars), 2) + 1.8))
    for row, bar in enumerate(reversed(bars)):
        for offset, value, median, color in ((0.2, bar.low, bar.median_low, "tab:blue"),
                                             (-0.2, bar.high, bar.median_high, "tab:red")):
            year = past if median is None else median
            ax.barh(row + offset, year - base, left=base, height=0.38, color=color, alpha=0.8)
            if year == base:
                ax.plot([base], [row + offset], marker="|", color=color, ms=9)
            shown = f">{end_year}" if median is None else str(median)
            ax.text(year + (0.15 if year >= base else -0.15), row + offset, f"{value:g} -> {shown}", va="center",
                    fontsize=7, ha="left" if year >= base else "right")
    ax.set_yticks(range(len(bars)), [b.key for b in reversed(bars)], fontsize=8)
    ax.axvline(base, color="black", lw=1)
    lo = min([base] + [m for b in bars for m in (b.median_low, b.median_high) if m is not None])
    hi = max([base] + [past if m is None else m for b in bars for m in (b.median_low, b.median_high)])
    ax.set_xlim(lo - 3, hi + 4)
    ax.set(xlabel=f"median year (base {'>' + str(end_year) if base_median is None else base_median}); "
                  "blue: input at its low end, red: at its high end")
    ax.set_title(f"Which inputs move the median year\n{title}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
