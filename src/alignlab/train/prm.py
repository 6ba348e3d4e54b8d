"""Process (step-level) reward models: P(step is right | prompt, the steps so far).

A process reward model reads a response step by step and scores each step where it ends
(Lightman et al. 2023, "Let's Verify Step by Step"; Uesato et al. 2022). Here it is a linear
head on one layer of a frozen backbone, read over each step's own tokens: their mean (the
default: a frozen small backbone's single-token state carries little of a judgement, as the
outcome reward model's measurements in docs/experiment.md found) or the state at the step's
last token. The backbone is causal, so either has seen the prompt and the steps up to and
including this one, and no later step. Steps are tokenized one by one and concatenated after
the prompt, as TRL's PRM trainer does, so a step's span is an exact range of token positions.

Training is the penalised logistic regression of the step labels (True right, False wrong; null
labels are skipped) on standardised features, fitted to its optimum by L-BFGS (convex: no
learning rate or epoch count to tune), with whole prompts held out for evaluation.

A response's score aggregates its steps' probabilities (AGGREGATES): ``min`` (a chain is as
good as its worst step; Lightman et al. use the product and the minimum), ``product`` (the
probability that every step is right, if errors were independent), ``last`` (the final step's
probability, which has read the whole response) or ``mean``.

As a reward (train/reward_fn.py: best-of-n, RLOO, GRPO, PPO), a model cuts each response into
steps the way its training steps were cut (``split_by``, saved with it) and scores them all
(``score_responses``); GRPO's process supervision and PPO's dense rewards place a reward where
each step ends (``StepScores.ends``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch

from alignlab.cli import Command
from alignlab.fileio import atomic_write_json

FORMAT = 1
AGGREGATES = ("min", "product", "last", "mean")
POOLINGS = ("mean", "last")


def aggregate(probabilities: Sequence[float], how: str = "min") -> float:
    """One response score from its steps' probabilities of being right."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate {how!r}: use one of {', '.join(AGGREGATES)}")
    values = [float(p) for p in probabilities]
    if not values:
        raise ValueError("no steps to aggregate: a response has at least one step")
    if how == "min":
        return min(values)
    if how == "product":
        return math.prod(values)
    if how == "last":
        return values[-1]
    return sum(values) / len(values)


def step_increments(probabilities: Sequence[float], how: str = "min") -> list[float]:
    """What each step adds to its response's score: aggregate(p[:k+1]) - aggregate(p[:k]), the
    aggregate of no steps taken as 0. They sum to ``aggregate(p, how)``: placed at each step's end
    they give a return equal to the sequence-level score, so a dense reward changes where credit
    lands, not what is optimised. [0.9, 0.2, 0.8] by min gives [0.9, -0.7, 0.0]."""
    values = [float(p) for p in probabilities]
    totals = [0.0] + [aggregate(values[:k + 1], how) for k in range(len(values))]
    return [b - a for a, b in zip(totals, totals[1:])]


def step_ends(text: str, steps: Sequence[str]) -> list[int]:
    """The character offset in ``text`` just past each step's last character. Steps are read as a
    subsequence of the text in order, so a lossless split gives the running lengths and a split by
    marks skips the marks (a mark belongs to no step)."""
    ends, at = [], 0
    for step in steps:
        for ch in step:
            at = text.index(ch, at) + 1
        ends.append(at)
    return ends


@dataclass(frozen=True)
class StepScores:
    """One response as a process reward model scored it, step by step."""

    probabilities: list[float]
    """P(right) of each step (steps cut off by the model's length limit are left out)."""
    ends: list[int]
    """Where each step ends: the character offset in the response just past its last character."""
    aggregate: str
    """How ``score`` was made from ``probabilities``."""

    @property
    def score(self) -> float:
        """The response's score: its steps' probabilities aggregated."""
        return aggregate(self.probabilities, self.aggregate)

    def increments(self) -> list[float]:
        """Each step's share of ``score`` (step_increments), summing to it."""
        return step_increments(self.probabilities, self.aggregate)


@dataclass(frozen=True)
class StepRow:
    """A response encoded for a process reward model: token ids of prompt + steps, and each
    step's first and last position (both -1 for a step that fell in the length limit's cut)."""

    ids: list[int]
    starts: list[int]
    ends: list[int]


def encode_steps(tokenizer, prompt: str, steps: Sequence[str], max_length: int) -> StepRow:
    """Token ids of prompt + steps, each step tokenized on its own and appended, with each step's
    span. Over ``max_length`` the start is cut (BOS kept): a step that ends inside the cut gets
    -1, one that starts inside it starts at the first position kept."""
    from alignlab.models.tokens import encode_prompt
    from alignlab.models.scoring import encode_continuation

    ids = encode_prompt(tokenizer, prompt)
    starts, ends = [], []
    for step in steps:
        piece = encode_continuation(tokenizer, step)
        if not piece:
            raise ValueError(f"step {step!r} tokenizes to nothing; steps must hold text")
        starts.append(len(ids))
        ids += piece
        ends.append(len(ids) - 1)
    if len(ids) > max_length:
        cut = len(ids) - max_length + 1
        ids = ids[:1] + ids[cut:]
        kept = [(max(1, a - cut + 1), e - cut + 1) if e - cut + 1 >= 1 else (-1, -1) for a, e in zip(starts, ends)]
        starts, ends = [a for a, _ in kept], [e for _, e in kept]
    return StepRow(ids, starts, ends)


class ProcessRewardModel:
    """A frozen backbone read at one layer, and a linear head over standardised step features."""

    def __init__(self, lm, tokenizer, layer: int = 0, max_length: int = 1024, pooling: str = "mean"):
        from alignlab.train.reward_model import RewardModel

        # The reward model's body, cut at ``layer`` (its head is not used): one place knows how
        # a layer is read, including the final norm for layer 0.
        self.body_reader = RewardModel(lm, tokenizer, pooling="last", layer=layer, max_length=max_length).eval()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.layer = layer
        self.max_length = max_length
        # How a whole response is scored (a saved model sets both from its prm_config.json)
        self.aggregate = "min"
        self.split_by = "lines"
        width = self.body_reader.head.in_features
        self.head = torch.nn.Linear(width, 1)
        self.feature_mean = torch.zeros(width)
        self.feature_std = torch.ones(width)

    @property
    def depth(self) -> int:
        return len(self.body_reader.body.layers)

    @torch.no_grad()
    def step_features(self, rows: Sequence[StepRow], batch_size: int = 16,
                      progress: bool = False, cache: dict | None = None) -> list[torch.Tensor]:
        """Per encoded row: each step's features, (steps, D) float32 (the mean over the
        step's tokens, or its last token's state); a step cut off by the length limit gets NaN."""
        from tqdm import tqdm

        from alignlab.train.reward_model import pad_right

        cache = cache if cache is not None else {}
        reader = self.body_reader
        keys = [(tuple(row.ids), self.layer) for row in rows]
        todo = sorted({i for i, k in enumerate(keys) if k not in cache}, key=lambda i: len(rows[i].ids))
        for start in tqdm(range(0, len(todo), batch_size), desc="step features", unit="batch", disable=not progress,
                          leave=False):
            chunk = todo[start:start + batch_size]
            ids, mask = pad_right([rows[i].ids for i in chunk], reader.pad_id)
            hidden = reader.hidden_states(ids, mask).float()  # (B, T, D)
            for b, i in enumerate(chunk):
                cache[keys[i]] = hidden[b]
        out = []
        for row, key in zip(rows, keys):
            hidden = cache[key]
            feats = torch.full((len(row.ends), hidden.shape[-1]), math.nan)
            for j, (a, e) in enumerate(zip(row.starts, row.ends)):
                if e >= 0:
                    feats[j] = hidden[e] if self.pooling == "last" else hidden[a:e + 1].mean(0)
            out.append(feats)
        return out

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) step features -> (N,) logits of the step being right."""
        return self.head((features - self.feature_mean) / self.feature_std)[:, 0]

    @torch.no_grad()
    def score_steps(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]],
                    progress: bool = False) -> list[list[float]]:
        """P(right) of every step of every response (NaN for a step cut off by the length limit)."""
        rows = [encode_steps(self.tokenizer, p, s, self.max_length) for p, s in zip(prompts, step_lists)]
        return [torch.sigmoid(self.logits(f)).tolist() for f in self.step_features(rows, progress=progress)]

    def score(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]], how: str = "min",
              progress: bool = False) -> list[float]:
        """One score per response: its steps' probabilities aggregated (steps cut off are skipped)."""
        return [aggregate([p for p in probs if not math.isnan(p)] or [0.5], how)
                for probs in self.score_steps(prompts, step_lists, progress)]

    def score_responses(self, prompts: Sequence[str], responses: Sequence[str], how: str | None = None,
                        progress: bool = False) -> list[StepScores]:
        """Whole responses scored step by step: each cut into steps as the model's training steps
        were (``split_by``), every step scored, aggregated by ``how`` (default: the model's own).
        A step cut off by the length limit is left out (the last step never is). A response with
        no steps (empty) counts as one step of probability 0 ending at its end, so it scores 0
        under every aggregate: no step of it has been shown right, and a policy must not learn
        that saying nothing is safe."""
        from alignlab.data.steps import split_steps

        how = how or self.aggregate
        if how not in AGGREGATES:
            raise ValueError(f"aggregate {how!r}: use one of {', '.join(AGGREGATES)}")
        step_lists = [split_steps(r, self.split_by) for r in responses]
        todo = [i for i, steps in enumerate(step_lists) if steps]
        scored = self.score_steps([prompts[i] for i in todo], [step_lists[i] for i in todo], progress)
        probs = dict(zip(todo, scored))
        out = []
        for i, (response, steps) in enumerate(zip(responses, step_lists)):
            if i not in probs:
                out.append(StepScores([0.0], [len(response)], how))
                continue
            kept = [(p, end) for p, end in zip(probs[i], step_ends(response, steps)) if not math.isnan(p)]
            out.append(StepScores([p for p, _ in kept], [end for _, end in kept], how))
        return out


def fit_step_head(prm: ProcessRewardModel, features: torch.Tensor, labels: torch.Tensor, l2: float) -> dict:
    """Standardise over ``features`` (N, D) and fit the head to the optimum of mean BCE + l2 ||w||^2."""
    prm.feature_mean = features.mean(0)
    std = features.std(0) if len(features) > 1 else torch.ones(features.shape[1])
    prm.feature_std = torch.where(std > 1e-6, std, torch.ones_like(std))
    torch.nn.init.zeros_(prm.head.weight), torch.nn.init.zeros_(prm.head.bias)
    target = labels.float()
    optimizer = torch.optim.LBFGS(prm.head.parameters(), lr=1.0, max_iter=300, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(prm.logits(features), target)
        loss = loss + l2 * prm.head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(prm.logits(features), target))
    return {"train_loss": loss, "train_steps": len(labels)}


def save_prm(prm: ProcessRewardModel, folder: Path, base_model: str, aggregate_by: str,
             extra: dict | None = None, split_by: str = "lines") -> Path:
    """The head, its standardisation, what the backbone is and how a whole response is scored
    (aggregate, split) into ``folder`` (written whole, then renamed)."""
    import shutil

    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.saving")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({"weight": prm.head.weight.detach().contiguous(), "bias": prm.head.bias.detach().contiguous(),
               "feature_mean": prm.feature_mean.contiguous(), "feature_std": prm.feature_std.contiguous()},
              str(tmp / "prm_head.safetensors"))
    atomic_write_json(tmp / "prm_config.json", {"format": FORMAT, "kind": "process_reward_model",
                                                "base_model": base_model, "layer": prm.layer,
                                                "pooling": prm.pooling,
                                                "max_length": prm.max_length, "aggregate": aggregate_by,
                                                "split_by": split_by,
                                                **(extra or {})})
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def resolve_prm(ref: str | Path) -> Path:
    """A process reward model folder from a path, a run folder or a run id."""
    path = Path(ref)
    for candidate in (path, path / "model"):
        if (candidate / "prm_config.json").exists():
            return candidate
    from alignlab.runs import find_run

    try:
        run = find_run(str(ref))
    except LookupError:
        raise FileNotFoundError(f"{ref}: not a process reward model folder (no prm_config.json) nor a run id; "
                                "give the folder `alignlab prm train` printed, or its run id") from None
    if not (run.path / "model" / "prm_config.json").exists():
        raise FileNotFoundError(f"run {run.id} holds no process reward model (no model/prm_config.json)")
    return run.path / "model"


def load_prm(ref: str | Path, dtype: str = "float32") -> ProcessRewardModel:
    import json

    from safetensors.torch import load_file

    from alignlab.models import load_model

    folder = resolve_prm(ref)
    config = json.loads((folder / "prm_config.json").read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{folder}: process reward model format {config.get('format')}, this alignlab reads {FORMAT}")
    lm, tokenizer = load_model(config["base_model"], dtype=dtype)
    prm = ProcessRewardModel(lm, tokenizer, layer=config["layer"], max_length=config["max_length"],
                             pooling=config.get("pooling", "mean"))
    tensors = load_file(str(folder / "prm_head.safetensors"))
    with torch.no_grad():
        prm.head.weight.copy_(tensors["weight"]), prm.head.bias.copy_(tensors["bias"])
    prm.feature_mean, prm.feature_std = tensors["feature_mean"], tensors["feature_std"]
    prm.aggregate = config["aggregate"]
    prm.split_by = config.get("split_by", "lines")  # models saved before it was recorded were split by lines
    return prm


# -- training and evaluation ---------------------------------------------------------------------


@dataclass
class PRMTrainConfig:
    """Train a process reward model on step labels."""

    data: str = ""
    """Step-labelled files, comma-separated (kind 'steps': alignlab's layout or TRL's stepwise supervision)."""
    model: str = "gemma-3-270m"
    """The backbone: 'gemma-3-270m', 'tiny' or a local Hugging Face folder."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Backbone precision (the head is fitted in float32)."""
    layer: int = 0
    """Decoder layer the head reads, 1-based (0: the final states after the norm)."""
    pooling: Literal["mean", "last"] = "mean"
    """What the head reads of each step: the mean of its tokens' states, or its last token's state."""
    l2: float = 1.0
    """L2 penalty on the head's weights: mean BCE + l2 * ||w||^2 (standardised features)."""
    aggregate: Literal["min", "product", "last", "mean"] = "min"
    """How a response's score is made from its steps' (saved with the model; `prm score` can override it). Also the score of a response when the model is a reward (--reward of bon, rloo, grpo, ppo)."""
    split_by: Literal["lines", "sentences", "paragraphs", "marks"] = "lines"
    """How the training responses were cut into steps (saved with the model): a whole response it scores as a reward is cut the same way."""
    max_length: int = 1024
    """Tokens of prompt + steps kept (the start is cut first)."""
    eval_fraction: float = 0.1
    """Share of records held out for evaluation, by prompt."""
    skip_bad: bool = False
    """Skip malformed lines of the data files (counted and reported)."""
    seed: int = 0
    """Seed of the held-out split."""
    out: Path | None = None
    """Where to save the model (default: the run folder's model/)."""


def read_steps(files: str, skip_bad: bool = False) -> list:
    """Every 'steps' record of the comma-separated files (other kinds are refused with their count)."""
    from alignlab.data.formats import read_feedback

    paths = [Path(f.strip()) for f in files.split(",") if f.strip()]
    if not paths:
        raise ValueError("no data: give --data FILE[,FILE...] with step-labelled records (kind 'steps')")
    records, other = [], {}
    for path in paths:
        for record in read_feedback(path, skip_bad=skip_bad).records:
            if record.kind == "steps":
                records.append(record)
            else:
                other[record.kind] = other.get(record.kind, 0) + 1
    if not records:
        raise ValueError(f"{files}: no step-labelled records (kind 'steps'); found {other or 'nothing'}. "
                         "A process reward model learns from per-step labels")
    return records


def step_table(prm: ProcessRewardModel, records: list, progress: bool = False,
               cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(features of every judged step (N, D), labels (N,), the record each came from)."""
    rows = [encode_steps(prm.tokenizer, r.prompt, r.completions, prm.max_length) for r in records]
    feats = prm.step_features(rows, progress=progress, cache=cache)
    xs, ys, owner = [], [], []
    for i, (record, f) in enumerate(zip(records, feats)):
        for j, label in enumerate(record.labels):
            if label is not None and not torch.isnan(f[j]).any():
                xs.append(f[j]), ys.append(bool(label)), owner.append(i)
    if not xs:
        raise ValueError("no judged step survived the length limit; raise --max-length")
    return torch.stack(xs), torch.tensor(ys), owner


@torch.no_grad()
def evaluate_prm(prm: ProcessRewardModel, records: list, how: str | None = None, progress: bool = False,
                 cache: dict | None = None) -> dict:
    """Step accuracy (P(right) > 0.5 against the label) with a prompt-clustered 95% interval; the
    first wrong step found (the first step under 0.5 against the labelled one, records judged
    through their first wrong step or to the end); the outcome (any step wrong) told apart by the
    aggregate, as the share of (right, wrong) response pairs ordered correctly (AUC)."""
    from alignlab.data.steps import first_wrong_step, outcome_label
    from alignlab.pressure.stats import clustered_accuracy

    how = how or prm.aggregate
    x, y, owner = step_table(prm, records, progress, cache)
    p = torch.sigmoid(prm.logits(x))
    correct = ((p > 0.5) == y).float().tolist()
    prompts = [records[i].prompt for i in owner]
    step = (clustered_accuracy(correct, prompts).to_dict() if len(set(prompts)) > 1
            else {"value": sum(correct) / len(correct), "ci": [math.nan, math.nan]})
    probs: dict[int, list[float]] = {}
    for i, value in zip(owner, p.tolist()):
        probs.setdefault(i, []).append(value)
    found, checked = 0, 0
    for i, values in probs.items():
        labels = [l for l in records[i].labels if l is not None]
        if len(labels) != len(values) or (None in records[i].labels[:len(labels)]):
            continue
        truth = first_wrong_step(records[i])
        guess = next((j for j, v in enumerate(values) if v <= 0.5), None)
        checked += 1
        found += guess == truth
    scores = {i: aggregate(v, how) for i, v in probs.items()}
    right = [scores[i] for i in scores if outcome_label(records[i]) is True]
    wrong = [scores[i] for i in scores if outcome_label(records[i]) is False]
    pairs = len(right) * len(wrong)
    auc = (sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in right for b in wrong) / pairs) if pairs else math.nan
    return {"step_accuracy": step["value"], "step_accuracy_ci": list(step["ci"]), "steps": len(correct),
            "records": len(probs), "first_wrong_step_accuracy": found / checked if checked else math.nan,
            "first_wrong_checked": checked, "outcome_auc": auc, "aggregate": how,
            "outcome_pairs": pairs}


def train_prm(config: PRMTrainConfig, progress: bool = True):
    """Fit a process reward model; returns the run (model saved in run/model or ``out``)."""
    from alignlab.models import load_model
    from alignlab.runs import Run
    from alignlab.train.reward import split

    if not 0 <= config.eval_fraction < 1:
        raise ValueError(f"eval_fraction is {config.eval_fraction}; it must be in [0, 1)")
    if config.l2 < 0:
        raise ValueError(f"l2 is {config.l2}; it must be 0 or more")
    records = read_steps(config.data, config.skip_bad)
    lm, tokenizer = load_model(config.model, dtype=config.dtype)
    prm = ProcessRewardModel(lm, tokenizer, layer=config.layer, max_length=config.max_length,
                             pooling=config.pooling)
    train_rows, eval_rows = split(len(records), config.eval_fraction, config.seed, [r.prompt for r in records])
    if not train_rows:
        raise ValueError("no training records left after the held-out split; lower --eval-fraction or add data")
    run = Run.create("prm", config, seed=config.seed)
    with run:
        cache: dict = {}
        train = [records[i] for i in train_rows]
        x, y, _ = step_table(prm, train, progress, cache)
        if y.all() or not y.any():
            raise ValueError(f"every judged training step is labelled {bool(y[0])}: a process reward model needs "
                             "right and wrong steps to tell apart")
        fit = fit_step_head(prm, x, y, config.l2)
        prm.aggregate, prm.split_by = config.aggregate, config.split_by
        summary = {**fit, "records": len(records), "train_records": len(train_rows), "eval_records": len(eval_rows),
                   "share_right": float(y.float().mean())}
        summary.update({f"train/{k}": v for k, v in evaluate_prm(prm, train, cache=cache).items()})
        if eval_rows:
            summary.update({f"eval/{k}": v for k, v in
                            evaluate_prm(prm, [records[i] for i in eval_rows], cache=cache).items()})
        folder = save_prm(prm, config.out or run.path / "model", config.model, config.aggregate,
                          extra={"train_records": len(train_rows)}, split_by=config.split_by)
        summary["model"] = str(folder)
        atomic_write_json(run.path / "summary.json", summary)
        run.finish(**{k: v for k, v in summary.items() if not isinstance(v, list)})
    return run


# -- commands ------------------------------------------------------------------------------------


@dataclass
class PRMEvalConfig:
    """Evaluate a process reward model on step-labelled files."""

    model: str = ""
    """A process reward model folder or the run id `prm train` printed."""
    data: str = ""
    """Step-labelled files, comma-separated."""
    aggregate: str = ""
    """How a response's score is made from its steps' (default: the model's own)."""
    skip_bad: bool = False
    """Skip malformed lines of the data files."""
    json: bool = False
    """Print the results as one JSON object."""


@dataclass
class PRMScoreConfig:
    """Score each step of responses with a process reward model."""

    model: str = ""
    """A process reward model folder or the run id `prm train` printed."""
    prompt: str = ""
    """The prompt."""
    response: list[str] | None = None
    """A response to score (repeat the flag for several)."""
    split_by: str = ""
    """How each response is cut into steps: lines, sentences, paragraphs or marks (default: the model's own)."""
    aggregate: str = ""
    """How a response's score is made from its steps' (default: the model's own)."""


def run_train(config: PRMTrainConfig) -> int:
    import json

    run = train_prm(config, progress=sys.stderr.isatty())
    summary = json.loads((run.path / "summary.json").read_text())
    line = f"process reward model saved to {summary['model']}"
    if "eval/step_accuracy" in summary:
        low, high = summary["eval/step_accuracy_ci"]
        line += (f"; held-out step accuracy {summary['eval/step_accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}) on "
                 f"{summary['eval/steps']} steps, outcome AUC ({config.aggregate}) {summary['eval/outcome_auc']:.3f}")
    print(line)
    print(f"run {run.id}: {run.path}", file=sys.stderr)
    return 0


def run_eval(config: PRMEvalConfig) -> int:
    import json

    prm = load_prm(config.model)
    result = evaluate_prm(prm, read_steps(config.data, config.skip_bad), config.aggregate or None,
                          progress=sys.stderr.isatty())
    if config.json:
        print(json.dumps(result, indent=2))
        return 0
    low, high = result["step_accuracy_ci"]
    print(f"step accuracy {result['step_accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}, clustered by prompt) on "
          f"{result['steps']} judged steps of {result['records']} responses")
    print(f"first wrong step found: {result['first_wrong_step_accuracy']:.3f} of {result['first_wrong_checked']}")
    print(f"outcome AUC ({result['aggregate']}): {result['outcome_auc']:.3f} over {result['outcome_pairs']} "
          "(right, wrong) response pairs")
    return 0


def run_score(config: PRMScoreConfig) -> int:
    from alignlab.data.steps import split_steps

    if not config.prompt or not config.response:
        raise ValueError("give --prompt and at least one --response")
    prm = load_prm(config.model)
    how = config.aggregate or prm.aggregate
    step_lists = [split_steps(r, config.split_by or prm.split_by) for r in config.response]
    for steps, probs in zip(step_lists, prm.score_steps([config.prompt] * len(step_lists), step_lists)):
        print(f"score ({how}): {aggregate([p for p in probs if not math.isnan(p)] or [0.5], how):.3f}")
        for step, p in zip(steps, probs):
            print(f"  {p:.3f}  {step.rstrip()}")
    return 0


PRM_TRAIN = Command("prm train", "train a process (step-level) reward model on step labels", PRMTrainConfig, run_train)
PRM_EVAL = Command("prm eval", "evaluate a process reward model on step-labelled files", PRMEvalConfig, run_eval)
PRM_SCORE = Command("prm score", "score each step of responses with a process reward model", PRMScoreConfig,
                    run_score)
