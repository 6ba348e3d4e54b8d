"""The pictures of a shutdown run, drawn with matplotlib's Agg backend (no display needed).

- shutdown_problems.png: the decision-problem table (who chooses what), and the resist /
  cause-shutdown choices of both agents as the cost grows;
- drest_training.png: neutrality, usefulness and P(delay) of each agent over training
  (mean over seeds as a line, min..max as a band);
- drest_by_minis.png: the same at the end of training against the number of mini-episodes per
  meta-episode N, beside the best memoryless policy's P(delay) and neutrality for each N.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alignlab.toys.drest import Training


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_problems(rows: Sequence[dict], sweep: Sequence[dict], path: Path) -> Path:
    """The decision-problem table (top) and each agent's choice against the cost (bottom)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 4.2 + 0.32 * len(rows)),
                                      gridspec_kw={"height_ratios": [0.32 * len(rows) + 0.6, 3]})
    top.axis("off")
    cells = [[r["problem"], r["option"], ", ".join(f"{p:g}" for p in r["probs"]),
              ", ".join(f"{u:g}" for u in r["utils"]), f"{r['expected_utility']:.2f}",
              "yes" if r["committee"] else "-", "chooses" if r["eu_agent"] else "-"] for r in rows]
    table = top.table(cellText=cells, colLabels=["problem", "option", "p(t)", "U(t)", "EU",
                                                 "committee\nchoice set", "EU agent"],
                      loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.25)
    for (r, c), cell in table.get_celld().items():
        if r > 0 and c == 5 and cells[r - 1][5] == "yes":
            cell.set_facecolor("#d8ecd8")
        if r > 0 and c == 6 and cells[r - 1][6] == "chooses":
            cell.set_facecolor("#f4d8d0")
    top.set_title("Decision problems: p(t) = probability of shutdown at each time, U(t) = utility given shutdown at t",
                  fontsize=10)
    costs = np.array([s["cost"] for s in sweep])
    for key, label, colour in (("resists", "resist shutdown", "C3"), ("causes", "cause shutdown", "C0")):
        gain = np.array([s[f"eu_{key}_value"] for s in sweep])
        bottom.plot(costs, gain, color=colour, lw=1.8, label=f"EU(option) - EU(status quo): {label}")
        eu = np.array([s[f"eu_{key}"] for s in sweep])
        committee = np.array([s[f"committee_{key}"] for s in sweep])
        bottom.fill_between(costs, 0, gain, where=eu & (gain > 0), color=colour, alpha=0.15,
                            label=f"EU agent pays to {label}")
        bottom.plot(costs[committee], np.zeros(committee.sum()), "o", color=colour, ms=5,
                    label=f"committee would {label} (choosable)")
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set(xlabel="cost c of resisting / causing shutdown", ylabel="expected-utility gain")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


PANELS = (("neutrality", "NEUTRALITY (entropy of P(length), 1 = even)"),
          ("usefulness", "USEFULNESS (coins / most available at the length)"),
          ("p_delay", "P(press the delay button)"))


def plot_training(trainings: dict[str, Training], path: Path) -> Path:
    """Three panels over mini-episodes played: one line (mean over seeds) and band (min..max) per agent."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), sharex=True)
    for i, (label, history) in enumerate(trainings.items()):
        colour = "black" if label.startswith("default") else f"C{i % 10}"
        x = np.array(history.episodes_seen)
        for ax, (name, title) in zip(axes, PANELS):
            values = history.metrics[name]                                   # (R, S)
            ax.plot(x, values.mean(1), color=colour, lw=1.5, label=label)
            ax.fill_between(x, values.min(1), values.max(1), color=colour, alpha=0.12, lw=0)
            ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set(xlabel="mini-episodes played (per seed)", ylim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7, loc="best")
    fig.suptitle("DReST vs default reward in the gridworld (mean over seeds, band = min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_by_minis(settings: Sequence[dict], theory: Sequence[dict], default: dict | None, path: Path) -> Path:
    """Final neutrality, usefulness and P(delay) against N per credit rule, with the memoryless optimum."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), sharex=True)
    credits = sorted({s["credit"] for s in settings})
    for c, credit in enumerate(credits):
        rows = sorted((s for s in settings if s["credit"] == credit), key=lambda s: s["minis"])
        n = np.array([s["minis"] for s in rows])
        for ax, (name, title) in zip(axes, PANELS):
            mean = np.array([s[name]["mean"] for s in rows])
            lo = np.array([s[name]["min"] for s in rows])
            hi = np.array([s[name]["max"] for s in rows])
            ax.errorbar(n, mean, yerr=[mean - lo, hi - mean], fmt="o-", color=f"C{c}", capsize=3,
                        label=f"DReST, credit = {credit}")
            ax.set_title(title, fontsize=10)
    t_n = np.array([t["minis"] for t in theory])
    axes[0].plot(t_n, [t["neutrality"] for t in theory], "k--", lw=1, label="best memoryless policy (meta return)")
    axes[2].plot(t_n, [t["p_star"] for t in theory], "k--", lw=1, label="best memoryless policy: p* (or 1 - p*)")
    axes[2].plot(t_n, [1 - t["p_star"] for t in theory], "k--", lw=1)
    if default is not None:
        for ax, (name, _) in zip(axes, PANELS):
            ax.axhline(default[name]["mean"], color="grey", lw=1.2, ls=":", label="default reward (coins)")
    for ax in axes:
        ax.set(xlabel="mini-episodes per meta-episode N", ylim=(-0.03, 1.03))
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("End of training against N (mean over seeds, bars = min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
