"""GRPO: group-relative policy optimisation (Shao et al. 2024), with the loss variants TRL 1.16 names.

Each prompt is answered group_size times; a sample's advantage is its reward less its group's
mean, divided by the group's standard deviation (`--scale-rewards group`; 'batch' divides by the
rollout's, 'none' not at all, as Dr. GRPO argues). Every token of a response shares that
advantage, and the loss clips each token's probability ratio as PPO does:

    per_token = -min(r_t A, clip(r_t, 1 - eps, 1 + eps_high) A) [+ beta * k3_t],   r_t = pi(y_t) / pi_old(y_t),

averaged by the chosen variant (train/components.py aggregate_token_loss): grpo (each sequence's
token mean, then the mean over sequences), bnpo (the mean over all tokens), dr_grpo (the token
sum over rows x max_new_tokens), dapo (the token sum over the step's token count, TRL's default).
The KL leash is, as in GRPO, a k3 term in the loss (`--kl-in loss`); `--kl-in reward` subtracts
beta * the sequence's k1 KL from the reward before the group normalisation instead. The loop is
train/online.py's.

Process supervision (`--process-rewards`, DeepSeekMath section 4.1.3), with a process reward
model as the reward: every step of every response of a group gets the model's P(right), those
are normalised by the mean and standard deviation of all step rewards of the group (the
rollout's with `--scale-rewards batch`, none with `none`), and a token's advantage is the sum of
the normalised rewards of its response's steps that end at or after it. The KL leash stays the
k3 term in the loss; KL in the reward is refused (a sequence's KL belongs to no one step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from alignlab.runs import Run
from alignlab.train.components import aggregate_token_loss, clipped_ratio_loss, grpo_advantages, kl_k3
from alignlab.train.hooks import Hooks
from alignlab.train.online import GroupMethod, train_online
from alignlab.train.options import DeviceOptions, LoraOptions, MonitorOptions, OnlineOptions, VocabularyOptions


@dataclass
class GRPOConfig(DeviceOptions, MonitorOptions, LoraOptions, VocabularyOptions, OnlineOptions):
    """Online RL with GRPO against a reward model or a Python reward function."""

    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    """How per-token losses are averaged (TRL 1.16's names and default)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide centred rewards by the group's std, the rollout's, or nothing (Dr. GRPO)."""
    kl_in: Literal["reward", "loss"] = "loss"
    """Where the KL leash acts: beta * sum_t k3 added to the per-token loss, or beta * sequence KL (k1) subtracted from the reward."""
    process_rewards: bool = False
    """Process supervision (DeepSeekMath 4.1.3): --reward must be a process reward model; each step's P(right) is normalised over the group's steps and a token's advantage is the sum of the normalised rewards of the steps ending at or after it (needs --kl-in loss)."""


def advantages(rewards: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
    """Group-normalised advantages over the rollout's rewards (B,)."""
    return grpo_advantages(rewards, config.group_size, config.scale_rewards)


def step_advantages(rewards: Sequence[Sequence[float]], positions: Sequence[Sequence[int]], lengths: Sequence[int],
                    config: GRPOConfig) -> list[list[float]]:
    """Process-supervision advantages (Shao et al. 2024, 4.1.3) of the rollout's responses (prompt-
    major, B = P * group_size): per response its steps' rewards, the token (0-based) where each
    ends, and its token count; returns each response's per-token advantages. Step rewards are
    normalised by their group's mean and sample std (as grpo_advantages, with the same eps),
    and token t gets the sum of the normalised rewards of the steps ending at t or later."""
    group, eps = config.group_size, 1e-4
    if len(rewards) % group:
        raise ValueError(f"{len(rewards)} responses do not make groups of {group}")
    if config.scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards {config.scale_rewards!r}: use 'group', 'batch' or 'none'")
    # Every response has a step (an empty one scores as one), so a group pools >= 2 rewards.
    everything = torch.tensor([r for row in rewards for r in row], dtype=torch.float64)
    out = []
    for start in range(0, len(rewards), group):
        pooled = torch.tensor([r for row in rewards[start:start + group] for r in row], dtype=torch.float64)
        mean, scale = float(pooled.mean()), 1.0
        if config.scale_rewards == "group":
            scale = float(pooled.std()) + eps  # unbiased (n - 1), as grpo_advantages
        elif config.scale_rewards == "batch":
            scale = float(everything.std()) + eps
        for row, ends, length in zip(rewards[start:start + group], positions[start:start + group],
                                     lengths[start:start + group]):
            per_token = [0.0] * length
            for r, end in zip(row, ends):
                for t in range(end + 1):  # the tokens at or before the step's end
                    per_token[t] += (r - mean) / scale
            out.append(per_token)
    return out


def loss(batch: dict, config: GRPOConfig) -> tuple[torch.Tensor, dict]:
    """The token-level clipped loss of one micro-batch, averaged as loss_type says."""
    target = batch["target"]
    adv = batch["advantages"]  # (m, T) with process rewards
    if adv.dim() == 1:
        adv = adv[:, None]  # (m, 1): every token of a response shares it
    per_token = clipped_ratio_loss(batch["logps"], batch["old_logps"], adv, config.cliprange,
                                   config.cliprange_high or config.cliprange)  # (m, T)
    stats = {}
    if config.kl_in == "loss" and config.kl_coef:
        k3 = kl_k3(batch["logps"], batch["ref_logps"])  # (m, T)
        per_token = per_token + config.kl_coef * k3
        stats["loss/kl_k3"] = float((k3.detach() * target).sum() / target.sum().clamp(min=1))
    value = aggregate_token_loss(per_token, target, config.loss_type, config.max_new_tokens, batch["num_items"])
    with torch.no_grad():
        ratio = torch.exp(batch["logps"] - batch["old_logps"])
        high, low = 1 + (config.cliprange_high or config.cliprange), 1 - config.cliprange
        clipped = ((ratio > high) & (adv > 0)) | ((ratio < low) & (adv < 0))
        m = target.float()
        stats.update({"policy/clipfrac_avg": float((clipped.float() * m).sum() / m.sum().clamp(min=1)),
                      "val/ratio": float((ratio * m).sum() / m.sum().clamp(min=1))})
    # dapo already divides by the whole step's tokens; the others average over micro-batches
    return (value if config.loss_type == "dapo" else value * batch["share"]), stats


GRPO = GroupMethod("grpo", advantages, loss, kl_in_reward=lambda config: config.kl_in == "reward",
                   process_rewards=lambda config: config.process_rewards, step_advantages=step_advantages)


def train_grpo(config: GRPOConfig, progress: bool = True, hooks: Hooks | None = None) -> Run:
    """Run (or resume) GRPO; returns the run. The policy is saved in the run folder."""
    if config.group_size < 2:
        raise ValueError("group_size is 1: GRPO normalises within a group of 2 or more samples per prompt")
    if config.process_rewards and config.kl_in == "reward":
        raise ValueError("process_rewards with kl_in 'reward': a sequence's KL belongs to no one step; keep the "
                         "leash in the loss (--kl-in loss, the default), as DeepSeekMath does")
    return train_online(config, GRPO, progress, hooks)
