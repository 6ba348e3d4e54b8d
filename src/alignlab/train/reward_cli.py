"""`alignlab reward train | eval | score`."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from alignlab.cli import Command
from alignlab.train.reward import RewardTrainConfig, train_reward


def run_train(config: RewardTrainConfig) -> int:
    from alignlab.whitebox.monitors import hooks_for

    run = train_reward(config, progress=sys.stderr.isatty(), hooks=hooks_for(config))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under a multi-process launcher only the main process reports
    status = run.path / "summary.json"
    if status.exists():
        summary = json.loads(status.read_text())
        acc = summary.get("eval/accuracy")
        print(f"reward model saved to {summary['model']}"
              + (f"; held-out accuracy {acc:.1%} on {summary.get('eval/choices')} choices" if acc is not None else ""))
    print(f"run {run.id}: {run.path}", file=sys.stderr)
    return 0


@dataclass
class RewardEvalConfig:
    """Evaluate a saved reward model on feedback files."""

    model: Path | None = None
    """A saved reward model folder (a reward run's 'model' folder, or a run id)."""
    data: str = ""
    """Feedback files to evaluate on, comma-separated."""
    batch_size: int = 8
    """Responses scored together."""
    skip_bad: bool = False
    """Skip malformed lines of the data files (counted and reported)."""
    json: bool = False
    """Print the results as one JSON object."""


def run_eval(config: RewardEvalConfig) -> int:
    from alignlab.data.formats import read_feedback
    from alignlab.feedback.choices import to_choices
    from alignlab.runs import Run
    from alignlab.train.reward_eval import evaluate_reward_model, format_eval, plot_reliability
    from alignlab.train.reward_model import load_reward_model, resolve_reward_model

    folder = resolve_reward_model(config.model)
    files = [Path(f.strip()) for f in config.data.split(",") if f.strip()]
    if not files:
        raise ValueError("give --data FILE[,FILE...] with feedback to evaluate on")
    records = [r for f in files for r in read_feedback(f, skip_bad=config.skip_bad).records]
    rm = load_reward_model(folder)
    result = evaluate_reward_model(rm, to_choices(records), config.batch_size, progress=sys.stderr.isatty())
    with Run.create("reward-eval", config) as run:
        run.log_metrics(0, **{"eval/accuracy": result.accuracy, "eval/ece": result.ece,
                              "eval/length_spearman": result.length_spearman})
        (run.path / "eval.json").write_text(json.dumps(result.to_dict(), indent=2))
        plot = plot_reliability(result, run.path / "reliability.png")
    if config.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_eval(result))
        print(f"reliability plot: {plot}")
    return 0


@dataclass
class RewardScoreConfig:
    """Score responses with a saved reward model."""

    model: Path | None = None
    """A saved reward model folder or a reward run id."""
    prompt: str = ""
    """The prompt."""
    response: str | None = None
    """One response to score."""
    file: Path | None = None
    """JSON lines with 'prompt' and 'completion' (or 'response') fields; prints one score per line."""
    batch_size: int = 8
    """Responses scored together."""
    json: bool = False
    """Print JSON lines (with the ensemble's spread) instead of plain numbers."""


def run_score(config: RewardScoreConfig) -> int:
    from alignlab.fileio import read_jsonl
    from alignlab.train.reward_model import load_reward_model, resolve_reward_model

    if config.file is not None:
        if not config.file.exists():
            raise FileNotFoundError(f"{config.file} does not exist")
        rows = read_jsonl(config.file)
        pairs = []
        for i, r in enumerate(rows, start=1):
            resp = r.get("completion", r.get("response"))
            if not isinstance(resp, str):
                raise ValueError(f"{config.file} row {i}: needs a string 'completion' (or 'response')")
            pairs.append((r.get("prompt", ""), resp))
    elif config.response is not None:
        pairs = [(config.prompt, config.response)]
    else:
        raise ValueError("give --response (and --prompt) or --file")
    rm = load_reward_model(resolve_reward_model(config.model))
    mean, std = rm.score([p for p, _ in pairs], [r for _, r in pairs], config.batch_size, progress=sys.stderr.isatty())
    for (p, r), m, s in zip(pairs, mean.tolist(), std.tolist()):
        print(json.dumps({"prompt": p, "response": r, "reward": m, "ensemble_std": s}) if config.json else f"{m:.4f}")
    return 0


REWARD_TRAIN = Command("reward train", "train a reward model from feedback files", RewardTrainConfig, run_train)
REWARD_EVAL = Command("reward eval", "evaluate a reward model on feedback files", RewardEvalConfig, run_eval)
REWARD_SCORE = Command("reward score", "score responses with a reward model", RewardScoreConfig, run_score)
