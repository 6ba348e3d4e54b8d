"""Evaluate a reward model on feedback it did not train on.

Held-out accuracy (overall and per kind), calibration (a reliability table and plot of
predicted against observed preference rates on two-option choices), agreement with each
annotator, the correlation of reward with response length (length bias), and, for an
ensemble, how disagreement relates to errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alignlab.train.reward_model import RewardModel


@dataclass
class RewardEval:
    accuracy: float
    choices: int
    by_kind: dict[str, float]
    by_annotator: dict[str, dict[str, float]]
    reliability: list[dict[str, float]]
    ece: float
    length_pearson: float
    length_spearman: float
    ensemble_std_mean: float | None
    ensemble_std_when_wrong: float | None
    ensemble_std_when_right: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def reliability_table(pred: np.ndarray, outcome: np.ndarray, bins: int = 10) -> tuple[list[dict], float]:
    """Bins of predicted P(first option chosen): mean prediction, observed rate, count; and the ECE."""
    rows, ece = [], 0.0
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (pred >= lo) & ((pred < hi) if hi < 1 else (pred <= hi))
        if not sel.any():
            continue
        mean_p, rate = float(pred[sel].mean()), float(outcome[sel].mean())
        rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "predicted": mean_p, "observed": rate, "count": int(sel.sum())})
        ece += sel.sum() / len(pred) * abs(mean_p - rate)
    return rows, float(ece)


@torch.no_grad()
def evaluate_reward_model(rm: RewardModel, choice_set, batch_size: int = 8, progress: bool = False) -> RewardEval:
    """All metrics on the choices of ``choice_set`` (from feedback.choices.to_choices)."""
    choices = choice_set.choices
    if not choices:
        raise ValueError("the evaluation data gave no choices (ratings and critiques alone cannot be scored for accuracy)")
    texts = sorted({(c.prompt, o) for c in choices for o in c.options})
    mean, std = rm.score([p for p, _ in texts], [r for _, r in texts], batch_size=batch_size, progress=progress)
    reward = {t: float(m) for t, m in zip(texts, mean)}
    spread = {t: float(s) for t, s in zip(texts, std)}
    reference = float(rm.normalize(torch.full((rm.ensemble,), rm.reference)).mean())
    correct, kinds, annotators, pred, outcome, spreads = [], [], [], [], [], []
    for c in choices:
        scores = [reward[(c.prompt, o)] for o in c.options] + ([reference] if c.reference else [])
        chosen = len(c.options) if c.chosen == -1 else c.chosen
        ok = all(scores[chosen] > s for i, s in enumerate(scores) if i != chosen)
        correct.append(ok), kinds.append(c.kind), annotators.append(c.annotator or "(none)")
        spreads.append(np.mean([spread[(c.prompt, o)] for o in c.options]))
        if len(scores) == 2:  # calibration on two-option choices: P(option 0) = sigmoid(beta * (r0 - r1))
            pred.append(1 / (1 + math.exp(-c.beta * (scores[0] - scores[1]))))
            outcome.append(1.0 if chosen == 0 else 0.0)
    correct_a = np.array(correct, dtype=float)
    by_kind = {k: float(correct_a[[i for i, x in enumerate(kinds) if x == k]].mean()) for k in sorted(set(kinds))}
    by_annotator = {}
    for a in sorted(set(annotators)):
        idx = [i for i, x in enumerate(annotators) if x == a]
        by_annotator[a] = {"accuracy": float(correct_a[idx].mean()), "choices": len(idx)}
    table, ece = reliability_table(np.array(pred), np.array(outcome)) if pred else ([], float("nan"))
    lengths = np.array([len(r) for _, r in texts], dtype=float)
    values = np.array([reward[t] for t in texts])
    pearson = float(np.corrcoef(lengths, values)[0, 1]) if len(texts) > 2 and lengths.std() > 0 and values.std() > 0 else float("nan")
    ens = rm.ensemble > 1
    spreads_a = np.array(spreads)
    return RewardEval(
        accuracy=float(correct_a.mean()), choices=len(choices), by_kind=by_kind, by_annotator=by_annotator,
        reliability=table, ece=ece, length_pearson=pearson, length_spearman=_spearman(lengths, values),
        ensemble_std_mean=float(spreads_a.mean()) if ens else None,
        ensemble_std_when_wrong=float(spreads_a[correct_a == 0].mean()) if ens and (correct_a == 0).any() else None,
        ensemble_std_when_right=float(spreads_a[correct_a == 1].mean()) if ens and (correct_a == 1).any() else None,
    )


def plot_reliability(result: RewardEval, path: Path) -> Path:
    """Reliability diagram: predicted vs observed preference rate per bin, with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfectly calibrated")
    if result.reliability:
        xs = [r["predicted"] for r in result.reliability]
        ys = [r["observed"] for r in result.reliability]
        sizes = [20 + 180 * r["count"] / max(x["count"] for x in result.reliability) for r in result.reliability]
        ax.plot(xs, ys, color="tab:blue")
        ax.scatter(xs, ys, s=sizes, color="tab:blue", label="reward model (size = count)", zorder=3)
    ax.set_xlabel("predicted P(first response preferred)")
    ax.set_ylabel("observed rate")
    ax.set_title(f"Calibration (ECE {result.ece:.3f}, accuracy {result.accuracy:.1%})")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_eval(result: RewardEval) -> str:
    """A readable text report."""
    lines = [f"accuracy {result.accuracy:.1%} on {result.choices} choices"]
    lines += [f"  {k:<14} {v:.1%}" for k, v in result.by_kind.items()]
    lines.append("agreement with each annotator:")
    lines += [f"  {a:<20} {v['accuracy']:.1%} ({v['choices']} choices)" for a, v in result.by_annotator.items()]
    lines.append(f"calibration (two-option choices): ECE {result.ece:.3f}")
    lines.append(f"  {'bin':<9} {'predicted':>9} {'observed':>9} {'count':>6}")
    lines += [f"  {r['bin']:<9} {r['predicted']:>9.3f} {r['observed']:>9.3f} {r['count']:>6}" for r in result.reliability]
    lines.append(f"length bias: Pearson {result.length_pearson:.3f}, Spearman {result.length_spearman:.3f} "
                 "(reward vs response length in characters)")
    if result.ensemble_std_mean is not None:
        lines.append(f"ensemble spread: mean {result.ensemble_std_mean:.3f}; on errors "
                     f"{result.ensemble_std_when_wrong}, on correct {result.ensemble_std_when_right}")
    return "\n".join(lines)
