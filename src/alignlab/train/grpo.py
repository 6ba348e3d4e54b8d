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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from alignlab.runs import Run
from alignlab.train.components import aggregate_token_loss, clipped_ratio_loss, grpo_advantages, kl_k3
from alignlab.train.hooks import Hooks
from alignlab.train.online import GroupMethod, train_online
from alignlab.train.options import LoraOptions, MonitorOptions, OnlineOptions, VocabularyOptions


@dataclass
class GRPOConfig(MonitorOptions, LoraOptions, VocabularyOptions, OnlineOptions):
    """Online RL with GRPO against a reward model or a Python reward function."""

    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    """How per-token losses are averaged (TRL 1.16's names and default)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide centred rewards by the group's std, the rollout's, or nothing (Dr. GRPO)."""
    kl_in: Literal["reward", "loss"] = "loss"
    """Where the KL leash acts: beta * sum_t k3 added to the per-token loss, or beta * sequence KL (k1) subtracted from the reward."""


def advantages(rewards: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
    """Group-normalised advantages over the rollout's rewards (B,)."""
    return grpo_advantages(rewards, config.group_size, config.scale_rewards)


def loss(batch: dict, config: GRPOConfig) -> tuple[torch.Tensor, dict]:
    """The token-level clipped loss of one micro-batch, averaged as loss_type says."""
    target = batch["target"]
    adv = batch["advantages"][:, None]  # (m, 1): every token of a response shares it
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


GRPO = GroupMethod("grpo", advantages, loss, kl_in_reward=lambda config: config.kl_in == "reward")


def train_grpo(config: GRPOConfig, progress: bool = True, hooks: Hooks | None = None) -> Run:
    """Run (or resume) GRPO; returns the run. The policy is saved in the run folder."""
    if config.group_size < 2:
        raise ValueError("group_size is 1: GRPO normalises within a group of 2 or more samples per prompt")
    return train_online(config, GRPO, progress, hooks)
