"""Online RL with a group of samples per prompt: the loop that RLOO (rloo.py) and GRPO (grpo.py) share.

A group method is its advantages and its loss; the rest is this loop, read top to bottom:

  # 1. generate   group_size samples of each of the iteration's prompts (this process's share)
  # 2. score      the reward at the end of each response (and the gold judge, which only watches),
  #               or each step's, where the method takes process rewards (GRPO's --process-rewards)
  # 3. KL leash   in the reward (beta * the sequence's KL subtracted from the score) or in the loss
  # 4. advantages the method's, over the whole rollout (rewards gathered from every process):
  #               one per response, or one per token from the step rewards
  # 5. update     epochs x minibatches, each in micro-batches, the method's loss

No value model, no GAE: the group is the baseline. The sampler records each token's log-prob at
the sampling temperature, so the rollout needs no extra policy pass; the reference (the model
with LoRA adapters off, or a frozen copy) runs once per rollout. Several processes (torchrun):
each samples whole groups for its share of the prompts, rewards are gathered so advantages see
the whole rollout, and DDP averages gradients.
"""

from __future__ import annotations

import bisect
import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from alignlab.runs import Run
from alignlab.train.components import kl_k1, kl_k3, sequence_kl_penalty
from alignlab.train.hooks import Hooks, StepContext
from alignlab.train.loop import (accelerator_for, adamw, broadcast_run, check_finite, keep_freed_memory, latest_checkpoint,
                                 linear_schedule, load_checkpoint, optimizer_step, reopen_run, save_checkpoint,
                                 sparse_embedding_gradients, truncate_metrics)
from alignlab.train.policy import (Example, LogProbs, Reference, batch_tensors, load_policy, save_policy,
                                   save_snapshot, write_pressure)


@dataclass
class Rollout:
    """One process's share of a rollout: rows are prompt-major (the group of prompt 0, then 1, ...)."""

    prompts: list[str]
    completions: list
    ids: torch.Tensor  # (b, T)
    mask: torch.Tensor  # (b, T)
    target: torch.Tensor  # (b, T) response tokens
    old_logps: torch.Tensor  # (b, T) the sampler's log-probs at the sampling temperature
    ref_logps: torch.Tensor  # (b, T)
    entropy: torch.Tensor  # (b, T)
    scores: torch.Tensor  # (b,) the reward as returned
    has_eos: torch.Tensor  # (b,) bool
    steps: list | None = None  # (b) StepScores (train/prm.py), with process rewards


@dataclass
class GroupMethod:
    """What makes a group method: its name, advantages and loss.

    ``advantages(rewards (B,), config) -> (B,)`` sees the whole rollout. ``loss(batch, config)``
    gets a dict of one micro-batch (logps, old_logps, ref_logps, target: (m, T); advantages: (m,),
    or (m, T) with process rewards; share: the micro-batch's share of the minibatch's rows;
    num_items: the minibatch's response tokens per process) and returns (loss, stats). A method
    that takes process rewards gives ``step_advantages(rewards, positions, lengths, config)``:
    per response of the whole rollout its steps' rewards, the response token where each step ends
    and its token count; it returns each response's per-token advantages."""

    name: str
    advantages: Callable
    loss: Callable
    kl_in_reward: Callable  # config -> bool
    process_rewards: Callable = lambda config: False  # config -> bool: each step's reward, not the sequence's
    step_advantages: Callable | None = None


def check_online(config) -> None:
    """Refuse settings that cannot work, before anything loads."""
    for name in ("iterations", "prompts_per_iteration", "group_size", "epochs", "max_new_tokens"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} is {getattr(config, name)}; it must be at least 1")
    if config.minibatch_size < 0 or config.micro_batch_size < 0:
        raise ValueError("minibatch_size and micro_batch_size must be >= 0 (0: the whole rollout / minibatch)")
    if config.temperature <= 0:
        raise ValueError(f"temperature is {config.temperature}; online RL needs a positive sampling temperature")
    if config.kl_coef < 0:
        raise ValueError(f"kl_coef is {config.kl_coef}; it must be >= 0")
    if config.reward_scale <= 0:
        raise ValueError(f"reward_scale is {config.reward_scale}; it must be > 0")
    if not 0 < config.cliprange < 1 or config.cliprange_high < 0:
        raise ValueError(f"cliprange is {config.cliprange}; use a value in (0, 1), e.g. 0.2 (cliprange_high >= 0)")
    if config.prompts is None:
        raise ValueError("give --prompts FILE")
    if not config.reward:
        raise ValueError("give --reward: a reward model folder or run id, or module:function")


def _sizes(config, world: int) -> tuple[int, int, int]:
    """(rows per process, minibatch rows per process, micro-batch rows per process)."""
    rows = config.prompts_per_iteration * config.group_size
    minibatch = config.minibatch_size or rows
    micro = config.micro_batch_size or minibatch
    if config.prompts_per_iteration % world or minibatch % world or micro % world:
        raise ValueError(f"prompts_per_iteration {config.prompts_per_iteration}, minibatch_size {minibatch} and "
                         f"micro_batch_size {micro} must each split over {world} process(es)")
    if rows % minibatch or minibatch % micro:
        raise ValueError(f"the rollout's {rows} rows (prompts_per_iteration x group_size) must split into "
                         f"minibatches of {minibatch}, and those into micro-batches of {micro}")
    return rows // world, minibatch // world, micro // world


def generate(policy, tokenizer, reference: Reference, prompts: list[str], group: int, sampling, seeds: list[int],
             reward_fn, device, step_fn=None) -> Rollout:
    """Steps 1-2: ``group`` samples of each prompt, their log-probs, the reference's, and the reward
    (with ``step_fn``, a process reward model's, each step's scores kept)."""
    from alignlab.models import sample

    rows = [p for p in prompts for _ in range(group)]  # prompt-major: the sampler encodes each prompt once
    policy.eval()
    completions = sample(policy, tokenizer, rows, sampling, seeds=seeds)
    policy.train()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask, target = batch_tensors([Example(c.prompt, c.prompt_ids, c.token_ids) for c in completions], pad,
                                      device)  # (b, T)
    with torch.no_grad():
        old_logps = per_position([[t.sample_logprob for t in c.tokens] for c in completions], target)  # (b, T)
        entropy = per_position([[t.entropy for t in c.tokens] for c in completions], target)  # (b, T)
        ref_logps = reference.token_logprobs(ids, mask, target, sampling.temperature)  # (b, T)
    texts = [c.text for c in completions]
    steps = step_fn(rows, texts) if step_fn is not None else None
    scores = torch.tensor([s.score for s in steps]) if steps is not None else reward_fn(rows, texts)
    has_eos = torch.tensor([c.finish_reason in ("eos", "stop") for c in completions], device=device)
    return Rollout(rows, completions, ids, mask, target, old_logps, ref_logps, entropy, scores.float().to(device),
                   has_eos, steps)  # scores: (b,)


def step_token_positions(token_texts: Sequence[str], ends: Sequence[int]) -> list[int]:
    """The response token (0-based) where each step ends, from the text each sampled token added
    to the decoded response (the sampler's Token.text: it decodes the response token by token, so
    the texts' running lengths are character offsets whatever the tokenizer). A step ending at
    character ``end`` ends at the token that brings the text to ``end`` characters; the last step
    ends at the last token (EOS or a stop string included), where the response is complete."""
    if not token_texts:
        raise ValueError("a response with no tokens has no step positions")
    reached = list(itertools.accumulate(len(t) for t in token_texts))
    last = len(token_texts) - 1
    positions = [min(bisect.bisect_left(reached, end), last) for end in ends]
    return positions[:-1] + [last] if positions else positions


def per_position(rows: list[list[float]], target: torch.Tensor) -> torch.Tensor:
    """Per-token values of each response placed at its row's target positions (B, T), 0 elsewhere."""
    counts = target.bool().sum(-1).tolist()
    if counts != [len(row) for row in rows]:
        raise RuntimeError(f"response lengths {[len(r) for r in rows]} differ from the batch's {counts}")
    out = torch.zeros(target.shape, dtype=torch.float32, device=target.device)
    flat = torch.tensor([v for row in rows for v in row], dtype=torch.float32, device=target.device)
    return out.masked_scatter(target.bool(), flat)


def train_online(config, method: GroupMethod, progress: bool = True, hooks: Hooks | None = None) -> Run:
    """Run (or resume) a group method; returns the run. The policy is saved in the run folder."""
    from tqdm import tqdm

    from alignlab.data.formats import read_prompt_file
    from alignlab.models import SampleConfig
    from alignlab.train.reward_fn import load_reward, load_step_reward

    run = None
    if config.resume is not None:
        config, run = reopen_run(config, method.name)
    check_online(config)
    accelerator = accelerator_for(config.device)
    world, rank = accelerator.num_processes, accelerator.process_index
    local_rows, local_mb, local_micro = _sizes(config, world)
    torch.manual_seed(config.seed)

    # Setup: prompts, reward, policy, reference, optimizer
    prompts = read_prompt_file(config.prompts)
    process = method.process_rewards(config)
    reward_fn, step_fn = None, None
    if process:  # each step's score and where it ends: a process reward model
        step_fn, described = load_step_reward(config.reward)
    else:
        reward_fn, described = load_reward(config.reward)
    gold_fn, gold_described = load_reward(config.gold) if config.gold else (None, None)
    policy, tokenizer = load_policy(config.model, config.dtype, config.lora, config.lora_r, config.lora_alpha,
                                    config.seed, config.vocabulary)
    policy.to(accelerator.device)  # --device: the reference copy and every tensor below follow
    reference = Reference(policy)
    if run is None:
        run = Run.create(method.name, config, seed=config.seed) if accelerator.is_main_process else None
        run = broadcast_run(accelerator, run)
    keep_freed_memory()
    if world == 1:
        sparse_embedding_gradients(policy)
    module = LogProbs(policy)
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    wrapped = accelerator.prepare(module)
    steps_per_iteration = config.epochs * (local_rows // local_mb)
    optimizer = adamw(trainable.values(), lr=config.lr or (1.5e-4 if config.lora else 1e-5), eps=1e-5)
    scheduler = (linear_schedule(optimizer, 0, config.iterations * steps_per_iteration)
                 if config.lr_schedule == "linear" else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    sampling = SampleConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed,
                            alternatives=0, stop=list(config.stop), entropy=True)
    kl_in_reward = method.kl_in_reward(config)

    start, ledger = 0, []
    checkpoint = latest_checkpoint(run.path) if config.resume else None
    if checkpoint is not None:
        start, extra = load_checkpoint(checkpoint, trainable, optimizer, scheduler)
        ledger = extra.get("ledger", [])
        if accelerator.is_main_process:
            truncate_metrics(run.path, start)
        if hooks is not None:
            hooks.resume(run)

    local_prompts = config.prompts_per_iteration // world
    stop_at = min(config.iterations, start + config.stop_after) if config.stop_after else config.iterations
    bar = tqdm(total=config.iterations, initial=start, desc=method.name, unit="it",
               disable=not (progress and accelerator.is_main_process))
    for it in range(start, stop_at):
        # 1. generate: this process's prompts, each answered group_size times with its own seeds
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(config.seed * 7919 + it)).tolist()
        chosen = [order[(it * config.prompts_per_iteration + g) % len(prompts)]
                  for g in range(rank * local_prompts, (rank + 1) * local_prompts)]
        first_row = rank * local_rows
        seeds = [config.seed * 1_000_003 + it * 10_007 + first_row + j for j in range(local_rows)]
        # 2. score
        roll = generate(policy, tokenizer, reference, [prompts[i] for i in chosen], config.group_size, sampling,
                        seeds, reward_fn, accelerator.device, step_fn)
        scores = roll.scores / config.reward_scale
        if config.missing_eos_penalty:
            scores = torch.where(roll.has_eos, scores, scores - config.missing_eos_penalty)
        # 3. the KL leash in the reward: beta * sum_t (log pi - log ref) per sequence
        tmask = roll.target.float()
        seq_kl = (kl_k1(roll.old_logps, roll.ref_logps) * tmask).sum(-1)  # (b,)
        rewards = scores - sequence_kl_penalty(roll.old_logps, roll.ref_logps, roll.target, config.kl_coef) \
            if kl_in_reward else scores
        # 4. advantages over the whole rollout: gather every process's rewards, keep this process's slice
        all_rewards = accelerator.gather(rewards)  # (B,)
        if process:  # per token, from every step's reward
            advantages = process_advantages(method, config, roll, accelerator, first_row, local_rows)  # (b, T)
        else:
            advantages = method.advantages(all_rewards, config)[first_row:first_row + local_rows]  # (b,)
        # 5. update
        stats = _update(config, method, wrapped, module, roll, advantages, optimizer, scheduler, hooks, trainable,
                        accelerator, it, local_rows, local_mb, local_micro)

        # Bookkeeping: KL per response, the ledger of pressure applied, the sample table
        reduce = lambda t: float(accelerator.reduce(t.reshape(1).float().to(accelerator.device), "mean"))  # noqa: E731
        kl_response = reduce(seq_kl.mean())
        kl3_response = reduce((kl_k3(roll.old_logps, roll.ref_logps) * tmask).sum(-1).mean())
        grouped = all_rewards.view(-1, config.group_size)
        metrics = {"objective/kl": kl_response, "objective/kl_k3": kl3_response,
                   "objective/entropy": reduce((roll.entropy * tmask).sum(-1).mean()),
                   "objective/scores": reduce(roll.scores.mean()),
                   "objective/rlhf_reward": reduce(scores.mean()) - config.kl_coef * kl_response,
                   "objective/kl_coef": config.kl_coef, "reward_std": float(all_rewards.std()) if len(all_rewards) > 1
                   else 0.0, "frac_reward_zero_std": float((grouped.std(1) < 1e-8).float().mean())
                   if config.group_size > 1 else 1.0,
                   "response_length": reduce(tmask.sum(-1).mean()), "eos_rate": reduce(roll.has_eos.float().mean()),
                   "learning_rate": scheduler.get_last_lr()[0], **stats}
        entry = {"step": it + 1, "objective/kl": kl_response, "objective/kl_k3": kl3_response,
                 "objective/scores": metrics["objective/scores"], "kl_coef": config.kl_coef}
        if gold_fn is not None:  # the held-out judge only watches: nothing it says reaches the loss
            gold = gold_fn(roll.prompts, [c.text for c in roll.completions]).float()
            metrics["gold"] = entry["gold"] = reduce(gold.mean())
        ledger.append(entry)
        if accelerator.is_main_process:
            run.log_metrics(it + 1, **metrics)
            bar.update(1)
            bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{kl_response:.2f}")
            if config.sample_every and (it + 1) % config.sample_every == 0:
                kls = seq_kl.tolist()
                print(sample_table(roll.prompts, roll.completions, roll.scores.tolist(), kls, it + 1), file=sys.stderr)
                for c, s, k in zip(roll.completions, roll.scores.tolist(), kls):
                    run.log_sample(iteration=it + 1, prompt=c.prompt, response=c.text, score=s, kl=k,
                                   finish_reason=c.finish_reason)
        if config.snapshot_every and (it + 1) % config.snapshot_every == 0 and it + 1 < config.iterations:
            if accelerator.is_main_process:
                save_snapshot(policy, tokenizer, run.path, it + 1, config.model, method.name,
                              {"run": run.id, "kl_coef": config.kl_coef})
            accelerator.wait_for_everyone()
        if (it + 1) % config.checkpoint_every == 0 or it + 1 == stop_at:
            if accelerator.is_main_process:
                save_checkpoint(run.path, it + 1, trainable, optimizer, scheduler, {"ledger": ledger})
            accelerator.wait_for_everyone()
    bar.close()
    if hooks is not None and accelerator.is_main_process:
        hooks.finish(run)
    sparse_embedding_gradients(policy, enable=False)
    if stop_at < config.iterations:
        if accelerator.is_main_process:
            print(f"alignlab {method.name}: stopped at iteration {stop_at} of {config.iterations}; continue with "
                  f"`alignlab {method.name} --resume {run.id}`", file=sys.stderr)
        return run

    if accelerator.is_main_process:
        write_pressure(run.path, method.name, config.model, config.kl_coef, ledger,
                       {"reward": described, "gold": gold_described, "kl_in": "reward" if kl_in_reward else "loss"})
        out = save_policy(policy, tokenizer, config.out or run.path / "policy", config.model, method.name,
                          {"run": run.id, "kl_coef": config.kl_coef})
        final = ledger[-1] if ledger else {}
        run.finish(policy=str(out), iterations=config.iterations, kl=final.get("objective/kl"),
                   score=final.get("objective/scores"), kl_coef=config.kl_coef)
    accelerator.wait_for_everyone()
    return run


def process_advantages(method: GroupMethod, config, roll: Rollout, accelerator, first_row: int,
                       rows: int) -> torch.Tensor:
    """Step 4 with process rewards: per-token advantages (b, T) by the method's step_advantages.
    A step's reward is its score over reward_scale; a response that never ended (no EOS or stop
    string) has missing_eos_penalty taken off its last step's. Every process's steps are gathered,
    so a normalisation over the rollout sees them all, as step 4 does with sequence rewards."""
    from accelerate.utils import gather_object

    local = []
    for c, s, ended in zip(roll.completions, roll.steps, roll.has_eos.tolist()):
        rewards = [p / config.reward_scale for p in s.probabilities]
        if config.missing_eos_penalty and not ended:
            rewards[-1] -= config.missing_eos_penalty
        local.append((rewards, step_token_positions([t.text for t in c.tokens], s.ends), len(c.tokens)))
    everyone = gather_object(local) if accelerator.num_processes > 1 else local
    per_token = method.step_advantages([r for r, _, _ in everyone], [p for _, p, _ in everyone],
                                       [n for _, _, n in everyone], config)
    return per_position(per_token[first_row:first_row + rows], roll.target)


def _update(config, method: GroupMethod, wrapped, module, roll: Rollout, advantages: torch.Tensor, optimizer,
            scheduler, hooks, trainable, accelerator, it: int, rows: int, mb_rows: int, micro_rows: int) -> dict:
    """Step 5: epochs x minibatches over the rollout; each minibatch one optimizer step, accumulated
    over micro-batches. Returns the iteration's mean statistics."""
    stats: dict[str, list[float]] = {}
    steps = rows // mb_rows
    for epoch in range(config.epochs):
        perm = torch.randperm(rows, generator=torch.Generator().manual_seed(config.seed + it * 101 + epoch))
        for mb in range(steps):
            sel = perm[mb * mb_rows:(mb + 1) * mb_rows]
            tokens = roll.target[sel].sum().float().reshape(1).to(accelerator.device)
            num_items = float(accelerator.reduce(tokens, "sum")[0]) / accelerator.num_processes  # as TRL's dapo
            micro_batches = [sel[i:i + micro_rows] for i in range(0, mb_rows, micro_rows)]

            def micro_loss(net, part):
                batch = {"logps": net(roll.ids[part], roll.mask[part], roll.target[part], config.temperature),
                         "old_logps": roll.old_logps[part], "ref_logps": roll.ref_logps[part],
                         "target": roll.target[part], "advantages": advantages[part],
                         "share": len(part) / mb_rows, "num_items": num_items}
                return method.loss(batch, config)

            total = 0.0
            for part in micro_batches:
                loss, step_stats = micro_loss(wrapped, part)
                check_finite(loss, it, f"{method.name} loss", f"minibatch {mb} of epoch {epoch}")
                accelerator.backward(loss)
                total += float(loss.detach())
                for k, v in step_stats.items():
                    stats.setdefault(k, []).append(float(v))
            update = (it * config.epochs + epoch) * steps + mb + 1
            ctx = StepContext(update, module, torch.tensor(total), optimizer, trainable,
                              loss_fn=lambda sel=sel: sum(micro_loss(module, p)[0] for p in
                                                          [sel[i:i + micro_rows] for i in range(0, mb_rows, micro_rows)]))
            optimizer_step(ctx, scheduler, config.max_grad_norm, hooks)
            stats.setdefault("loss/policy_avg", []).append(total)
            stats.setdefault("grad_norm", []).append(ctx.grad_norm)
            stats.setdefault("grad_clipped", []).append(float(ctx.clipped))
            for k, v in ctx.metrics.items():  # the hooks' scalars, averaged over the iteration's updates
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    stats.setdefault(k, []).append(float(v))
    return {k: float(torch.tensor(v).mean()) for k, v in stats.items() if not all(math.isnan(x) for x in v)}


def sample_table(prompts, completions, scores: list[float], kls: list[float], iteration: int, rows: int = 4) -> str:
    """What the policy writes, what it scores, what it costs."""
    lines = [f"--- samples at iteration {iteration} ---", f"{'score':>7} {'KL':>7}  prompt -> response"]
    for p, c, s, k in list(zip(prompts, completions, scores, kls))[:rows]:
        text = (p[-40:] + " -> " + c.text).replace("\n", " ")
        lines.append(f"{s:>7.3f} {k:>7.2f}  {text[:110]}")
    return "\n".join(lines)
