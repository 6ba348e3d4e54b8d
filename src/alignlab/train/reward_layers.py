"""`alignlab reward layers`: which layer should a reward head read?

A frozen backbone's layers carry different things: early layers the words, late ones the next
token. A linear head on the mean of a middle layer's states often recovers a judge's preferences
better than one on the final states (docs/experiment.md measures it on the main job's data). This
command chooses the layer from the labels alone, without a gold judge: for each candidate layer,
a head (standardised features, L2 penalty, the same objective `reward train --mode head` fits)
is fitted on all but one fold of the prompts and scored on the held-out fold's choices, k times.
The layer with the lowest held-out negative log-likelihood is the choice (a proper score: with
noisy labels accuracy is coarse); accuracy is reported beside it with a prompt-clustered 95%
interval.

Each layer costs one pass of the backbone up to that layer over the data's texts (features are
computed once per layer, then every fold reuses them).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from alignlab.cli import Command


@dataclass
class RewardLayersConfig:
    """Choose the layer a reward head reads by cross-validation over prompts."""

    data: str = ""
    """Feedback files, comma-separated (any kinds that make choices: pairs, rankings, ...; ratings are not used)."""
    model: str = "gemma-3-270m"
    """The backbone: 'gemma-3-270m', 'tiny' or a local Hugging Face folder."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Backbone precision (the heads are fitted in float32)."""
    pooling: Literal["last", "mean"] = "mean"
    """What the head reads: the mean over the response's tokens, or the state at the last token."""
    layers: str = ""
    """Candidate layers, 1-based: '6-14', '3,6,9,12' (default: every third layer and the last)."""
    folds: int = 5
    """Folds of the prompts (every choice of a prompt falls in one fold)."""
    head_l2: float = 1.0
    """L2 penalty on the head's weights: mean loss + head_l2 * ||w||^2, as `reward train --head-l2`."""
    max_length: int = 256
    """Tokens of prompt + response kept."""
    betas: str = ""
    """Override rationalities per kind, e.g. 'thumbs=0.3'."""
    skip_bad: bool = False
    """Skip malformed lines of the data files (counted and reported)."""
    seed: int = 0
    """Seed of the fold assignment."""
    json: bool = False
    """Print the table as one JSON object."""

    policy_samples: Path | None = None
    """JSONL of prompt/completion samples of the policy, to ground demonstrations (without it they are not used)."""


def parse_layers(text: str, depth: int) -> list[int]:
    """'6-14' or '3,6,9' -> sorted layer numbers in 1..depth (default: every third layer and the last)."""
    if not text.strip():
        return sorted(set(range(3, depth + 1, 3)) | {depth})
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                out.update(range(low, high + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"layers: '{part}' is not a layer number or a range such as 6-14") from None
    bad = sorted(x for x in out if not 1 <= x <= depth)
    if bad or not out:
        raise ValueError(f"layers: {bad or text!r} outside 1..{depth} (the backbone has {depth} decoder layers)")
    return sorted(out)


def prompt_folds(prompts: list[str], folds: int, seed: int) -> list[int]:
    """The fold of each item: prompts in a seeded order, dealt round-robin (a prompt's items together)."""
    unique = sorted(set(prompts))
    if len(unique) < folds:
        raise ValueError(f"{len(unique)} distinct prompts cannot fill {folds} folds; lower --folds or add data")
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    fold_of = {unique[j]: i % folds for i, j in enumerate(order)}
    return [fold_of[p] for p in prompts]


def fit_head(features: torch.Tensor, items, rows: list[int], head_l2: float) -> tuple[torch.nn.Linear, torch.Tensor]:
    """A linear head on features standardised over the rows' texts: mean choice NLL + head_l2 ||w||^2,
    full batch, L-BFGS (the objective is convex: the optimum, not a schedule's stopping point).
    Returns the head and the standardised features it reads."""
    from alignlab.train.reward import batch_losses

    used = sorted({t for r in rows for t in items.options[r]})
    mean, std = features[used].mean(0), features[used].std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    # float64: in float32 the loss's last changes fall below L-BFGS's tolerance_change before the
    # gradient reaches zero, so the fit stopped short of the optimum on some CPUs
    z = ((features - mean) / std).double()
    head = torch.nn.Linear(z.shape[1], 1, dtype=torch.float64)
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    options = _Losses()
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=500, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        losses, _ = batch_losses(lambda texts: head(z[texts]), items, rows, 0.0, options)
        loss = losses.mean() + head_l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head, z


class _Losses:
    """The loss options batch_losses reads: the plain likelihood."""

    label_noise = 0.0
    center = 0.0


@torch.no_grad()
def held_out(head, z: torch.Tensor, items, rows: list[int]) -> tuple[list[float], list[float]]:
    """Per choice of ``rows``: its NLL and 1 / 0.5 / 0 for the chosen option scored above / tied
    with / below the best other."""
    from alignlab.train.reward import batch_losses

    losses, _ = batch_losses(lambda texts: head(z[texts]), items, rows, 0.0, _Losses())
    scores = head(z)[:, 0]
    correct = []
    for r in rows:
        opts = [float(scores[t]) for t in items.options[r]]
        c = int(items.chosen[r])
        if c >= len(opts):  # the reference point was chosen: no option to rank
            correct.append(math.nan)
            continue
        best_other = max(v for i, v in enumerate(opts) if i != c)
        correct.append(1.0 if opts[c] > best_other else 0.5 if opts[c] == best_other else 0.0)
    return losses[:, 0].tolist(), correct


def scan_layers(config: RewardLayersConfig, progress: bool = True) -> dict:
    """Cross-validated held-out NLL and accuracy of a head on each candidate layer."""
    from alignlab.models import load_model
    from alignlab.pressure.stats import clustered_accuracy
    from alignlab.train.reward import build_items, cached_features, load_choices
    from alignlab.train.reward_model import RewardModel

    if config.folds < 2:
        raise ValueError(f"folds is {config.folds}; cross-validation needs at least 2")
    if config.head_l2 < 0:
        raise ValueError(f"head_l2 is {config.head_l2}; it must be 0 or more")
    choice_set, n_records = load_choices(config)
    lm, tokenizer = load_model(config.model, dtype=config.dtype)
    rm = RewardModel(lm, tokenizer, max_length=config.max_length, pooling=config.pooling).eval()
    depth = len(rm.body.layers)
    layers = parse_layers(config.layers, depth)
    items = build_items(choice_set, rm)
    rows = [r for r in range(len(items.options))
            if math.isnan(float(items.rating[r])) and len(items.options[r]) >= 2]
    if not rows:
        raise ValueError(f"the data ({config.data}) holds no choices between two or more responses; "
                         "ratings alone cannot choose a layer")
    fold = prompt_folds([items.prompts[r] for r in rows], config.folds, config.seed)
    table = []
    for layer in layers:
        rm.layer = layer  # read by the body's cut (layer == depth: the final states after the norm)
        if progress:
            print(f"layer {layer}: features of {len(items.ids)} texts", file=sys.stderr)
        features = cached_features(rm, items.ids, progress=progress)
        nll, correct, groups = [], [], []
        for k in range(config.folds):
            train = [r for r, f in zip(rows, fold) if f != k]
            test = [r for r, f in zip(rows, fold) if f == k]
            head, z = fit_head(features, items, train, config.head_l2)
            fold_nll, fold_correct = held_out(head, z, items, test)
            nll += fold_nll
            for r, c in zip(test, fold_correct):
                if not math.isnan(c):
                    correct.append(c), groups.append(items.prompts[r])
        accuracy = (clustered_accuracy(correct, groups).to_dict() if len(set(groups)) > 1
                    else {"value": sum(correct) / max(1, len(correct)), "ci": [math.nan, math.nan]})
        table.append({"layer": layer, "held_out_nll": sum(nll) / len(nll), "accuracy": accuracy["value"],
                      "accuracy_ci": list(accuracy["ci"])})
    best = min(table, key=lambda row: row["held_out_nll"])
    return {"layers": table, "best": best["layer"], "choices": len(rows), "records": n_records,
            "prompts": len(set(items.prompts[r] for r in rows)), "folds": config.folds, "pooling": config.pooling,
            "head_l2": config.head_l2, "depth": depth, "model": config.model}


def run_layers(config: RewardLayersConfig) -> int:
    result = scan_layers(config, progress=sys.stderr.isatty())
    if config.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['choices']} choices over {result['prompts']} prompts, {result['folds']}-fold cross-validation "
          f"by prompt; head on the {result['pooling']} of each layer's states, L2 {result['head_l2']:g}")
    print(f"{'layer':>5}  {'held-out NLL':>12}  {'accuracy (95% CI, clustered by prompt)':<40}")
    for row in result["layers"]:
        low, high = row["accuracy_ci"]
        mark = "  <- lowest NLL" if row["layer"] == result["best"] else ""
        print(f"{row['layer']:>5}  {row['held_out_nll']:>12.4f}  {row['accuracy']:.3f} ({low:.3f}-{high:.3f}){mark}")
    print(f"read layer {result['best']}: alignlab reward train --mode head --pooling {result['pooling']} "
          f"--layer {result['best']} --standardize --head-l2 {result['head_l2']:g} ...")
    return 0


REWARD_LAYERS = Command("reward layers", "choose the layer a reward head reads, by cross-validation over prompts",
                        RewardLayersConfig, run_layers)
