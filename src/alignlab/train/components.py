"""The tested math of training: small functions with shapes in their docstrings.

Each loss here has a unit test against hand-derived values (tests/train/test_components.py).
Losses return per-example values; callers weight and average them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

# -- indexing ------------------------------------------------------------------------------------


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (unmasked) token of each row, whatever side the padding is on.

    attention_mask: (B, T) of 0/1. Returns (B,) long. Reading a reward at a pad position is the
    classic reward-model bug; this never does.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true. values, mask: same shape."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


# -- reward-model losses ---------------------------------------------------------------------------


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                       margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """-log sigmoid(r_w - r_l - margin). r_chosen, r_rejected: (B,). Returns (B,)."""
    return -F.logsigmoid(r_chosen - r_rejected - margin)


def choice_nll(rewards: torch.Tensor, valid: torch.Tensor, chosen: torch.Tensor, beta: torch.Tensor,
               margin: torch.Tensor | None = None, label_noise: float = 0.0) -> torch.Tensor:
    """Negative log-likelihood of reward-rational choices (Jeon, Milli & Dragan 2020).

    P(c | r, C) = exp(beta r_c) / sum_{c' in C} exp(beta r_c'). rewards, valid: (N, K) with
    ``valid`` marking the real options of each choice set (sets of different sizes share one
    tensor); chosen: (N,) index of the chosen option; beta: (N,); margin: (N,) subtracted from
    the chosen option's reward (Bradley-Terry with a margin when K = 2). Two options give
    Bradley-Terry; K options the K-way softmax; Plackett-Luce is a sequence of these.

    label_noise = eps > 0 is the label-noise-robust (conservative) version: with probability
    eps the recorded choice is taken to be one of the other options, uniformly:
    (1 - eps) * nll(c) + eps * mean_{c' != c} nll(c'). Returns (N,).
    """
    adjusted = rewards
    if margin is not None:
        onehot = F.one_hot(chosen, rewards.shape[1]).to(rewards.dtype)
        adjusted = rewards - onehot * margin[:, None]
    logits = (beta[:, None] * adjusted).masked_fill(~valid, -math.inf)  # (N, K)
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    nll = -log_p.gather(1, chosen[:, None])[:, 0]
    if label_noise <= 0:
        return nll
    others = valid.clone()
    others.scatter_(1, chosen[:, None], False)
    other_nll = -(log_p.masked_fill(~others, 0.0).sum(-1)) / others.sum(-1).clamp(min=1)
    return (1 - label_noise) * nll + label_noise * other_nll


def plackett_luce_nll(rewards: torch.Tensor, order: list[int], beta: float = 1.0) -> torch.Tensor:
    """-log P(order) under Plackett-Luce: the best chosen from all, the next from the rest, ...

    rewards: (K,); order: indices from best to worst. A reference for the ranking mapping.
    """
    total = rewards.new_zeros(())
    for i in range(len(order) - 1):
        rest = rewards[order[i:]] * beta
        total = total - (rest[0] - torch.logsumexp(rest, 0))
    return total


def centering_loss(rewards: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(sum of a choice set's rewards)^2, per set: pushes rewards toward mean zero
    (Eisenstein et al. 2023; TRL's center_rewards_coefficient for pairs). (N, K) -> (N,)."""
    return (rewards.masked_fill(~valid, 0.0).sum(-1)) ** 2


def rating_loss(rewards: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared error between rewards and ratings rescaled to [-1, 1]. (N,), (N,) -> (N,)."""
    return (rewards - targets) ** 2


REWARD_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "choice": choice_nll,
    "bradley_terry": bradley_terry_loss,
    "centering": centering_loss,
    "rating": rating_loss,
}
