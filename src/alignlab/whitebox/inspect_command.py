"""`alignlab inspect`: the white-box monitors, once, on a saved model and a data file.

    alignlab inspect --model runs/<id>/policy --data texts.txt
    alignlab inspect --model gemma-3-270m --data demos.jsonl --monitor audit,clip,curvature --blocks layers

The loss is the model's next-token loss on the data's texts (a .txt file: one text per
paragraph; .jsonl: a 'text' field, or the prompt and response of alignlab/TRL feedback
records, scored on the response). Each batch is one "step": the audit runs on each, gradient
shares (the clip monitor) are recorded for each with clipping at --max-grad-norm, curvature is
measured on each. The run folder's monitors/ gets the same files a monitored training run does.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alignlab.cli import Command


@dataclass
class InspectConfig:
    """Run the white-box monitors on a saved model and a data file."""

    data: Path | None = None
    """Texts to compute the loss on: .txt (paragraphs separated by blank lines) or .jsonl ('text', or prompt + completion/chosen)."""
    model: str = "gemma-3-270m"
    """The model: 'gemma-3-270m', 'tiny', a policy or model folder."""
    dtype: Literal["float32", "float64"] = "float32"
    """Precision of the weights for the checks (float64 makes finite differences and eigenvalues sharper; the tiny model only, in practice)."""
    monitor: str = "audit,clip,curvature"
    """Comma-separated monitors: audit, clip (gradient shares), curvature, or 'all'."""
    batches: int = 2
    """Batches of the data to inspect (each is one step of the monitors)."""
    batch_size: int = 4
    """Texts per batch."""
    max_length: int = 128
    """Tokens kept per text."""
    max_grad_norm: float = 1.0
    """The clipping threshold the gradient shares are judged against."""
    sensitivity: int = 4
    """Parameter tensors whose loss sensitivity is checked by finite differences."""
    blocks: str = ""
    """Curvature per block as well as globally: 'layers' (one block per transformer layer) or comma-separated name prefixes."""
    curvature_iterations: int = 20
    """Power-iteration steps for the top Hessian eigenvalue."""
    trace_samples: int = 8
    """Hutchinson samples for the Hessian trace."""
    spectrum_steps: int = 16
    """Lanczos steps for the spectral density (0: none)."""
    seed: int = 0
    """Seed for the random directions and probe vectors."""


def read_texts(path: Path) -> list[tuple[str, str]]:
    """(context, scored text) pairs from a .txt or .jsonl file."""
    from alignlab.data.formats import read_feedback

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data {path} does not exist")
    if path.suffix == ".txt":
        texts = [("", block.strip()) for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    else:
        first = path.read_text(encoding="utf-8").lstrip().split("\n", 1)[0]
        try:
            has_text = "text" in json.loads(first) if first else False
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line 1: not valid JSON ({err.msg})") from None
        if has_text:
            texts = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row.get("text"), str) or not row["text"].strip():
                        raise ValueError(f"{path} line {number}: field 'text' is missing or empty")
                    texts.append(("", row["text"]))
        else:
            texts = []
            for record in read_feedback(path).records:
                response = getattr(record, "completion", None) or getattr(record, "chosen", None)
                if isinstance(response, str) and response.strip():
                    texts.append((record.prompt, response))
    if not texts:
        raise ValueError(f"{path} holds no texts; give paragraphs (.txt) or JSON lines with 'text' or prompt and response")
    return texts


def batch_loss_fns(model, tokenizer, texts: list[tuple[str, str]], batches: int, batch_size: int, max_length: int):
    """One closure per batch: the mean next-token loss over the scored tokens."""
    import torch

    from alignlab.train.policy import LogProbs, batch_tensors, make_example

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scorer = LogProbs(model)
    fns = []
    for b in range(batches):
        part = [texts[(b * batch_size + i) % len(texts)] for i in range(batch_size)]
        examples = [make_example(tokenizer, context, text, max_length, False) for context, text in part]
        ids, mask, target = batch_tensors(examples, pad, torch.device("cpu"))
        count = float(target.sum())
        fns.append(lambda ids=ids, mask=mask, target=target, count=count: -(scorer(ids, mask, target).sum()) / count)
    return fns


def block_prefixes(model, blocks: str) -> list[str]:
    if not blocks:
        return []
    if blocks == "layers":
        names = [n for n, _ in model.named_parameters()]
        prefixes = []
        for name in names:
            parts = name.split(".")
            if "layers" in parts:
                i = parts.index("layers")
                prefix = ".".join(parts[:i + 2]) + "."
                if prefix not in prefixes:
                    prefixes.append(prefix)
        return prefixes
    return [b.strip() for b in blocks.split(",") if b.strip()]


def run_inspect(config: InspectConfig) -> int:
    import torch
    from tqdm import tqdm

    from alignlab.models import load_model
    from alignlab.models.scoring import plain_autograd
    from alignlab.runs import Run
    from alignlab.whitebox.monitors import MonitorSettings, WhiteboxMonitor, flag_table, parse_monitors

    if config.data is None:
        raise ValueError("give --data FILE: the texts whose loss the monitors differentiate")
    if config.batches < 1 or config.batch_size < 1:
        raise ValueError("--batches and --batch-size must be at least 1")
    names = parse_monitors(config.monitor)
    texts = read_texts(config.data)
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config.model, dtype="float32")
    if config.dtype == "float64":
        model = model.double()
    model.eval()  # the checks compare passes with each other: no dropout between them
    for p in model.parameters():
        p.requires_grad_(True)
    parameters = {n: p for n, p in model.named_parameters()}
    blocks = block_prefixes(model, config.blocks)
    unknown = [b for b in blocks if not any(n.startswith(b) for n in parameters)]
    if unknown:
        raise ValueError(f"--blocks: no parameter name starts with {', '.join(unknown)}")
    monitor = WhiteboxMonitor(MonitorSettings(names, 1, config.max_grad_norm, config.sensitivity,
                                              curvature_iterations=config.curvature_iterations,
                                              trace_samples=config.trace_samples,
                                              spectrum_steps=config.spectrum_steps, blocks=tuple(blocks)))
    fns = batch_loss_fns(model, tokenizer, texts, config.batches, config.batch_size, config.max_length)
    optimizer = torch.optim.SGD(parameters.values(), lr=0.0)  # curvature's stability ratio needs a rate: none here
    from alignlab.train.hooks import StepContext
    from alignlab.train.loop import global_norm

    with Run.create("inspect", config, seed=config.seed) as run:
        for step, fn in enumerate(tqdm(fns, desc="inspect", unit="batch", disable=not sys.stderr.isatty()), start=1):
            model.zero_grad(set_to_none=True)
            with plain_autograd(model):
                loss = fn()
                loss.backward()
            grads = [p.grad for p in parameters.values() if p.grad is not None]
            norm = float(global_norm(grads))
            ctx = StepContext(step, model, loss.detach(), optimizer, parameters, grad_norm=norm,
                              clipped=config.max_grad_norm > 0 and norm > config.max_grad_norm, loss_fn=fn)
            monitor.after_backward(ctx)
            run.log_metrics(step, loss=float(loss.detach()), grad_norm=norm, **ctx.metrics)
        flags = monitor.finish(run)
        run.finish(flags=len(flags), batches=len(fns))
    print("\n".join(flag_table(flags)))
    for row in monitor.curvature:
        print(f"batch {row['step']}: top Hessian eigenvalue {row.get('hess/lmax/all', float('nan')):.4g}, "
              f"trace {row.get('hess/trace/all', float('nan')):.4g}")
    print(f"report: {run.path / 'monitors' / 'report.md'}", file=sys.stderr)
    return 0


INSPECT = Command("inspect", "white-box monitors on a saved model and a data file", InspectConfig, run_inspect)
