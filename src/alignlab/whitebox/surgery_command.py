"""`alignlab surgery ...`: task vectors, layer deletion and swapping, model stitching.

    alignlab surgery task-vector make --pretrained gemma-3-270m --finetuned POLICY --out tau.safetensors
    alignlab surgery task-vector negate --vectors tau.safetensors --out minus-tau.safetensors
    alignlab surgery task-vector add --vectors tau1.safetensors tau2.safetensors --out sum.safetensors
    alignlab surgery task-vector analogy --vectors A.safetensors B.safetensors C.safetensors --out D.safetensors
    alignlab surgery task-vector apply --pretrained gemma-3-270m --vectors tau.safetensors --choose-on held-out.txt
    alignlab surgery layers --model gemma-3-270m --text held-out.txt
    alignlab surgery stitch --bottom A --top B --layer 6 --text held-out.txt

Every command leaves a run folder with config.json, env.json, metrics.jsonl, summary.json, a
plot and report.md (`alignlab runs show ID`); the math is in whitebox/surgery.py.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alignlab.cli import Command

Dtype = Literal["float32", "bfloat16", "auto"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _set_threads(threads: int) -> int:
    import torch

    if threads < 0:
        raise ValueError(f"threads = {threads}; accepted: 0 (torch's default) or more")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    return before


def _windows(tokenizer, text: Path | None, context: int, max_tokens: int, field_name: str = "text"):
    from alignlab.whitebox.surgery import read_text, text_windows

    if text is None:
        raise ValueError(f"{field_name} is missing: give a held-out text file (.txt, or .jsonl with a 'text' "
                         f"field per row) with --{field_name.replace('_', '-')} FILE; a few thousand tokens is enough")
    if max_tokens < 2:
        raise ValueError(f"max_tokens = {max_tokens}; give at least a few hundred")
    return text_windows(tokenizer, read_text(text), context, max_tokens)


def _copy_out(run_path: Path, out: Path | None, names: list[str]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (run_path / name).exists():
            shutil.copyfile(run_path / name, out / name)


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# -- layers ---------------------------------------------------------------------------------------

@dataclass
class LayersConfig:
    """Delete each decoder layer, and swap each adjacent pair, and measure the change on held-out text (Lad et al. 2024)."""

    model: str = "gemma-3-270m"
    """The model: 'gemma-3-270m', 'tiny', or a model or policy folder (LoRA adapters are merged)."""
    text: Path | None = None
    """Held-out text: a .txt file, or .jsonl with a 'text' field per row (required)."""
    context: int = 512
    """Tokens per window (BOS + context-1 tokens of the text); the text is cut into such windows."""
    max_tokens: int = 4096
    """Use at most this many tokens of the text."""
    interventions: list[Literal["delete", "swap"]] = field(default_factory=lambda: ["delete", "swap"])
    """Which interventions to run: 'delete' layer i, 'swap' layers i and i+1."""
    layers: list[int] = field(default_factory=list)
    """Only these layers (default: every layer; a swap of i swaps i with i+1)."""
    dtype: Dtype = "float32"
    """Weights' dtype; float32 keeps the KL of small interventions above rounding noise."""
    batch_size: int = 4
    """Windows per forward pass."""
    threads: int = 0
    """Torch CPU threads (0: torch's default)."""
    out: Path | None = None
    """Also copy summary.json, layers.csv, surgery-layers.png and report.md into this folder."""


LAYER_COLUMNS = ("top1_retention", "top1_agreement", "kl", "loss_change")


def run_layers(config: LayersConfig) -> int:
    """Sweep the interventions, print the per-layer table, save the run folder."""
    import torch
    from tqdm import tqdm

    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.models import load_model
    from alignlab.runs import Run
    from alignlab.whitebox.surgery import check_layer, decoder_layers, layer_sweep

    threads = _set_threads(config.threads)
    try:
        model, tokenizer = load_model(config.model, dtype=config.dtype)
        windows = _windows(tokenizer, config.text, config.context, config.max_tokens)
        count = len(decoder_layers(model))
        for i in config.layers:
            check_layer(model, i, "--layers entry")
        jobs = sum(len([i for i in (config.layers or range(count)) if i < count - (k == "swap")])
                   for k in config.interventions)
        with Run.create("surgery-layers", config) as run:
            start = time.perf_counter()
            with tqdm(total=jobs, desc="interventions", unit="edit", file=sys.stderr) as bar:
                def done(row: dict) -> None:
                    run.log_metrics(bar.n, **row)
                    bar.update()

                rows = layer_sweep(model, windows, config.interventions, config.layers or None,
                                   config.batch_size, on_done=done)
            seconds = time.perf_counter() - start
            first = rows[0] if rows else {}
            summary = {
                "model": config.model, "layers": count, "tokens": first.get("tokens", 0),
                "windows": list(windows.shape), "seconds": round(seconds, 1),
                "loss_original": first.get("loss_original"), "accuracy_original": first.get("accuracy_original"),
                "rows": rows,
            }
            atomic_write_json(run.path / "summary.json", summary)
            atomic_write_text(run.path / "layers.csv", _layers_csv(rows))
            plot_layers(rows, run.path / "surgery-layers.png", title=f"{config.model}: {summary['tokens']} tokens")
            atomic_write_text(run.path / "report.md", _layers_report(config, summary))
            _copy_out(run.path, config.out, ["summary.json", "layers.csv", "surgery-layers.png", "report.md"])
            run.finish(seconds=round(seconds, 1), interventions=len(rows))
        print(layers_table(rows))
        print(f"run {run.id} saved to {run.path}", file=sys.stderr)
        return 0
    finally:
        torch.set_num_threads(threads)


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
            cells += ([_fmt(r["top1_retention"]), _fmt(r["top1_agreement"]), _fmt(r["kl"]), _fmt(r["loss_change"])]
                      if r else ["", "", "", ""])
        lines.append(f"| {layer}{'-' + str(layer + 1) if kinds == ['swap'] else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _layers_csv(rows: list[dict]) -> str:
    keys = ["intervention", "layer", *[k for k in rows[0] if k not in ("intervention", "layer")]] if rows else []
    return "".join(",".join(str(r[k]) for k in keys) + "\n" for r in [dict(zip(keys, keys)), *rows])


def plot_layers(rows: list[dict], path: Path, title: str = "") -> None:
    """Four panels against the layer index: top-1 retention, top-1 agreement, KL, loss change; one line per intervention."""
    plt = _pyplot()
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


def _layers_report(config: LayersConfig, summary: dict) -> str:
    return "\n".join([
        f"# Layer interventions on {config.model}", "",
        f"Held-out text: `{config.text}` ({summary['tokens']} predicted tokens in windows of {config.context}); "
        f"original loss {_fmt(summary['loss_original'])} nats/token, top-1 accuracy "
        f"{_fmt(summary['accuracy_original'])}. {summary['seconds']} s.", "",
        "Delete i: layer i adds nothing to the residual stream. Swap i: layers i and i+1 run in the "
        "other order, each with its own attention type. Retention = edited top-1 accuracy / original's.", "",
        layers_table(summary["rows"]), "", "![per-layer measurements](surgery-layers.png)", ""])


# -- stitch ---------------------------------------------------------------------------------------

@dataclass
class StitchConfig:
    """Bottom layers of one model, a trained linear stitch, the top layers of another; the stitching penalty (Bansal et al. 2021)."""

    bottom: str | None = None
    """Model A, whose layers 0..layer-1 make the residual stream (a name or folder; required)."""
    top: str | None = None
    """Model B, which continues from its layer `layer` and whose loss is the baseline (required)."""
    layer: int | None = None
    """k: the stitch sits between A's layer k-1 and B's layer k (1 <= k <= layers-1; required)."""
    text: Path | None = None
    """Text to train the stitch on and to measure with: .txt, or .jsonl with a 'text' field (required)."""
    held_out: float = 0.25
    """Fraction of the text's windows (the last ones) kept out of training and used for the penalty."""
    steps: int = 100
    """Adam steps training the stitch."""
    lr: float = 1e-3
    """Adam learning rate of the stitch."""
    init: Literal["least-squares", "identity", "random"] = "least-squares"
    """Start of training: regression of B's residual stream on A's, the identity map, or random."""
    normalize: bool = False
    """RMS-normalise A's residual stream before the linear map."""
    control: bool = True
    """Also stitch a randomly initialised copy of A (the random-bottom control)."""
    context: int = 256
    """Tokens per window (BOS + context-1 tokens of the text)."""
    max_tokens: int = 4096
    """Use at most this many tokens of the text."""
    batch_size: int = 4
    """Windows per step."""
    seed: int = 0
    """Seed of the stitch's initialisation, the batch order and the random control."""
    dtype: Dtype = "float32"
    """Both models' dtype."""
    threads: int = 0
    """Torch CPU threads (0: torch's default)."""
    out: Path | None = None
    """Also copy summary.json, stitch.png, stitch.safetensors and report.md into this folder."""


def run_stitch(config: StitchConfig) -> int:
    """Train the stitch (and the control), measure the penalty, save the run folder."""
    import torch
    from tqdm import tqdm

    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.models import load_model
    from alignlab.runs import Run
    from alignlab.whitebox.surgery import (check_stitchable, heldout_loss, randomly_initialised, stitched_loss,
                                           train_stitch)

    for name in ("bottom", "top", "layer"):
        if getattr(config, name) is None:
            raise ValueError(f"{name} is missing: give --bottom MODEL --top MODEL --layer K --text FILE")
    if not 0 < config.held_out < 1:
        raise ValueError(f"held_out = {config.held_out}; give a fraction between 0 and 1, e.g. 0.25")
    if config.steps < 0 or config.lr <= 0:
        raise ValueError(f"steps = {config.steps}, lr = {config.lr}; give steps >= 0 and a positive lr")
    threads = _set_threads(config.threads)
    try:
        bottom, tokenizer = load_model(config.bottom, dtype=config.dtype, seed=config.seed)
        top, _ = load_model(config.top, dtype=config.dtype) if config.top != config.bottom else (bottom, None)
        check_stitchable(bottom, top, config.layer)
        windows = _windows(tokenizer, config.text, config.context, config.max_tokens)
        n_eval = max(1, round(len(windows) * config.held_out))
        if len(windows) - n_eval < 1:
            raise ValueError(f"the text makes {len(windows)} window(s) of {config.context} tokens; training and "
                             "held-out parts need one each: give a longer text or a smaller --context")
        train, held = windows[:-n_eval], windows[-n_eval:]
        with Run.create("surgery-stitch", config, seed=config.seed) as run:
            start = time.perf_counter()
            curves: dict[str, list[float]] = {}
            arms = [("stitch", bottom)]
            if config.control:
                arms.append(("random-bottom", randomly_initialised(bottom, config.seed + 1)))
            results = {}
            loss_top = heldout_loss(top, held, config.batch_size)
            for name, source in arms:
                curve = curves.setdefault(name, [])
                with tqdm(total=config.steps, desc=f"stitch ({name})", unit="step", file=sys.stderr) as bar:
                    def step(i: int, loss: float) -> None:
                        curve.append(loss)
                        run.log_metrics(i, arm=name, train_loss=loss)
                        bar.update()

                    stitch = train_stitch(source, top, train, config.layer, config.steps, config.lr,
                                          config.batch_size, config.normalize, config.init, config.seed, on_step=step)
                loss = stitched_loss(source, top, stitch, held, config.layer, config.batch_size)
                results[name] = {"loss": loss, "penalty": loss - loss_top}
                if name == "stitch":
                    from safetensors.torch import save_file

                    save_file({k: v.contiguous() for k, v in stitch.state_dict().items()},
                              str(run.path / "stitch.safetensors"),
                              metadata={"bottom": config.bottom, "top": config.top, "layer": str(config.layer),
                                        "normalize": str(config.normalize)})
            seconds = time.perf_counter() - start
            summary = {"bottom": config.bottom, "top": config.top, "layer": config.layer,
                       "loss_top": loss_top, **results, "train_windows": len(train), "held_out_windows": len(held),
                       "held_out_tokens": int(held[:, 1:].numel()), "seconds": round(seconds, 1)}
            atomic_write_json(run.path / "summary.json", summary)
            _plot_stitch(curves, loss_top, run.path / "stitch.png")
            atomic_write_text(run.path / "report.md", _stitch_report(config, summary))
            _copy_out(run.path, config.out, ["summary.json", "stitch.png", "stitch.safetensors", "report.md"])
            run.finish(penalty=results["stitch"]["penalty"],
                       control_penalty=results.get("random-bottom", {}).get("penalty"))
        print(_stitch_lines(summary))
        print(f"run {run.id} saved to {run.path}", file=sys.stderr)
        return 0
    finally:
        torch.set_num_threads(threads)


def _stitch_lines(summary: dict) -> str:
    lines = [f"top model alone:     held-out loss {summary['loss_top']:.4f} nats/token"]
    for name in ("stitch", "random-bottom"):
        if name in summary:
            lines.append(f"{name + ':':<20} held-out loss {summary[name]['loss']:.4f}, "
                         f"penalty {summary[name]['penalty']:+.4f}")
    return "\n".join(lines)


def _plot_stitch(curves: dict[str, list[float]], loss_top: float, path: Path) -> None:
    plt = _pyplot()
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


def _stitch_report(config: StitchConfig, summary: dict) -> str:
    return "\n".join([
        f"# Stitching {config.bottom} (layers 0..{config.layer - 1}) into {config.top} (from layer {config.layer})", "",
        f"Text `{config.text}`: {summary['train_windows']} windows to train the stitch, {summary['held_out_windows']} "
        f"held out ({summary['held_out_tokens']} tokens). {config.steps} Adam steps, lr {config.lr}, init "
        f"{config.init}, normalize {config.normalize}. {summary['seconds']} s.", "",
        "```", _stitch_lines(summary), "```", "",
        "Penalty = stitched held-out loss - the top model's own. The random-bottom control stitches a randomly "
        "initialised copy of the bottom model: a penalty well below the control's says the bottom model's "
        "representation is one the top model can use.", "", "![training curves](stitch.png)", ""])


# -- task vectors ---------------------------------------------------------------------------------

@dataclass
class TaskVectorConfig:
    """Task arithmetic (Ilharco et al. 2023): make, negate, add, analogise and apply task vectors."""

    action: Literal["make", "negate", "add", "analogy", "apply"] = field(metadata={"positional": True})
    """make: tau = finetuned - pretrained; negate: -tau; add: the sum; analogy: C + B - A; apply: pretrained + c * tau."""
    pretrained: str | None = None
    """The base model (make, apply): a name or folder."""
    finetuned: str | None = None
    """The fine-tuned model (make): a model folder, or a LoRA policy folder (merged into its base first)."""
    vectors: list[Path] = field(default_factory=list)
    """Task vector files: one (negate, apply), two or more (add), or A B C in that order (analogy)."""
    coefficient: float | None = None
    """apply: the scaling coefficient c (omit it and give --choose-on to pick it)."""
    choose_on: Path | None = None
    """apply: a held-out file to choose c on (.txt or .jsonl with 'text'; with --reward, .jsonl with 'prompt')."""
    coefficients: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    """apply: the values of c to try with --choose-on (negative values move away from the task)."""
    reward: str | None = None
    """apply: choose c by mean reward of greedy completions instead of held-out loss (reward model folder, run id or module:function)."""
    max_new_tokens: int = 48
    """apply with --reward: tokens generated per prompt."""
    max_prompts: int = 32
    """apply with --reward: use at most this many prompts."""
    context: int = 512
    """Tokens per window of held-out text."""
    max_tokens: int = 4096
    """Use at most this many tokens of held-out text."""
    out: Path | None = None
    """Where to write the result: a .safetensors task vector (make, negate, add, analogy) or a model folder (apply)."""


def _need(config: TaskVectorConfig, *names: str) -> None:
    for name in names:
        if getattr(config, name) in (None, []):
            raise ValueError(f"task-vector {config.action} needs --{name.replace('_', '-')}")


def _vector_count(config: TaskVectorConfig, low: int, high: int | None, what: str) -> None:
    n = len(config.vectors)
    if n < low or (high is not None and n > high):
        raise ValueError(f"task-vector {config.action} takes {what} with --vectors; got {n}")


def run_task_vector(config: TaskVectorConfig) -> int:
    """Do the action, save the vector (or the edited model), write the run folder."""
    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.runs import Run
    from alignlab.whitebox import surgery as S

    with Run.create("surgery-task-vector", config) as run:
        summary: dict = {"action": config.action}
        lines: list[str] = []
        meta = {"action": config.action}
        model = None
        if config.action == "make":
            _need(config, "pretrained", "finetuned")
            from alignlab.models import load_model

            model, _ = load_model(config.pretrained, dtype="float32")
            finetuned, _ = load_model(config.finetuned, dtype="float32")
            tau = S.task_vector(model, finetuned)
            del finetuned
            meta |= {"pretrained": config.pretrained, "finetuned": config.finetuned}
        elif config.action in ("negate", "add", "analogy"):
            low, high, what = {"negate": (1, 1, "one file"), "add": (2, None, "two or more files"),
                               "analogy": (3, 3, "three files, A B C")}[config.action]
            _vector_count(config, low, high, what)
            taus = [S.load_task_vector(p)[0] for p in config.vectors]
            tau = {"negate": lambda: S.negate(taus[0]), "add": lambda: S.add(*taus),
                   "analogy": lambda: S.analogy(*taus)}[config.action]()
            meta |= {"inputs": [str(p) for p in config.vectors]}
        else:
            return _apply(config, run)
        by_layer = S.norms_by_layer(tau, model)
        summary |= {"tensors": len(tau), "parameters": sum(t.numel() for t in tau.values()),
                    "norm": math.sqrt(sum(t.double().pow(2).sum().item() for t in tau.values())),
                    "norm_by_block": by_layer, **meta}
        S.save_task_vector(tau, run.path / "task_vector.safetensors", meta)
        if config.out is not None:
            S.save_task_vector(tau, config.out, meta)
        atomic_write_json(run.path / "summary.json", summary)
        _plot_norms(by_layer, model is not None, run.path / "norms.png")
        relative = " (relative to the pretrained weights)" if model is not None else ""
        lines += [f"# Task vector: {config.action}", "", f"{summary['tensors']} tensors, "
                  f"{summary['parameters']:,} numbers, norm {summary['norm']:.4g}.", "",
                  f"Norm by block{relative}:", "", "| block | norm |", "|---|---|",
                  *[f"| {k} | {v:.4g} |" for k, v in by_layer.items()], "", "![norms](norms.png)", ""]
        atomic_write_text(run.path / "report.md", "\n".join(lines))
        run.finish(norm=summary["norm"])
    print(f"task vector: {summary['tensors']} tensors, norm {summary['norm']:.4g}"
          + (f", written to {config.out}" if config.out else ""))
    print(f"run {run.id} saved to {run.path}", file=sys.stderr)
    return 0


def _apply(config: TaskVectorConfig, run) -> int:
    """apply: pretrained + c * tau, with c given or chosen on a held-out file."""
    from tqdm import tqdm

    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.models import load_model
    from alignlab.whitebox import surgery as S

    _need(config, "pretrained")
    _vector_count(config, 1, 1, "one file")
    if config.coefficient is None and config.choose_on is None:
        raise ValueError("task-vector apply needs --coefficient C or --choose-on FILE (to pick C from --coefficients)")
    model, tokenizer = load_model(config.pretrained, dtype="float32")
    tau, meta = S.load_task_vector(config.vectors[0])
    summary: dict = {"action": "apply", "pretrained": config.pretrained, "vector": str(config.vectors[0]),
                     "vector_metadata": meta}
    rows: list[dict] = []
    if config.choose_on is not None:
        metric, name, higher = _metric(config, tokenizer)
        coefficients = sorted(set(config.coefficients) | ({config.coefficient} if config.coefficient is not None else set()))
        with tqdm(total=len(coefficients), desc=f"coefficients ({name})", unit="c", file=sys.stderr) as bar:
            def done(row: dict) -> None:
                run.log_metrics(bar.n, coefficient=row["coefficient"], **{name: row["value"]})
                bar.update()

            best, rows = S.choose_coefficient(model, tau, coefficients, metric, higher, on_done=done)
        summary |= {"metric": name, "higher_is_better": higher, "table": rows, "best": best}
        coefficient = config.coefficient if config.coefficient is not None else best
        _plot_coefficients(rows, name, coefficient, run.path / "coefficients.png")
    else:
        coefficient = config.coefficient
    summary["coefficient"] = coefficient
    if config.out is not None:
        S.apply_task_vector(model, tau, coefficient)
        model.config.name_or_path = str(config.out)
        model.save_pretrained(str(config.out))
        tokenizer.save_pretrained(str(config.out))
        summary["out"] = str(config.out)
    atomic_write_json(run.path / "summary.json", summary)
    lines = [f"# Task vector applied: {config.pretrained} + {coefficient:g} x {config.vectors[0]}", ""]
    if rows:
        lines += [f"Chosen on `{config.choose_on}` by {summary['metric']} "
                  f"({'higher' if summary['higher_is_better'] else 'lower'} is better): best c = {summary['best']:g}.",
                  "", f"| c | {summary['metric']} |", "|---|---|",
                  *[f"| {r['coefficient']:g} | {r['value']:.4f} |" for r in rows], "",
                  "![coefficients](coefficients.png)", ""]
    if config.out is not None:
        lines.append(f"Edited model saved to `{config.out}`.")
    atomic_write_text(run.path / "report.md", "\n".join(lines) + "\n")
    run.finish(coefficient=coefficient)
    if rows:
        print("\n".join(f"c = {r['coefficient']:>6g}   {summary['metric']} {r['value']:.4f}" for r in rows))
    print(f"coefficient {coefficient:g}" + (f"; edited model saved to {config.out}" if config.out else
                                            " (give --out FOLDER to save the edited model)"))
    print(f"run {run.id} saved to {run.path}", file=sys.stderr)
    return 0


def _metric(config: TaskVectorConfig, tokenizer):
    """(metric(model) -> float, its name, whether higher is better) for choosing the coefficient."""
    from alignlab.whitebox.surgery import heldout_loss

    if config.reward is None:
        windows = _windows(tokenizer, config.choose_on, config.context, config.max_tokens, "choose_on")
        return (lambda model: heldout_loss(model, windows)), "held-out loss", False
    from alignlab.data.tasks import read_prompts_file
    from alignlab.models import SampleConfig, sample
    from alignlab.train.reward_fn import load_reward

    prompts = [p.text for p in read_prompts_file(config.choose_on)][:config.max_prompts]
    reward, _ = load_reward(config.reward)
    settings = SampleConfig(max_new_tokens=config.max_new_tokens, temperature=0.0)

    def mean_reward(model) -> float:
        completions = sample(model, tokenizer, prompts, settings)
        return reward(prompts, [c.text for c in completions]).float().mean().item()

    return mean_reward, "mean reward", True


def _plot_norms(by_block: dict[str, float], relative: bool, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(by_block)), 3.6))
    ax.bar(range(len(by_block)), list(by_block.values()))
    ax.set_xticks(range(len(by_block)), list(by_block), rotation=90, fontsize=7)
    ax.set_ylabel("||tau|| / ||theta||" if relative else "||tau||")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_coefficients(rows: list[dict], name: str, chosen: float, path: Path) -> None:
    plt = _pyplot()
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


SURGERY_TASK_VECTOR = Command("surgery task-vector", "task arithmetic: make, negate, add, analogy, apply",
                              TaskVectorConfig, run_task_vector, description=TaskVectorConfig.__doc__)
SURGERY_LAYERS = Command("surgery layers", "delete and swap layers, measured on held-out text",
                         LayersConfig, run_layers, description=LayersConfig.__doc__)
SURGERY_STITCH = Command("surgery stitch", "stitch two models' layers with a trained linear map",
                         StitchConfig, run_stitch, description=StitchConfig.__doc__)
