"""RLOO: REINFORCE with a leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024), as TRL 1.16 has it.

Each prompt is answered group_size times; a sample's advantage is its reward less the mean
reward of the other samples of its group, so no value model is trained and the baseline is
unbiased. The whole response is one action: the loss clips the ratio of the sequence's
probability under the policy to the sampling policy's,

    loss = mean_i -min(r_i A_i, clip(r_i, 1 - eps, 1 + eps_high) A_i),  r_i = exp(log pi(y_i) - log pi_old(y_i)),

which with one epoch and one minibatch is REINFORCE with the baseline (r = 1 at the first step).
The KL leash to the reference is, by default and as in the RLOO paper, in the reward: the score
less beta * sum_t (log pi - log ref) of the sampled sequence; `--kl-in loss` adds beta * sum_t k3
to the loss instead. The loop (sampling, scoring, updates, ledger, resume) is train/online.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from alignlab.runs import Run
from alignlab.train.components import clipped_ratio_loss, kl_k3, rloo_advantages, sequence_logprob
from alignlab.train.hooks import Hooks
from alignlab.train.online import GroupMethod, train_online
from alignlab.train.options import DeviceOptions, LoraOptions, MonitorOptions, OnlineOptions, VocabularyOptions


@dataclass
class RLOOConfig(DeviceOptions, MonitorOptions, LoraOptions, VocabularyOptions, OnlineOptions):
    """Online RL with REINFORCE leave-one-out against a reward model or a Python reward function."""

    baseline: Literal["group", "batch"] = "group"
    """Leave-one-out over the prompt's group, or over the whole rollout (for group_size 1)."""
    normalize_advantages: bool = False
    """Whiten the advantages over the rollout (TRL's normalize_advantages)."""
    kl_in: Literal["reward", "loss"] = "reward"
    """Where the KL leash acts: beta * sequence KL (k1) subtracted from the reward, or beta * sum_t k3 added to the loss."""


def advantages(rewards: torch.Tensor, config: RLOOConfig) -> torch.Tensor:
    """Leave-one-out advantages over the rollout's rewards (B,), optionally whitened."""
    adv = rloo_advantages(rewards, config.group_size, config.baseline)
    if config.normalize_advantages and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-4)
    return adv


def loss(batch: dict, config: RLOOConfig) -> tuple[torch.Tensor, dict]:
    """The sequence-level clipped REINFORCE loss of one micro-batch, weighted by its share of the minibatch."""
    target = batch["target"]
    logp = sequence_logprob(batch["logps"], target)  # (m,)
    old = sequence_logprob(batch["old_logps"], target)  # (m,)
    per_sequence = clipped_ratio_loss(logp, old, batch["advantages"], config.cliprange,
                                      config.cliprange_high or config.cliprange)  # (m,)
    stats = {}
    if config.kl_in == "loss" and config.kl_coef:
        k3 = (kl_k3(batch["logps"], batch["ref_logps"]) * target.float()).sum(-1)  # (m,)
        per_sequence = per_sequence + config.kl_coef * k3
        stats["loss/kl_k3"] = float(k3.detach().mean())
    with torch.no_grad():
        ratio = torch.exp(logp - old)
        high, low = 1 + (config.cliprange_high or config.cliprange), 1 - config.cliprange
        clipped = ((ratio > high) & (batch["advantages"] > 0)) | ((ratio < low) & (batch["advantages"] < 0))
        stats.update({"policy/clipfrac_avg": float(clipped.float().mean()), "val/ratio": float(ratio.mean())})
    return per_sequence.mean() * batch["share"], stats


RLOO = GroupMethod("rloo", advantages, loss, kl_in_reward=lambda config: config.kl_in == "reward")


def train_rloo(config: RLOOConfig, progress: bool = True, hooks: Hooks | None = None) -> Run:
    """Run (or resume) RLOO; returns the run. The policy is saved in the run folder."""
    if config.group_size < 2 and config.baseline == "group":
        raise ValueError("group_size is 1: a leave-one-out group baseline needs 2 or more; use --baseline batch")
    return train_online(config, RLOO, progress, hooks)
