"""Plots of the white-box monitors: clip shares over time, curvature over time, the spectrum."""

from __future__ import annotations

from pathlib import Path

SHOWN = 6
"""Tensors drawn individually in the clip-share plot; the rest are summed as 'other'."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_clip_shares(records: list[dict], path: Path) -> Path:
    """Stacked shares of the squared gradient norm per tensor over steps; clipped steps shaded."""
    plt = _pyplot()
    totals: dict[str, float] = {}
    for r in records:
        for name, share in r["shares"].items():
            totals[name] = totals.get(name, 0.0) + share
    shown = sorted(totals, key=lambda n: -totals[n])[:SHOWN]
    steps = [r["step"] for r in records]
    layers = [[r["shares"].get(n, 0.0) for r in records] for n in shown]
    other = [max(0.0, 1.0 - sum(r["shares"].get(n, 0.0) for n in shown)) for r in records]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=[3, 1])
    top.stackplot(steps, *layers, other, labels=[_short(n) for n in shown] + ["other"], alpha=0.85)
    for r in records:
        if r["clipped"]:
            top.axvspan(r["step"] - 0.5, r["step"] + 0.5, color="black", alpha=0.08, lw=0)
    top.set_ylabel("share of ||g||^2")
    top.set_ylim(0, 1)
    top.set_title("Gradient share per parameter tensor (shaded: clipped steps)")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    bottom.plot(steps, [r["global_norm"] for r in records], color="black", lw=1)
    bottom.set_ylabel("global norm")
    bottom.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curvature(rows: list[dict], path: Path) -> Path:
    """Top eigenvalue and trace over steps, with the stability ratio against its threshold."""
    plt = _pyplot()
    steps = [r["step"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(steps, [r.get("hess/lmax/all") for r in rows], marker="o", label="top eigenvalue")
    left.plot(steps, [r.get("hess/trace/all") for r in rows], marker="s", label="trace")
    left.set_xlabel("step")
    left.set_title("Hessian of the loss (one micro-batch)")
    left.legend()
    right.plot(steps, [r.get("hess/stability/all") for r in rows], marker="o", color="tab:red")
    right.axhline(1.0, color="gray", ls="--", label="unstable above (lr x lambda_max = 2)")
    right.set_xlabel("step")
    right.set_title("lr x lambda_max / 2")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_spectrum(spectrum: dict, path: Path) -> Path:
    """The stochastic-Lanczos estimate of the Hessian's eigenvalue density (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    density = [max(d, 1e-12) for d in spectrum["density"]]
    ax.semilogy(spectrum["grid"], density)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title("Hessian spectrum (stochastic Lanczos quadrature)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(name: str) -> str:
    return name.replace("base_model.model.", "").replace("model.layers.", "L").replace(".weight", "")[-40:]
