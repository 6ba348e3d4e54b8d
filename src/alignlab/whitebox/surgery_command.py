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


def _set_threads(threads: int) -> int:
    import torch

    if threads < 0:
        raise ValueError(f"threads = {threads}; accepted: 0 (torch's default) or more")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    return before


def _copy_out(run_path: Path, out: Path | None, names: list[str]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (run_path / name).exists():
            shutil.copyfile(run_path / name, out / name)


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


def run_layers(config: LayersConfig) -> int:
    """Sweep the interventions, print the per-layer table, save the run folder."""
    import torch
    from tqdm import tqdm

    from alignlab.fileio import atomic_write_json, atomic_write_text
    from alignlab.models import load_model
    from alignlab.runs import Run
    from alignlab.whitebox import surgery_report as R
    from alignlab.whitebox.surgery import check_layer, decoder_layers, heldout_windows, layer_sweep

    threads = _set_threads(config.threads)
    try:
        model, tokenizer = load_model(config.model, dtype=config.dtype)
        windows = heldout_windows(tokenizer, config.text, config.context, config.max_tokens)
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
            atomic_write_text(run.path / "layers.csv", R.layers_csv(rows))
            R.plot_layers(rows, run.path / "surgery-layers.png", title=f"{config.model}: {summary['tokens']} tokens")
            atomic_write_text(run.path / "report.md", R.layers_report(config, summary))
            _copy_out(run.path, config.out, ["summary.json", "layers.csv", "surgery-layers.png", "report.md"])
            run.finish(seconds=round(seconds, 1), interventions=len(rows))
        print(R.layers_table(rows))
        print(f"run {run.id} saved to {run.path}", file=sys.stderr)
        return 0
    finally:
        torch.set_num_threads(threads)


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
    from alignlab.whitebox import surgery_report as R
    from alignlab.whitebox.surgery import (check_stitchable, heldout_loss, heldout_windows, randomly_initialised,
                                           stitched_loss, train_stitch)

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
        windows = heldout_windows(tokenizer, config.text, config.context, config.max_tokens)
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
            R.plot_stitch(curves, loss_top, run.path / "stitch.png")
            atomic_write_text(run.path / "report.md", R.stitch_report(config, summary))
            _copy_out(run.path, config.out, ["summary.json", "stitch.png", "stitch.safetensors", "report.md"])
            run.finish(penalty=results["stitch"]["penalty"],
                       control_penalty=results.get("random-bottom", {}).get("penalty"))
        print(R.stitch_lines(summary))
        print(f"run {run.id} saved to {run.path}", file=sys.stderr)
        return 0
    finally:
        torch.set_num_threads(threads)


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
    from alignlab.whitebox import surgery_report as R

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
        R.plot_norms(by_layer, model is not None, run.path / "norms.png")
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
    from alignlab.whitebox import surgery_report as R

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
        R.plot_coefficients(rows, name, coefficient, run.path / "coefficients.png")
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
    """(metric(model) -> float, its name, whether higher is better) to choose the coefficient by:
    the held-out loss of --choose-on's text, or with --reward (a reward model folder, run id or
    module:function) the mean reward of greedy completions of its prompts."""
    if config.reward is None:
        from alignlab.whitebox.surgery import heldout_loss, heldout_windows

        windows = heldout_windows(tokenizer, config.choose_on, config.context, config.max_tokens, "choose_on")
        return (lambda model: heldout_loss(model, windows)), "held-out loss", False
    from alignlab.data.tasks import read_prompts_file
    from alignlab.models import SampleConfig, sample
    from alignlab.train.reward_fn import load_reward

    prompts = [p.text for p in read_prompts_file(config.choose_on)][:config.max_prompts]
    score, _ = load_reward(config.reward)
    settings = SampleConfig(max_new_tokens=config.max_new_tokens, temperature=0.0)

    def mean_reward(model) -> float:
        completions = sample(model, tokenizer, prompts, settings)
        return score(prompts, [c.text for c in completions]).float().mean().item()

    return mean_reward, "mean reward", True


SURGERY_TASK_VECTOR = Command("surgery task-vector", "task arithmetic: make, negate, add, analogy, apply",
                              TaskVectorConfig, run_task_vector, description=TaskVectorConfig.__doc__)
SURGERY_LAYERS = Command("surgery layers", "delete and swap layers, measured on held-out text",
                         LayersConfig, run_layers, description=LayersConfig.__doc__)
SURGERY_STITCH = Command("surgery stitch", "stitch two models' layers with a trained linear map",
                         StitchConfig, run_stitch, description=StitchConfig.__doc__)
