"""What the surgery commands show: the tables, reports and plots of `alignlab surgery layers`,
`stitch` and `task-vector` (the measurements themselves are in whitebox/surgery.py)."""

from __future__ import annotations

import math
from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(value: float, digits: int = 3) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


LAYER_COLUMNS = ("top1_retention", "top1_agreement", "kl", "loss_change")


def layers_table(rows: list[dict]) -> str:
    """One line per layer: retention, agreement, KL and loss change for each intervention."""
    kinds = list(dict.fromkeys(r["intervention"] for r in rows))
    by = {(r["intervention"], r["layer"]): r for r in rows}
    layers = sorted({r["layer"] for r in rows})
    head = "| layer | " + " | ".join(f"{k} {c}" for k in kinds for c in
                                     ("top-1 retention", "top-1 agreement", "KL", "loss change")) + " |"
    lines = [head, "|" + "---|" * (1 + 4 * len(kinds))]
    for layer in layers:
        cells = []
        for k in kinds:
            r = by.get((k, layer))
            cells += ([fmt(r["top1_retention"]), fmt(r["top1_agreement"]), fmt(r["kl"]), fmt(r["loss_change"])]
                      if r else ["", "", "", ""])
        lines.append(f"| {layer}{'-' + str(layer + 1) if kinds == ['swap'] else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layers_csv(rows: list[dict]) -> str:
    keys = ["intervention", "layer", *[k for k in rows[0] if k not in ("intervention", "layer")]] if rows else []
    return "".join(",".join(str(r[k]) for k in keys) + "\n" for r in [dict(zip(keys, keys)), *rows])


def plot_layers(rows: list[dict], path: Path, title: str = "") -> None:
    """Four panels against the layer index: top-1 retention, top-1 agreement, KL, loss change; one line per intervention."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    labels = {"delete": "delete layer i", "swap": "swap layers i, i+1"}
    for kind, marker in (("delete", "o"), ("swap", "s")):
        mine = sorted((r for r in rows if r["intervention"] == kind), key=lambda r: r["layer"])
        if not mine:
            continue
        x = [r["layer"] for r in mine]
        for ax, key in zip(axes, LAYER_COLUMNS):
            ax.plot(x, [r[key] for r in mine], marker=marker, ms=4, label=labels[kind])
    for ax, name in zip(axes, ("top-1 accuracy retention", "top-1 agreement with original",
                               "KL(original || edited), nats/token", "loss change, nats/token")):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer index i")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].set_ylim(top=1.02)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layers_report(config, summary: dict) -> str:
    return "\n".join([
        f"# Layer interventions on {config.model}", "",
        f"Held-out text: `{config.text}` ({summary['tokens']} predicted tokens in windows of {config.context}); "
        f"original loss {fmt(summary['loss_original'])} nats/token, top-1 accuracy "
        f"{fmt(summary['accuracy_original'])}. {summary['seconds']} s.", "",
        "Delete i: layer i adds nothing to the residual stream. Swap i: layers i and i+1 run in the "
        "other order, each with its own attention type. Retention = edited top-1 accuracy / original's.", "",
        layers_table(summary["rows"]), "", "![per-layer measurements](surgery-layers.png)", ""])


def stitch_lines(summary: dict) -> str:
    lines = [f"top model alone:     held-out loss {summary['loss_top']:.4f} nats/token"]
    for name in ("stitch", "random-bottom"):
        if name in summary:
            lines.append(f"{name + ':':<20} held-out loss {summary[name]['loss']:.4f}, "
                         f"penalty {summary[name]['penalty']:+.4f}")
    return "\n".join(lines)


def plot_stitch(curves: dict[str, list[float]], loss_top: float, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in curves.items():
        ax.plot(range(len(curve)), curve, label=f"{name} (training batches)")
    ax.axhline(loss_top, color="k", ls="--", lw=1, label="top model alone (held-out)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss, nats/token")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stitch_report(config, summary: dict) -> str:
    return "\n".join([
        f"# Stitching {config.bottom} (layers 0..{config.layer - 1}) into {config.top} (from layer {config.layer})", "",
        f"Text `{config.text}`: {summary['train_windows']} windows to train the stitch, {summary['held_out_windows']} "
        f"held out ({summary['held_out_tokens']} tokens). {config.steps} Adam steps, lr {config.lr}, init "
        f"{config.init}, normalize {config.normalize}. {summary['seconds']} s.", "",
        "```", stitch_lines(summary), "```", "",
        "Penalty = stitched held-out loss - the top model's own. The random-bottom control stitches a randomly "
        "initialised copy of the bottom model: a penalty well below the control's says the bottom model's "
        "representation is one the top model can use.", "", "![training curves](stitch.png)", ""])


def plot_norms(by_block: dict[str, float], relative: bool, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(by_block)), 3.6))
    ax.bar(range(len(by_block)), list(by_block.values()))
    ax.set_xticks(range(len(by_block)), list(by_block), rotation=90, fontsize=7)
    ax.set_ylabel("||tau|| / ||theta||" if relative else "||tau||")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_coefficients(rows: list[dict], name: str, chosen: float, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([r["coefficient"] for r in rows], [r["value"] for r in rows], marker="o")
    ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen c = {chosen:g}")
    ax.set_xlabel("coefficient c")
    ax.set_ylabel(name)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
