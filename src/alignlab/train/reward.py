"""Train a reward model on any mix of feedback kinds (reward-rational choice).

Read top to bottom: the config, then setup (data -> choice sets -> tokens -> model), then the
loop. Every record becomes a choice among grounded responses (feedback/choices.py) with its
kind's rationality beta; one loss covers pairs (Bradley-Terry), K-way choices, rankings
(Plackett-Luce) and the rest, plus ratings by regression.

Runs under `accelerate launch` / `torchrun` on several processes (data parallel, gloo on a
CPU): each process takes an equal slice of every global batch and DDP averages gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from alignlab.fileio import atomic_write_json, read_jsonl
from alignlab.runs import Run
from alignlab.train.options import DeviceOptions, MonitorOptions, OptimOptions, RunOptions
from alignlab.train.components import centering_loss, choice_nll, rating_loss
from alignlab.train.hooks import Hooks, StepContext
from alignlab.train.loop import keep_freed_memory
from alignlab.train.loop import (accelerator_for, adamw, broadcast_run, check_finite, data_order, latest_checkpoint, linear_schedule, load_checkpoint, optimizer_step,
                                 reopen_run, save_checkpoint, sparse_embedding_gradients, truncate_metrics)
from alignlab.train.reward_model import (RewardModel, configure_trainable, pad_right, save_reward_model,
                                         starts_of)

DEFAULT_LR = {"head": 1e-3, "last": 1e-4, "lora": 2e-4, "full": 1e-5}


@dataclass
class RewardTrainConfig(DeviceOptions, MonitorOptions, RunOptions, OptimOptions):
    """Train a reward model from feedback files."""

    data: str = ""
    """Feedback files, comma-separated: JSONL or Parquet of any kinds, mixed (TRL formats too)."""
    model: str = "gemma-3-270m"
    """The backbone: 'gemma-3-270m', 'tiny' or a local Hugging Face folder."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Backbone precision (the head and the loss are always float32)."""
    mode: Literal["head", "last", "lora", "full"] = "head"
    """What trains: head (backbone frozen, features cached: fastest), last (head + last k layers), lora, full."""
    last_layers: int = 2
    """For mode 'last': how many final layers train."""
    lora_r: int = 16
    """For mode 'lora': adapter rank."""
    lora_alpha: float = 32.0
    """For mode 'lora': adapter scale numerator."""
    lr: float = 0.0
    """Peak learning rate (0: 1e-3 head, 1e-4 last, 2e-4 lora, 1e-5 full)."""
    max_length: int = 256
    """Tokens of prompt + response kept (BOS and the end of the response are kept)."""
    pooling: Literal["last", "mean"] = "last"
    """What the head reads: the hidden state at the last token, or the mean over the response's tokens."""
    layer: int = 0
    """Decoder layer whose output the head reads, 1-based (0: the final states after the final norm); mode 'head' only."""
    standardize: bool = False
    """Mode head: standardise each feature dimension on the training texts (mean 0, std 1) before the head; saved with the model."""
    center: float = 0.0
    """Centering coefficient: adds center * (sum of a choice set's rewards)^2."""
    label_noise: float = 0.0
    """Label-noise-robust loss: the probability that a recorded choice is wrong (0: plain likelihood)."""
    head_l2: float = 0.0
    """L2 penalty on the head's weight (not its bias): adds head_l2 * ||w||^2 per ensemble member to each step's mean loss."""
    betas: str = ""
    """Override rationalities per kind, e.g. 'thumbs=0.3,edit=2'."""
    eval_fraction: float = 0.1
    """Share of choices held out for evaluation (by prompt: all choices of one prompt fall on one side)."""
    early_stop: bool = False
    """Evaluate the held-out loss after every epoch and keep the model of the epoch where it was lowest (needs eval_fraction > 0)."""
    ensemble: int = 1
    """Heads trained on bootstrap resamples; their spread is the model's uncertainty."""
    normalize_on: Path | None = None
    """JSONL of prompt/completion responses of a policy: rewards are shifted and scaled to mean 0, std 1 on them."""
    policy_samples: Path | None = None
    """JSONL of prompt/completion samples of the policy, to ground demonstrations (default: sample from the backbone)."""
    demo_samples: int = 2
    """Policy samples per demonstrated prompt when none are given."""


# -- setup -----------------------------------------------------------------------------------------


def parse_betas(text: str) -> dict[str, float]:
    """'thumbs=0.3,edit=2' -> {'thumbs': 0.3, 'edit': 2.0}, refusing what is not a positive number."""
    betas = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        try:
            betas[kind.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or betas.get(kind.strip(), 0) <= 0:
            raise ValueError(f"betas: '{part}' is not kind=positive-number (e.g. 'thumbs=0.3')")
    return betas


def load_choices(config: RewardTrainConfig, sampler=None):
    """Read every data file and map its records to choice sets (and rating targets)."""
    from alignlab.data.formats import read_feedback
    from alignlab.feedback.choices import to_choices

    files = [Path(f.strip()) for f in config.data.split(",") if f.strip()]
    if not files:
        raise ValueError("no data: give --data FILE[,FILE...] with feedback records")
    records = []
    for path in files:
        result = read_feedback(path, skip_bad=config.skip_bad)
        records.extend(result.records)
    policy = None
    if config.policy_samples is not None:
        policy = {}
        for row in read_jsonl(config.policy_samples):
            policy.setdefault(row["prompt"], []).append(row["completion"])
    elif sampler is not None and any(r.kind == "demonstration" for r in records):
        policy = sampler(sorted({r.prompt for r in records if r.kind == "demonstration"}))
    choice_set = to_choices(records, betas=parse_betas(config.betas) or None, policy_samples=policy)
    if not choice_set.choices and not choice_set.targets:
        raise ValueError(f"the data ({config.data}) gave no usable feedback; "
                         f"unused by kind: {choice_set.unused}")
    return choice_set, len(records)


def split(n: int, fraction: float, seed: int, prompts: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """A fixed (train, eval) split of n items, about ``fraction`` of them held out.

    Items that share a non-empty prompt fall on one side together: responses to one prompt are
    correlated, so a prompt on both sides would flatter held-out accuracy and make early stopping
    choose by what training already saw. Whole prompts are held out, in a seeded order, until at
    least the share is reached; with every prompt distinct (or none given) this is a plain
    seeded split of the items."""
    units: dict[object, list[int]] = {}
    for i in range(n):
        key = prompts[i] if prompts is not None and prompts[i] else ("item", i)  # no prompt: its own unit
        units.setdefault(key, []).append(i)
    groups = list(units.values())
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    target = int(round(n * fraction)) if n > 1 else 0
    held: list[int] = []
    for g in order:
        if len(held) >= target:
            break
        held.extend(groups[g])
    chosen = set(held)
    return [i for i in range(n) if i not in chosen], sorted(held)


@dataclass
class Items:
    """Everything the loop indexes: unique (prompt, response) texts and the choices over them."""

    texts: list[tuple[str, str]]
    ids: list[list[int]]
    options: list[list[int]]  # per item: indices into texts
    chosen: torch.Tensor  # (N,)
    beta: torch.Tensor  # (N,)
    margin: torch.Tensor  # (N,)
    reference: torch.Tensor  # (N,) bool: the set includes the reference point
    weight: torch.Tensor  # (N,)
    rating: torch.Tensor  # (N,) NaN for choices, the rating target for ratings
    kinds: list[str] = field(default_factory=list)
    annotators: list[str | None] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)  # per item: what the held-out split groups by


def build_items(choice_set, rm: RewardModel) -> Items:
    """Tokenize each unique text once and express choices and ratings as index lists."""
    index: dict[tuple[str, str], int] = {}

    def ref(prompt: str, response: str) -> int:
        return index.setdefault((prompt, response), len(index))

    options, chosen, beta, margin, reference, weight, rating, kinds, annotators = [], [], [], [], [], [], [], [], []
    prompts = [c.prompt for c in choice_set.choices] + [t.prompt for t in choice_set.targets]
    for c in choice_set.choices:
        options.append([ref(c.prompt, o) for o in c.options])
        # The reference point, when present, is an extra last option.
        chosen.append(len(c.options) if c.chosen == -1 else c.chosen)
        beta.append(c.beta), margin.append(c.margin), reference.append(c.reference)
        weight.append(c.weight), rating.append(math.nan), kinds.append(c.kind), annotators.append(c.annotator)
    for t in choice_set.targets:
        options.append([ref(t.prompt, t.response)])
        chosen.append(0), beta.append(t.beta), margin.append(0.0), reference.append(False)
        weight.append(t.weight), rating.append(t.value), kinds.append(t.kind), annotators.append(t.annotator)
    texts = list(index)
    return Items(texts=texts, ids=[rm.encode(p, r) for p, r in texts], options=options,
                 chosen=torch.tensor(chosen), beta=torch.tensor(beta, dtype=torch.float32),
                 margin=torch.tensor(margin, dtype=torch.float32), reference=torch.tensor(reference),
                 weight=torch.tensor(weight, dtype=torch.float32), rating=torch.tensor(rating, dtype=torch.float32),
                 kinds=kinds, annotators=annotators, prompts=prompts)


@torch.no_grad()
def cached_features(rm: RewardModel, ids: list[list[int]], batch_size: int = 16, progress: bool = True,
                    cache: dict | None = None) -> torch.Tensor:
    """Backbone features of every text, once (mode 'head': the backbone never changes). (U, D).

    ``cache`` (a dict the caller keeps for one frozen backbone) carries features across calls:
    texts already in it (with the same pooling and layer) are not run again."""
    from tqdm import tqdm

    keys = [(tuple(x), getattr(x, "start", 0), rm.pooling, rm.layer) for x in ids]
    cache = cache if cache is not None else {}
    todo = sorted({i for i, k in enumerate(keys) if k not in cache}, key=lambda i: len(ids[i]))  # less padding
    device = rm.head.weight.device
    starts = range(0, len(todo), batch_size)
    for start in tqdm(starts, desc="features", unit="batch", disable=not progress, leave=False):
        rows = todo[start:start + batch_size]
        batch, mask = pad_right([ids[i] for i in rows], rm.pad_id)
        values = rm.features(batch.to(device), mask.to(device), starts_of([ids[i] for i in rows]).to(device)).cpu()
        for i, v in zip(rows, values):
            cache[keys[i]] = v
    if not ids:
        return torch.empty(0, rm.head.in_features)
    return torch.stack([cache[k] for k in keys])


def batch_losses(rewards_of, items: Items, rows: list[int], reference: float,
                 config: RewardTrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-item, per-ensemble-member losses (N, K) for the items ``rows``.

    ``rewards_of(text_indices)`` returns raw rewards (U, K) of those texts (through the DDP
    wrapper when there is one, so gradients are averaged across processes).
    """
    texts = sorted({t for r in rows for t in items.options[r]})
    where = {t: i for i, t in enumerate(texts)}
    rewards = rewards_of(texts)  # (U, K)
    width = max(len(items.options[r]) for r in rows) + 1
    k = rewards.shape[1]
    gather = torch.zeros(len(rows), width, dtype=torch.long)  # (N, W) index into rewards
    valid = torch.zeros(len(rows), width, dtype=torch.bool)  # (N, W): options, then the reference point
    is_ref = torch.zeros(len(rows), width, dtype=torch.bool)
    for n, r in enumerate(rows):
        opts = items.options[r]
        gather[n, :len(opts)] = torch.tensor([where[t] for t in opts])
        valid[n, :len(opts)] = True
        if items.reference[r]:
            valid[n, len(opts)] = is_ref[n, len(opts)] = True
    device = rewards.device  # the items' tensors live on the CPU; the rewards where the model is
    gather, valid, is_ref = gather.to(device), valid.to(device), is_ref.to(device)
    grid = rewards[gather]  # (N, W, K)
    grid = torch.where(is_ref[:, :, None], torch.full_like(grid, reference), grid)
    idx = torch.tensor(rows)
    chosen, beta, margin, target = (t[idx].to(device) for t in (items.chosen, items.beta, items.margin, items.rating))
    is_rating = ~torch.isnan(target)
    real = valid & ~is_ref
    losses = []
    for j in range(k):
        loss = choice_nll(grid[:, :, j], valid, chosen, beta, margin, config.label_noise)
        if config.center:
            loss = loss + config.center * centering_loss(grid[:, :, j], real)
        loss = torch.where(is_rating, beta * rating_loss(grid[:, 0, j], target.nan_to_num(0.0)), loss)
        losses.append(loss)
    losses = torch.stack(losses, -1)  # (N, K)
    with torch.no_grad():
        mean_grid = grid.mean(-1)  # (N, W)
        chosen_r = mean_grid.gather(1, chosen[:, None])[:, 0]
        others = valid.clone()
        others.scatter_(1, chosen[:, None], False)
        rejected_r = (mean_grid * others).sum(-1) / others.sum(-1).clamp(min=1)
        best_other = mean_grid.masked_fill(~others, -math.inf).max(-1).values
        choice_rows = ~is_rating
        stats = {"rewards/chosen": chosen_r[choice_rows], "rewards/rejected": rejected_r[choice_rows],
                 "rewards/accuracies": (chosen_r > best_other)[choice_rows].float(),
                 "batch_mean_reward": rewards.detach().mean()}
    return losses, stats


def head_l2_penalty(head: torch.nn.Linear, coefficient: float) -> torch.Tensor:
    """``coefficient * ||w||^2`` summed over the head's rows (one per ensemble member); the bias
    is left free, as a shift of every reward changes no choice. Added to a step's mean loss, each
    member minimises mean NLL + coefficient * ||w_k||^2 (logistic regression's C = 1 / (2 coefficient N))."""
    return coefficient * head.weight.float().pow(2).sum()


@torch.no_grad()
def held_out_loss(rewards_of, items: Items, rows: list[int], reference: float, config: RewardTrainConfig) -> float:
    """Mean loss over the items ``rows`` and the ensemble members: the choice (and rating) NLL
    alone, without bootstrap weights or the L2 penalty, which are not properties of the data."""
    total = 0.0
    for i in range(0, len(rows), config.batch_size):
        losses, _ = batch_losses(rewards_of, items, rows[i:i + config.batch_size], reference, config)  # (n, K)
        total += float(losses.mean(-1).sum())
    return total / len(rows)


def bootstrap_weights(n: int, members: int, seed: int) -> torch.Tensor:
    """(n, K) Poisson(1) resampling weights per item and ensemble member (all ones for one member)."""
    if members == 1:
        return torch.ones(n, 1)
    g = torch.Generator().manual_seed(seed + 7919)
    return torch.poisson(torch.ones(n, members), generator=g)


def train_reward(config: RewardTrainConfig, progress: bool = True, hooks: Hooks | None = None,
                 feature_cache: dict | None = None) -> Run:
    """Train (or resume) a reward model; returns the run. The model is saved in the run folder.

    ``hooks`` are called after every backward pass and optimizer step (train/hooks.py).
    ``feature_cache``: in mode 'head', backbone features shared across calls with the same
    backbone, dtype, pooling and max_length (see ``cached_features``).
    """
    from tqdm import tqdm

    from alignlab.models import SampleConfig, load_model, sample

    resuming = config.resume is not None
    run = None
    if resuming:
        config, run = reopen_run(config, "reward")
    if config.batch_size < 1 or config.epochs < 1 or config.max_steps < 0:
        raise ValueError("batch_size and epochs must be at least 1, max_steps 0 or more")
    if not 0 <= config.eval_fraction < 1:
        raise ValueError(f"eval_fraction is {config.eval_fraction}; it must be in [0, 1)")
    if not 0 <= config.label_noise < 0.5:
        raise ValueError(f"label_noise is {config.label_noise}; it must be in [0, 0.5)")
    if config.standardize and config.mode != "head":
        raise ValueError(f"standardize needs mode 'head' (features that do not change in training); mode is "
                         f"{config.mode!r}")
    if config.head_l2 < 0:
        raise ValueError(f"head_l2 is {config.head_l2}; it must be 0 or more")
    if config.early_stop and config.eval_fraction == 0:
        raise ValueError("early_stop needs held-out choices to choose by; set eval_fraction above 0")
    accelerator = accelerator_for(config.device)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} processes; use a multiple")
    torch.manual_seed(config.seed)

    # 1. the model: backbone + head, with what the mode trains left trainable
    lm, tokenizer = load_model(config.model, dtype=config.dtype)
    rm = RewardModel(lm, tokenizer, ensemble=config.ensemble, max_length=config.max_length, seed=config.seed,
                     pooling=config.pooling, layer=config.layer)

    # 2. the data: records -> choice sets -> unique tokenized texts
    def policy_sampler(prompts: list[str]) -> dict[str, list[str]]:
        out = sample(lm, tokenizer, prompts, SampleConfig(max_new_tokens=64, top_k=64, top_p=0.95, seed=config.seed),
                     n=config.demo_samples)
        grouped: dict[str, list[str]] = {}
        for c in out:
            grouped.setdefault(c.prompt, []).append(c.text)
        return grouped

    choice_set, n_records = load_choices(config, policy_sampler)
    configure_trainable(rm, config.mode, config.last_layers, config.lora_r, config.lora_alpha)
    keep_freed_memory()  # reuse freed blocks: no page faults every step (train/loop.py)
    if world == 1:
        sparse_embedding_gradients(rm.lm)  # the head never runs the output layer: only the batch's rows
    rm.to(accelerator.device)
    items = build_items(choice_set, rm)
    train_rows, eval_rows = split(len(items.options), config.eval_fraction, config.seed, items.prompts)
    if not train_rows:
        raise ValueError("no training choices left after the held-out split; lower --eval-fraction or add data")
    if config.early_stop and not eval_rows:
        raise ValueError("early_stop: the held-out split is empty; raise --eval-fraction or add data")
    if run is None:
        run = Run.create("reward", config, seed=config.seed) if accelerator.is_main_process else None
        run = broadcast_run(accelerator, run)
    features = cached_features(rm, items.ids, progress=progress and accelerator.is_main_process,
                               cache=feature_cache) if config.mode == "head" else None
    if config.standardize:  # on the texts the training choices use: held-out texts do not leak in
        used = sorted({t for r in train_rows for t in items.options[r]})
        rm.head.standardize(features[used])

    # 3. what trains, wrapped for data parallelism when there are several processes
    if features is not None:
        plain = rm.head  # outside DDP: what monitors recompute the loss through
        module = accelerator.prepare(plain)

        def rewards_of(texts: list[int], module=module) -> torch.Tensor:
            return module(features[texts].to(accelerator.device))
    else:
        plain = rm
        module = accelerator.prepare(plain)

        def rewards_of(texts: list[int], module=module) -> torch.Tensor:
            rows = [items.ids[t] for t in texts]
            ids, mask = pad_right(rows, rm.pad_id)
            return module(ids.to(accelerator.device), mask.to(accelerator.device), starts_of(rows).to(accelerator.device))

    trainable = {n: p for n, p in rm.named_parameters() if p.requires_grad}
    lr = config.lr or DEFAULT_LR[config.mode]
    optimizer = adamw(trainable.values(), lr=lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    total = config.max_steps or config.epochs * steps_per_epoch
    scheduler = linear_schedule(optimizer, config.warmup_steps, total)
    order = data_order(train_rows, total, config.batch_size, config.seed)
    weights = bootstrap_weights(len(items.options), config.ensemble, config.seed)

    # 4. resume: parameters, optimizer, schedule, the reference point and early stopping's record
    start = 0
    early = {"curve": [], "best": None}  # held-out loss per epoch; the best epoch's trainable state
    checkpoint = latest_checkpoint(run.path) if resuming else None
    if checkpoint is not None:
        start, extra = load_checkpoint(checkpoint, trainable, optimizer, scheduler)
        rm.reference = extra["reference"]
        early = extra.get("early_stop", early)
        if accelerator.is_main_process:
            truncate_metrics(run.path, start)
            print(f"alignlab reward: resuming run {run.id} from step {start} of {total}", file=sys.stderr)
        if hooks is not None:
            hooks.resume(run)

    # 5. the loop
    local = config.batch_size // world
    bar = tqdm(total=total, initial=start, desc="reward", unit="step",
               disable=not (progress and accelerator.is_main_process))
    stop_at = min(total, start + config.stop_after) if config.stop_after else total
    for step in range(start, stop_at):
        rows = order[step * config.batch_size:(step + 1) * config.batch_size]
        mine = rows[rank * local:(rank + 1) * local]
        losses, stats = batch_losses(rewards_of, items, mine, rm.reference, config)  # (n, K)
        loss = (losses * weights[mine]).sum() / local
        if config.head_l2:
            # Every process adds the whole penalty: DDP averages gradients, so it counts once.
            penalty = head_l2_penalty(rm.head, config.head_l2)
            loss = loss + penalty
        check_finite(loss, step, "reward loss", f"items {mine[:8]}")
        accelerator.backward(loss)
        ctx = StepContext(step + 1, rm, loss.detach(), optimizer, trainable,
                          loss_fn=lambda mine=mine, reference=rm.reference:
                          (batch_losses(partial(rewards_of, module=plain), items, mine, reference, config)[0]
                           * weights[mine]).sum() / local
                          + (head_l2_penalty(rm.head, config.head_l2) if config.head_l2 else 0.0))
        optimizer_step(ctx, scheduler, config.max_grad_norm, hooks)
        # The reference point for thumbs follows the mean reward of what the model sees (BCO-style).
        batch_mean = accelerator.reduce(stats["batch_mean_reward"].reshape(1).to(accelerator.device), "mean")
        rm.reference = 0.9 * rm.reference + 0.1 * float(batch_mean)
        metrics = {**_step_metrics(accelerator, loss, stats, ctx.grad_norm, scheduler.get_last_lr()[0]),
                   "grad_clipped": ctx.clipped, **ctx.metrics}
        if config.head_l2:
            metrics["loss/l2"] = float(penalty)
        if accelerator.is_main_process:
            run.log_metrics(step + 1, **metrics)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['rewards/accuracies']:.2f}")
        if config.early_stop and ((step + 1) % steps_per_epoch == 0 or step + 1 == total):
            point = record_held_out(early, rm, trainable, partial(rewards_of, module=plain), items, eval_rows,
                                    config, step + 1, steps_per_epoch)
            if accelerator.is_main_process:
                run.log_metrics(step + 1, **{"eval/loss": point["loss"], "epoch": point["epoch"]})
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == stop_at:
            extra = {"reference": rm.reference, **({"early_stop": early} if config.early_stop else {})}
            if accelerator.is_main_process:
                save_checkpoint(run.path, step + 1, trainable, optimizer, scheduler, extra)
            accelerator.wait_for_everyone()
    bar.close()
    if hooks is not None and accelerator.is_main_process:
        hooks.finish(run)
    sparse_embedding_gradients(rm.lm, enable=False)
    if stop_at < total:
        if accelerator.is_main_process:
            print(f"alignlab reward: stopped at step {stop_at} of {total}; continue with "
                  f"`alignlab reward train --resume {run.id}`", file=sys.stderr)
        return run

    # 6. early stopping: back to the best epoch's parameters; then evaluate, normalise, save
    chosen = {}
    if config.early_stop:
        chosen = {"early_stop": restore_best(early, rm, trainable)}
    if accelerator.is_main_process:
        summary = finish_reward_run(rm, items, eval_rows, run, config, n_records, choice_set.unused, features, total,
                                    extra=chosen)
        run.finish(**summary)
    accelerator.wait_for_everyone()
    return run


def record_held_out(early: dict, rm: RewardModel, trainable: dict[str, torch.nn.Parameter], rewards_of,
                    items: Items, eval_rows: list[int], config: RewardTrainConfig, step: int,
                    steps_per_epoch: int) -> dict:
    """Early stopping, after an epoch: append the held-out loss to ``early['curve']`` and, when it
    is the lowest so far, copy the trainable parameters and the reference point into
    ``early['best']``. Every process computes the same loss, so all keep the same copy."""
    point = {"epoch": math.ceil(step / steps_per_epoch), "step": step,
             "loss": held_out_loss(rewards_of, items, eval_rows, rm.reference, config)}
    early["curve"].append(point)
    if early["best"] is None or point["loss"] < early["best"]["loss"]:
        early["best"] = {**point, "reference": rm.reference,
                         "params": {n: p.detach().clone() for n, p in trainable.items()}}
    return point


def restore_best(early: dict, rm: RewardModel, trainable: dict[str, torch.nn.Parameter]) -> dict:
    """Put the best epoch's parameters and reference point back; what the run summary records."""
    best = early["best"]
    with torch.no_grad():
        for name, value in best["params"].items():
            trainable[name].copy_(value)
    rm.reference = best["reference"]
    return {"best_epoch": best["epoch"], "best_step": best["step"], "best_loss": best["loss"],
            "held_out_loss": early["curve"]}


def _step_metrics(accelerator, loss, stats, grad_norm, lr) -> dict[str, float]:
    """The field's metric names, averaged over processes."""
    def mean(t: torch.Tensor) -> float:
        value = t.float().mean() if t.numel() else torch.tensor(float("nan"))
        return float(accelerator.reduce(value.reshape(1).to(accelerator.device), "mean"))

    chosen, rejected = mean(stats["rewards/chosen"]), mean(stats["rewards/rejected"])
    return {"loss": mean(loss.detach()), "rewards/chosen": chosen, "rewards/rejected": rejected,
            "rewards/margins": chosen - rejected, "rewards/accuracies": mean(stats["rewards/accuracies"]),
            "grad_norm": float(grad_norm), "learning_rate": lr}


@torch.no_grad()
def item_accuracy(rm: RewardModel, items: Items, rows: list[int], features: torch.Tensor | None) -> dict[str, float]:
    """Share of held-out choices whose chosen option gets the highest reward, overall and per kind."""
    rows = [r for r in rows if math.isnan(float(items.rating[r]))]
    if not rows:
        return {}
    texts = sorted({t for r in rows for t in items.options[r]})
    if features is not None:
        values = rm.head(features[texts]).mean(-1)
    else:
        device = rm.head.weight.device
        values = []
        for i in range(0, len(texts), 8):
            rows_ = [items.ids[t] for t in texts[i:i + 8]]
            ids, mask = pad_right(rows_, rm.pad_id)
            values.append(rm(ids.to(device), mask.to(device), starts_of(rows_).to(device)).mean(-1).cpu())
        values = torch.cat(values)
    reward = dict(zip(texts, values.tolist()))
    correct: dict[str, list[bool]] = {}
    for r in rows:
        scores = [reward[t] for t in items.options[r]] + ([rm.reference] if items.reference[r] else [])
        c = int(items.chosen[r])
        ok = all(scores[c] > s for i, s in enumerate(scores) if i != c)
        correct.setdefault(items.kinds[r], []).append(ok)
    flat = [x for v in correct.values() for x in v]
    out = {"eval/accuracy": sum(flat) / len(flat), "eval/choices": len(flat)}
    out.update({f"eval/accuracy/{k}": sum(v) / len(v) for k, v in correct.items()})
    return out


def finish_reward_run(rm, items, eval_rows, run, config, n_records, unused, features, step: int = 0,
                      extra: dict | None = None) -> dict:
    """Held-out accuracy, optional normalisation on a policy's responses, and the saved model."""
    rm.eval()
    summary: dict = {"records": n_records, "choices": len(items.options), "texts": len(items.texts),
                     "unused": unused, **(extra or {})}
    summary.update(item_accuracy(rm, items, eval_rows, features))
    if config.normalize_on is not None:
        rows = read_jsonl(config.normalize_on)
        if not rows:
            raise ValueError(f"{config.normalize_on} holds no prompt/completion rows to normalise on")
        raw = []
        for i in range(0, len(rows), 8):
            chunk = rows[i:i + 8]
            encoded = [rm.encode(r["prompt"], r["completion"]) for r in chunk]
            ids, mask = pad_right(encoded, rm.pad_id)
            with torch.no_grad():
                raw.append(rm(ids, mask, starts_of(encoded)))
        raw = torch.cat(raw)  # (N, K)
        rm.norm_mean.copy_(raw.mean(0))
        rm.norm_std.copy_(raw.std(0).clamp(min=1e-6) if len(raw) > 1 else torch.ones(rm.ensemble))
        summary["normalized_on"] = {"file": str(config.normalize_on), "responses": len(rows)}
    run.log_metrics(step, final=True, **{k: v for k, v in summary.items() if k.startswith("eval/")})
    out = config.out or run.path / "model"
    save_reward_model(rm, out, config.mode, config.model, extra={"run": run.id})
    summary["model"] = str(out)
    atomic_write_json(run.path / "summary.json", summary)
    return summary
