"""RLHF with PPO, as in Stiennon et al. 2020 and "The N implementation details of RLHF with PPO".

Read top to bottom: the config, the policy-and-value module, then one iteration:
  # 1. generate   # 2. score   # 3. per-token rewards with KL   # 4. advantages   # 5. update
Every detail the spec lists is here: the reward at the last token of the (truncated) response,
a penalty for responses that never emit EOS, logits divided by the sampling temperature when
computing log-probs, a per-token KL penalty -beta (log pi - log ref) with an adaptive or fixed
beta, GAE (gamma 1, lambda 0.95), advantage (and optionally reward) whitening, clipped policy
and value losses, several epochs of minibatches per rollout, a linearly annealed (or constant) learning rate,
dropout off, and a sample table every N iterations.

Dense rewards (`--dense-rewards`, with a process reward model as the reward): instead of one
score at the last token, each step's increment of the response's score is placed at the token
where the step ends: aggregate(p_1..p_k) - aggregate(p_1..p_k-1) for step k (train/prm.py
step_increments). The increments of a response sum to its sequence-level score, so the return
from the first token is the same number and only the credit moves: GAE (lambda < 1) charges a
step that lowered the score (a wrong step under 'min') more than the steps around it. The
per-token KL penalty and the missing-EOS penalty (at the last token) are as without.

Several processes: each samples its share of the rollout's prompts; whitening statistics and
the KL that steers beta are reduced over processes, and DDP averages gradients, so with one
minibatch per epoch 2 processes take the steps 1 process takes.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from alignlab.models.forward import body_hidden_states, decoder
from alignlab.models.scoring import target_logprobs
from alignlab.models.vocab import vocabulary
from alignlab.runs import Run
from alignlab.train.options import DeviceOptions, LoraOptions, MonitorOptions, VocabularyOptions
from alignlab.train.components import (AdaptiveKLController, FixedKLController, clipped_policy_loss,
                                       clipped_value_loss, gae, kl_k1, kl_k3, masked_mean)
from alignlab.train.hooks import Hooks, StepContext
from alignlab.train.loop import keep_freed_memory
from alignlab.train.online import per_position, step_token_positions
from alignlab.train.loop import (accelerator_for, adamw, broadcast_run, check_finite, latest_checkpoint, linear_schedule, load_checkpoint,
                                 optimizer_step, reopen_run, save_checkpoint, sparse_embedding_gradients, truncate_metrics)
from alignlab.train.policy import (Example, Reference, batch_tensors, load_policy, save_policy, save_snapshot,
                                   write_pressure)
from alignlab.train.reward_fn import load_reward, load_step_reward


@dataclass
class PPOConfig(DeviceOptions, MonitorOptions, LoraOptions, VocabularyOptions):
    """RLHF with PPO against a reward model or a Python reward function."""

    prompts: Path | None = None
    """Training prompts: one per line (.txt) or JSON lines with a 'prompt' field (.jsonl)."""
    reward: str = ""
    """A reward model folder or reward run id, or a function module:function / file.py:function (prompt, response) -> float."""
    gold: str | None = None
    """Optionally a held-out judge (same forms as --reward), never trained on: scores each rollout for the ledger."""
    model: str = "gemma-3-270m"
    """The initial policy, also the frozen reference (the weak prior)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights and compute precision."""
    value_init: Literal["zero", "reward_model"] = "zero"
    """The value head starts at zero, or from the reward model's head (same backbone size needed)."""
    iterations: int = 100
    """Rollouts (generate, score, update) to run."""
    rollout_batch: int = 8
    """Prompts per rollout, across processes."""
    ppo_epochs: int = 4
    """Passes over each rollout."""
    minibatch_size: int = 4
    """Rollout rows per optimizer step, across processes."""
    max_new_tokens: int = 32
    """Longest response."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a response ends after the first one (which stays in it and counts as a proper end, like EOS)."""
    temperature: float = 0.7
    """Sampling temperature; log-probs are computed on logits divided by it."""
    kl_coef: float = 0.05
    """Initial KL coefficient beta in the per-token reward -beta (log pi - log ref)."""
    kl_target: float = 0.0
    """Adaptive KL: steer beta so KL per response approaches this many nats (0: fixed beta)."""
    kl_horizon: int = 10000
    """Adaptive KL: horizon (in rollout rows) of the controller."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimator in the reward (k1 = log pi - log ref; k3 is non-negative)."""
    missing_eos_penalty: float = 1.0
    """Subtracted from the score of a response that never emitted EOS (0: off)."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    whiten_rewards: bool = False
    """Whiten per-token rewards (without shifting their mean) before GAE."""
    cliprange: float = 0.2
    """Policy ratio clip."""
    cliprange_value: float = 0.2
    """Value clip around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    lr: float = 0.0
    """Peak learning rate (0: 1e-5 full, 1e-4 LoRA)."""
    lr_schedule: Literal["linear", "constant"] = "linear"
    """Anneal the learning rate linearly to 0 over the run (the Stiennon et al. recipe), or keep it constant."""
    reward_scale: float = 1.0
    """Scores are divided by this before the KL penalty: pass the reward's spread so kl_coef is per unit of it."""
    dense_rewards: bool = False
    """--reward must be a process reward model: each step's increment of the response's score (its aggregate) is placed at the token where the step ends, instead of the whole score at the last token; the increments sum to the score."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    sample_every: int = 10
    """Print and save a sample table (prompt, response, score, KL) every N iterations (0: never)."""
    seed: int = 0
    """Seed for prompt order, sampling and minibatch order."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every this many iterations."""
    snapshot_every: int = 0
    """Also save the policy every N iterations in snapshots/step-N (LoRA: the adapter only), to evaluate the path training took (0: never)."""
    stop_after: int = 0
    """Stop after this many iterations of this invocation, leaving a resumable run (0: run to the end)."""
    resume: str | None = None
    """Resume this run (id or folder) from its last checkpoint."""
    out: Path | None = None
    """Where to save the policy (default: the run folder's 'policy')."""


class PolicyAndValue(nn.Module):
    """One body pass gives both: per-token log-probs at temperature T and values, for the
    response positions. The value of the state before token t is read where its logits are."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def values_from_states(self, states: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Values (B, T) at the response positions from the final hidden states the sampler kept
        (N, D), one per response token in row order: the state each token's logits came from,
        which is where ``forward`` reads the value of the state before that token."""
        if states.shape[0] != int(target.bool().sum()):
            raise RuntimeError(f"{states.shape[0]} hidden states for {int(target.bool().sum())} response tokens")
        values = torch.zeros(target.shape, dtype=torch.float32, device=target.device)
        return values.masked_scatter(target.bool(), self.value_head(states.to(target.device).float())[:, 0])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, temperature: float):
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = body_hidden_states(decoder(self.policy), ids, mask, positions)  # shared prefixes once, packed
        select = target[:, 1:].bool()  # (B, T-1): hidden at t-1 predicts token t
        h = hidden[:, :-1][select]  # (N, D)
        tokens = ids[:, 1:][select]
        subset = vocabulary(self.policy)
        if subset is not None:  # logits cover a kept subset of the vocabulary (models/vocab.py)
            tokens = subset.to_local(tokens)
        logps = target_logprobs(self.policy, h, tokens, temperature)  # (N,)
        out_lp = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        out_lp[:, 1:] = out_lp[:, 1:].masked_scatter(select, logps)
        values = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        values[:, 1:] = values[:, 1:].masked_scatter(select, self.value_head(h.float())[:, 0])
        return out_lp, values


def dense_step_rewards(steps: list, token_texts: list[list[str]], target: torch.Tensor) -> torch.Tensor:
    """(b, T) rewards: each step's increment of its response's score (StepScores.increments) at
    the response token where the step ends (step_token_positions, from each token's text), 0
    elsewhere; target (b, T) marks the response tokens. Each row sums to its response's score."""
    rows = []
    for scored, texts in zip(steps, token_texts):
        row = [0.0] * len(texts)
        for value, t in zip(scored.increments(), step_token_positions(texts, scored.ends)):
            row[t] += value
        rows.append(row)
    return per_position(rows, target)


def global_whiten(values: torch.Tensor, mask: torch.Tensor, accelerator, shift_mean: bool = True) -> torch.Tensor:
    """Whitening with statistics over every process's rows (so 2 processes whiten as 1 does)."""
    m = mask.to(values.dtype)
    stats = torch.stack([(values * m).sum(), (values * values * m).sum(), m.sum()]).to(accelerator.device)
    total, total_sq, count = accelerator.reduce(stats, "sum").tolist()
    mean = total / max(count, 1)
    var = max(total_sq / max(count, 1) - mean * mean, 0.0)
    out = (values - mean) / math.sqrt(var + 1e-8)
    return (out + mean if not shift_mean else out) * m


def train_ppo(config: PPOConfig, progress: bool = True, hooks: Hooks | None = None) -> Run:
    """Run (or resume) PPO; returns the run. The policy is saved in the run folder."""
    from tqdm import tqdm

    from alignlab.data.formats import read_prompt_file
    from alignlab.models import SampleConfig, sample

    run = None
    if config.resume is not None:
        config, run = reopen_run(config, "ppo")
    _check(config)
    accelerator = accelerator_for(config.device)
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.rollout_batch % world or config.minibatch_size % world or config.rollout_batch % config.minibatch_size:
        raise ValueError(f"rollout_batch {config.rollout_batch} must split into minibatches of {config.minibatch_size}, "
                         f"and both over {world} process(es)")
    torch.manual_seed(config.seed)

    # Setup: prompts, reward, policy + value head, reference, optimizer
    if config.prompts is None:
        raise ValueError("give --prompts FILE")
    prompts = read_prompt_file(config.prompts)
    reward_fn, step_fn = None, None
    if config.dense_rewards:  # each step's score and where it ends: a process reward model
        step_fn, described = load_step_reward(config.reward)
    else:
        reward_fn, described = load_reward(config.reward)
    gold_fn, gold_described = load_reward(config.gold) if config.gold else (None, None)
    policy, tokenizer = load_policy(config.model, config.dtype, config.lora, config.lora_r, config.lora_alpha,
                                    config.seed, config.vocabulary)
    policy.to(accelerator.device)  # --device: the reference copy and every tensor below follow
    module = PolicyAndValue(policy)
    if config.value_init == "reward_model":
        _value_from_reward_model(module, config.reward)
    reference = Reference(policy)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if run is None:
        run = Run.create("ppo", config, seed=config.seed) if accelerator.is_main_process else None
        run = broadcast_run(accelerator, run)
    keep_freed_memory()  # reuse freed blocks: no page faults every step (train/loop.py)
    if world == 1:
        sparse_embedding_gradients(policy)  # exact; saves a dense 262k-row gradient a step
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    wrapped = accelerator.prepare(module)
    updates_per_iteration = config.ppo_epochs * (config.rollout_batch // config.minibatch_size)
    total_updates = config.iterations * updates_per_iteration
    optimizer = adamw(trainable.values(), lr=config.lr or (1e-4 if config.lora else 1e-5), eps=1e-5)
    scheduler = (linear_schedule(optimizer, 0, total_updates) if config.lr_schedule == "linear"
                 else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    kl_ctl = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon) if config.kl_target
              else FixedKLController(config.kl_coef))
    # Temperature only (no top-k/top-p), so the sampler's log-prob of each drawn token is the
    # policy's log-prob under the distribution PPO optimises; it records them, and their entropy.
    # It also keeps each token's final hidden state: the rollout's values are the value head on those.
    sampling = SampleConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed,
                            alternatives=0, stop=list(config.stop), entropy=True, hidden=True)

    start, ledger = 0, []
    checkpoint = latest_checkpoint(run.path) if config.resume else None
    if checkpoint is not None:
        start, extra = load_checkpoint(checkpoint, trainable, optimizer, scheduler)
        kl_ctl.value, ledger = extra["kl_coef"], extra.get("ledger", [])
        if accelerator.is_main_process:
            truncate_metrics(run.path, start)
        if hooks is not None:
            hooks.resume(run)

    local = config.rollout_batch // world
    local_mb = config.minibatch_size // world
    stop_at = min(config.iterations, start + config.stop_after) if config.stop_after else config.iterations
    bar = tqdm(total=config.iterations, initial=start, desc="ppo", unit="it",
               disable=not (progress and accelerator.is_main_process))
    for it in range(start, stop_at):
        # 1. generate: this process's share of the rollout, each row with its own seed
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(config.seed * 7919 + it)).tolist()
        rows = [order[(it * config.rollout_batch + g) % len(prompts)] for g in range(config.rollout_batch)]
        mine = list(range(rank * local, (rank + 1) * local))
        batch_prompts = [prompts[rows[g]] for g in mine]
        seeds = [config.seed * 1_000_003 + it * 10_007 + g for g in mine]
        module.eval()
        completions = sample(policy, tokenizer, batch_prompts, sampling, seeds=seeds)
        module.train()
        examples = [Example(c.prompt, c.prompt_ids, c.token_ids) for c in completions]
        ids, mask, target = batch_tensors(examples, pad, accelerator.device)  # (b, T)
        tmask = target.float()

        # 2. score: the reward at the last token of the response, less the missing-EOS penalty
        # (dense: each step's score, and the response's, which its steps' increments sum to)
        texts = [c.text for c in completions]
        steps = step_fn(batch_prompts, texts) if step_fn is not None else None
        scores = torch.tensor([s.score for s in steps]) if steps is not None else reward_fn(batch_prompts, texts)
        scores = scores.float().to(accelerator.device)  # (b,)
        raw_scores = scores.clone()
        scores = scores / config.reward_scale
        has_eos = torch.tensor([c.finish_reason in ("eos", "stop") for c in completions], device=accelerator.device)
        if config.missing_eos_penalty:
            scores = torch.where(has_eos, scores, scores - config.missing_eos_penalty)

        # 3. per-token rewards: -beta * KL estimate at every token, plus the score at the last one.
        # The policy's log-probs (and entropies) are the sampler's, as TRL takes them from generate()'s
        # scores: computed from the same weights, with a KV cache instead of one full pass (equal up to
        # float rounding, ~1e-6). So are the values: the value head on the sampler's final hidden
        # states, the states a body pass would give (TRL runs its separate value model over the rows).
        with torch.no_grad():
            old_logps = per_position([[t.sample_logprob for t in c.tokens] for c in completions], target)  # (b, T)
            entropy = per_position([[t.entropy for t in c.tokens] for c in completions], target)  # (b, T)
            old_values = module.values_from_states(torch.stack([t.hidden for c in completions for t in c.tokens]),
                                                   target)  # (b, T)
            ref_logps = reference.token_logprobs(ids, mask, target, config.temperature)  # (b, T)
        kl_tokens = (kl_k1 if config.kl_estimator == "k1" else kl_k3)(old_logps, ref_logps) * tmask
        rewards = -kl_ctl.value * kl_tokens
        last = (target.long() * torch.arange(target.shape[1], device=target.device)).argmax(-1)  # (b,)
        if steps is not None:  # dense: each step's increment where it ends, the missing-EOS penalty at the last token
            rewards += dense_step_rewards(steps, [[t.text for t in c.tokens] for c in completions], target) \
                / config.reward_scale
            rewards[torch.arange(len(examples)), last] += scores - raw_scores / config.reward_scale
        else:
            rewards[torch.arange(len(examples)), last] += scores
        if config.whiten_rewards:
            rewards = global_whiten(rewards, target, accelerator, shift_mean=False)

        # 4. advantages by GAE on the rollout's values, whitened over all processes
        advantages, returns = gae(rewards, old_values, target, config.gamma, config.lam)
        advantages = global_whiten(advantages, target, accelerator)

        # 5. update: several epochs of minibatches over the rollout
        stats: dict[str, list[float]] = {}
        for epoch in range(config.ppo_epochs):
            perm = torch.randperm(local, generator=torch.Generator().manual_seed(config.seed + it * 101 + epoch))
            for mb in range(local // local_mb):
                sel = perm[mb * local_mb:(mb + 1) * local_mb]
                # Token means over the whole minibatch, not per process: scale each process's mean by
                # its share of the tokens (times the process count, as DDP averages gradients).
                tokens = target[sel].sum().float()
                share = tokens / accelerator.reduce(tokens.reshape(1).to(accelerator.device), "sum")[0] * world

                def minibatch_loss(net, sel=sel, share=share):
                    new_logps, new_values = net(ids[sel], mask[sel], target[sel], config.temperature)
                    pg_loss, pg = clipped_policy_loss(new_logps, old_logps[sel], advantages[sel], target[sel],
                                                      config.cliprange)
                    vf_loss, vf_clipfrac = clipped_value_loss(new_values, old_values[sel], returns[sel], target[sel],
                                                              config.cliprange_value)
                    pg_loss, vf_loss = pg_loss * share, vf_loss * share
                    return pg_loss + config.vf_coef * vf_loss, pg_loss, vf_loss, pg, vf_clipfrac

                loss, pg_loss, vf_loss, pg, vf_clipfrac = minibatch_loss(wrapped)
                check_finite(loss, it, "PPO loss", f"minibatch {mb} of epoch {epoch}")
                accelerator.backward(loss)
                update = (it * config.ppo_epochs + epoch) * (local // local_mb) + mb + 1  # optimizer steps so far
                ctx = StepContext(update, module, loss.detach(), optimizer, trainable,
                                  loss_fn=lambda fn=minibatch_loss: fn(module)[0])
                optimizer_step(ctx, scheduler, config.max_grad_norm, hooks)
                for k, v in {"policy/approxkl_avg": pg["approxkl"], "policy/clipfrac_avg": pg["clipfrac"],
                             "loss/policy_avg": pg_loss, "loss/value_avg": vf_loss, "val/clipfrac_avg": vf_clipfrac,
                             "val/ratio": pg["ratio"]}.items():
                    stats.setdefault(k, []).append(float(accelerator.reduce(v.detach().reshape(1).float(), "mean")))
                stats.setdefault("grad_norm", []).append(ctx.grad_norm)
                stats.setdefault("grad_clipped", []).append(float(ctx.clipped))
                for k, v in ctx.metrics.items():  # the hooks' scalars, averaged over the iteration's updates
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        stats.setdefault(k, []).append(float(v))

        # Bookkeeping: KL per response steers beta; the ledger records the pressure applied
        reduce = lambda t: float(accelerator.reduce(t.reshape(1).float().to(accelerator.device), "mean"))  # noqa: E731
        kl_response = reduce((kl_k1(old_logps, ref_logps) * tmask).sum(-1).mean())
        kl3_response = reduce((kl_k3(old_logps, ref_logps) * tmask).sum(-1).mean())
        beta_used = kl_ctl.value
        kl_ctl.update(kl_response, config.rollout_batch)
        var_returns = masked_mean((returns - masked_mean(returns, target)) ** 2, target)
        explained = 1 - masked_mean((returns - old_values) ** 2, target) / var_returns.clamp(min=1e-8)
        metrics = {"objective/kl": kl_response, "objective/kl_k3": kl3_response,
                   "objective/entropy": reduce((entropy * tmask).sum(-1).mean()),
                   "objective/scores": reduce(raw_scores.mean()),
                   "objective/rlhf_reward": reduce(scores.mean()) - beta_used * kl_response,
                   "objective/kl_coef": beta_used, "val/explained_variance": reduce(explained),
                   "response_length": reduce(tmask.sum(-1).mean()), "eos_rate": reduce(has_eos.float().mean()),
                   "learning_rate": scheduler.get_last_lr()[0],
                   **{k: float(torch.tensor(v).mean()) for k, v in stats.items()}}
        entry = {"step": it + 1, "objective/kl": kl_response, "objective/kl_k3": kl3_response,
                 "objective/scores": metrics["objective/scores"], "kl_coef": beta_used}
        if gold_fn is not None:  # the held-out judge only watches: nothing it says reaches the loss
            metrics["gold"] = entry["gold"] = reduce(gold_fn(batch_prompts, [c.text for c in completions]).float().mean())
        ledger.append(entry)
        if accelerator.is_main_process:
            run.log_metrics(it + 1, **metrics)
            bar.update(1)
            bar.set_postfix(score=f"{metrics['objective/scores']:.3f}", kl=f"{kl_response:.2f}", beta=f"{beta_used:.3f}")
            if config.sample_every and (it + 1) % config.sample_every == 0:
                table = sample_table(batch_prompts, completions, raw_scores, (kl_tokens.sum(-1)).tolist(), it + 1)
                (tqdm.write if progress else print)(table, file=sys.stderr)
                for c, s, k in zip(completions, raw_scores.tolist(), kl_tokens.sum(-1).tolist()):
                    run.log_sample(iteration=it + 1, prompt=c.prompt, response=c.text, score=s, kl=k,
                                   finish_reason=c.finish_reason)
        if config.snapshot_every and (it + 1) % config.snapshot_every == 0 and it + 1 < config.iterations:
            if accelerator.is_main_process:
                save_snapshot(policy, tokenizer, run.path, it + 1, config.model, "ppo",
                              {"run": run.id, "kl_coef": config.kl_coef})
            accelerator.wait_for_everyone()
        if (it + 1) % config.checkpoint_every == 0 or it + 1 == stop_at:
            if accelerator.is_main_process:
                save_checkpoint(run.path, it + 1, trainable, optimizer, scheduler,
                                {"kl_coef": kl_ctl.value, "ledger": ledger})
            accelerator.wait_for_everyone()
    bar.close()
    if hooks is not None and accelerator.is_main_process:
        hooks.finish(run)
    sparse_embedding_gradients(policy, enable=False)
    if stop_at < config.iterations:
        if accelerator.is_main_process:
            print(f"alignlab ppo: stopped at iteration {stop_at} of {config.iterations}; continue with "
                  f"`alignlab ppo --resume {run.id}`", file=sys.stderr)
        return run

    if accelerator.is_main_process:
        write_pressure(run.path, "ppo", config.model, config.kl_coef, ledger,
                       {"reward": described, "gold": gold_described, "kl_target": config.kl_target or None,
                        "final_kl_coef": kl_ctl.value})
        out = save_policy(policy, tokenizer, config.out or run.path / "policy", config.model, "ppo",
                          {"run": run.id, "kl_coef": config.kl_coef})
        torch.save(module.value_head.state_dict(), run.path / "value_head.pt")
        final = ledger[-1] if ledger else {}
        run.finish(policy=str(out), iterations=config.iterations, kl=final.get("objective/kl"),
                   score=final.get("objective/scores"), kl_coef=kl_ctl.value)
    accelerator.wait_for_everyone()
    return run


def _check(config: PPOConfig) -> None:
    """Refuse settings that cannot work, before anything loads."""
    for name in ("iterations", "rollout_batch", "ppo_epochs", "minibatch_size", "max_new_tokens"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} is {getattr(config, name)}; it must be at least 1")
    if config.temperature <= 0:
        raise ValueError(f"temperature is {config.temperature}; PPO needs a positive sampling temperature")
    if config.kl_coef < 0 or config.kl_target < 0:
        raise ValueError("kl_coef and kl_target must be >= 0")
    if config.kl_target and config.kl_coef == 0:
        raise ValueError("an adaptive KL (kl_target > 0) needs a positive initial kl_coef")
    if not 0 < config.cliprange < 1:
        raise ValueError(f"cliprange is {config.cliprange}; use a value in (0, 1), e.g. 0.2")
    if config.reward_scale <= 0:
        raise ValueError(f"reward_scale is {config.reward_scale}; it must be > 0")


def _value_from_reward_model(module: PolicyAndValue, spec: str) -> None:
    """Start the value head from the reward model's head (the reward model must share the backbone size)."""
    from alignlab.train.reward_model import load_reward_model, resolve_reward_model

    rm = load_reward_model(resolve_reward_model(spec))
    if rm.head.in_features != module.value_head.in_features:
        raise ValueError(f"value_init reward_model: the reward model's hidden size {rm.head.in_features} differs "
                         f"from the policy's {module.value_head.in_features}")
    with torch.no_grad():
        module.value_head.weight.copy_(rm.head.weight.mean(0, keepdim=True))
        module.value_head.bias.copy_(rm.head.bias.mean().reshape(1))


def sample_table(prompts, completions, scores, kls, iteration: int, rows: int = 4) -> str:
    """The most useful diagnostic there is: what the policy writes, what it scores, what it costs."""
    lines = [f"--- samples at iteration {iteration} ---", f"{'score':>7} {'KL':>7}  prompt -> response"]
    for p, c, s, k in list(zip(prompts, completions, scores.tolist(), kls))[:rows]:
        text = (p[-40:] + " -> " + c.text).replace("\n", " ")
        lines.append(f"{s:>7.3f} {k:>7.2f}  {text[:110]}")
    return "\n".join(lines)
