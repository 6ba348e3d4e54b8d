"""The pictures of a tessellating-hills run, drawn with matplotlib's Agg backend (no display needed).

- hills.png: x0, the step share on x0, the participation ratio and the largest |x_j| over time,
  one colour per setting (dimension, eps): the mean over seeds as a line, min..max as a band;
- coordinates.png: for the first seed of each setting, x0 and every x_j over time (the picture
  of the original post: demons are the few x_j that leave the crowd);
- monitors.png: the gradient-share and curvature monitors over time, with the step where x0
  stalls marked (toys/hills_monitors.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alignlab.toys.hills import History

PANELS = (("x0", "x0"), ("step_share", "step share on x0  (-g0 / ||g||)"),
          ("participation", "participation ratio of x1..xn"), ("max_abs", "largest |x_j|, j >= 1"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _settings(histories: dict[int, History], eps: list[float]):
    """(label, steps, history, eps index) for every setting, in run order."""
    for dim, history in histories.items():
        for e, value in enumerate(eps):
            yield f"n={dim}, eps={value:g}", np.array(history.steps), history, e


def plot_metrics(histories: dict[int, History], eps: list[float], path: Path) -> Path:
    """Four panels over steps: mean over seeds (line) and min..max over seeds (band) per setting."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for i, (label, steps, history, e) in enumerate(_settings(histories, eps)):
        colour = f"C{i % 10}"
        for ax, (name, title) in zip(axes.flat, PANELS):
            values = getattr(history, name)[:, :, e].numpy()         # (R, S)
            ax.plot(steps, values.mean(1), color=colour, lw=1.6, label=f"{label} ({values.shape[1]} seeds)")
            ax.fill_between(steps, values.min(1), values.max(1), color=colour, alpha=0.18, lw=0)
            ax.set_title(title, fontsize=10)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[1, 0].set_yscale("log")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Tessellating hills: noisy constant-step descent (mean over seeds, band = min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_coordinates(histories: dict[int, History], eps: list[float], path: Path) -> Path:
    """x0 (black) and every x_j (thin, coloured) over time for the first seed of each setting."""
    plt = _pyplot()
    settings = list(_settings(histories, eps))
    cols = min(2, len(settings))
    rows = -(-len(settings) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4 * rows), squeeze=False)
    for ax, (label, steps, history, e) in zip(axes.flat, settings):
        xs = history.trajectory[:, 0, e, :].numpy()                  # (R, n+1)
        ax.plot(steps, xs[:, 1:], lw=0.6, alpha=0.7)
        ax.plot(steps, xs[:, 0], color="black", lw=2.2, label="x0")
        ax.set(title=f"{label}, first seed", xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in list(axes.flat)[len(settings):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MONITOR_PANELS = (("grad_share_x0", "x0's share of ||g||^2"), ("grad_top_share", "largest other coordinate's share"),
                  ("hess_lmax", "|top Hessian eigenvalue|"), ("x0", "x0"))


def plot_monitors(histories: dict[int, History], monitored: dict, eps: list[float], rows: list[dict],
                  path: Path) -> Path:
    """The monitors over steps per setting (mean over seeds, band = min..max), with each setting's
    median stall step dashed: do the monitors move before x0 stalls?"""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    stalls = {(r["dim"], r["eps"]): [s for s in r.get("monitors", {}).get("stall", []) if s is not None] for r in rows}
    for i, (label, steps, history, e) in enumerate(_settings(histories, eps)):
        dim = int(label.split(",")[0][2:])
        records = monitored.get(dim)
        if records is None:
            continue
        colour = f"C{i % 10}"
        for ax, (name, title) in zip(axes.flat, MONITOR_PANELS):
            values = (getattr(history, name) if name == "x0" else records[name])[:, :, e].numpy()
            if name == "hess_lmax":
                values = np.abs(values)
            ax.plot(steps, values.mean(1), color=colour, lw=1.6, label=label)
            ax.fill_between(steps, values.min(1), values.max(1), color=colour, alpha=0.18, lw=0)
            ax.set_title(title, fontsize=10)
            stall = stalls.get((dim, eps[e]))
            if stall:
                ax.axvline(sorted(stall)[len(stall) // 2], color=colour, ls="--", lw=1)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Tessellating hills through the white-box monitors (dashed: median step where x0 stalls)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
