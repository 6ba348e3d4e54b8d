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


# -- policy math: log-probs, KL, advantages ---------------------------------------------------------


def sequence_logprob(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probs over the response. (B, T), (B, T) -> (B,)."""
    return (token_logps * mask.to(token_logps.dtype)).sum(-1)


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimator of KL(pi || ref) on samples from pi: log pi - log ref (unbiased, can be < 0)."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator (Schulman 2020): (r - 1) - log r with r = ref/pi; unbiased and >= 0."""
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to unit variance over the masked entries; keep the mean when shift_mean is False
    (rewards are whitened without shifting, advantages with). (B, T) -> (B, T)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (Schulman et al. 2016).

    rewards, values, mask: (B, T), the mask marking response tokens (a contiguous run per row).
    The value after a row's last token is 0. Returns (advantages, returns), both (B, T).
    """
    mask = mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros_like(running)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        running = running * mask[:, t]  # positions after the response stay at zero
        advantages[:, t] = running
        next_value = values[:, t] * mask[:, t]
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, averaged over response tokens. (B, T) each.

    Returns the loss and diagnostics: approx_kl (the k2 estimator 0.5 * mean (log ratio)^2), clipfrac
    (share of tokens where the clipped branch is active) and the mean ratio.
    """
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"approxkl": 0.5 * masked_mean(log_ratio ** 2, mask),
                 "clipfrac": masked_mean((clipped > unclipped).float(), mask),
                 "ratio": masked_mean(ratio, mask)}
    return loss, stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * max((v - R)^2, (v_clipped - R)^2) averaged over response tokens; and the clip fraction."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    a, b = (values - returns) ** 2, (v_clipped - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(a, b), mask), masked_mean((b > a).float(), mask)


class AdaptiveKLController:
    """Ziegler et al. 2019: beta <- beta * (1 + clip(KL/target - 1, -0.2, 0.2) * n / horizon)."""

    def __init__(self, init_beta: float, target: float, horizon: int):
        if init_beta <= 0 or target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs init_beta, target and horizon > 0 (got {init_beta}, {target}, {horizon})")
        self.value, self.target, self.horizon = init_beta, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
        return self.value


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, beta: float):
        if beta < 0:
            raise ValueError(f"KL coefficient {beta} must be >= 0")
        self.value = beta

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


# -- the DPO family ------------------------------------------------------------------------------------
# Every pairwise loss has one signature, so a user-defined loss given as module:function can
# stand in for any of them:
#   loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, chosen_tokens, rejected_tokens)
# with sequence log-prob sums and token counts, all (B,), returning a per-pair loss (B,).


def dpo_sigmoid(pc, pr, rc, rr, beta, nc, nr):
    """DPO (Rafailov et al. 2023): -log sigmoid(beta * ((pc - rc) - (pr - rr)))."""
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def dpo_hinge(pc, pr, rc, rr, beta, nc, nr):
    """SLiC-style hinge: max(0, 1 - beta * delta)."""
    return torch.relu(1 - beta * ((pc - rc) - (pr - rr)))


def dpo_ipo(pc, pr, rc, rr, beta, nc, nr):
    """IPO (Azar et al. 2023) on length-normalised log-ratios: (rho_w/|y_w| - rho_l/|y_l| - 1/(2 beta))^2."""
    return ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 * beta)) ** 2


def make_dpo_robust(eps: float):
    """Robust DPO (Chowdhury et al. 2024) for label noise eps < 0.5."""
    if not 0 <= eps < 0.5:
        raise ValueError(f"label noise eps is {eps}; it must be in [0, 0.5)")

    def dpo_robust(pc, pr, rc, rr, beta, nc, nr):
        z = beta * ((pc - rc) - (pr - rr))
        return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)

    return dpo_robust


DPO_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": dpo_sigmoid,
    "hinge": dpo_hinge,
    "ipo": dpo_ipo,
    "robust": make_dpo_robust(0.1),
}


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor,
             reference_point: torch.Tensor | float, beta: float, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024) for unpaired thumbs. (B,) -> (B,).

    ``reference_point`` is z0: a detached, clamped (>= 0) estimate of KL(policy || ref) from
    mismatched prompt/completion pairs. Desirable: w_d (1 - sigmoid(beta (rho - z0)));
    undesirable: w_u (1 - sigmoid(beta (z0 - rho))), with rho = log pi - log ref.
    """
    rho = policy_logps - ref_logps
    z0 = torch.as_tensor(reference_point, dtype=rho.dtype).detach().clamp(min=0)
    good = desirable_weight * (1 - torch.sigmoid(beta * (rho - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - rho)))
    return torch.where(desirable.bool(), good, bad)


def sft_term(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of the chosen response: the optional SFT term added to a
    DPO loss (counters both likelihoods falling). (B,), (B,) -> (B,)."""
    return -policy_chosen / chosen_tokens.clamp(min=1)


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1)/n nats (exact for distinct samples; a bound with ties)."""
    if n < 1:
        raise ValueError(f"n is {n}; best-of-n needs n >= 1")
    return math.log(n) - (n - 1) / n


# -- group-baseline online RL: RLOO and GRPO ------------------------------------------------------------
# Rewards arrive prompt-major: the G samples of prompt 0, then of prompt 1, ... (B = P * G).


def rloo_advantages(rewards: torch.Tensor, group: int, baseline: str = "group") -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024): each sample's
    reward less the mean reward of the other samples of its group (``baseline='group'``), or of
    every other sample of the batch (``'batch'``: usable with one sample per prompt, noisier where
    prompts differ in reward level). rewards: (B,) with B = P * group. Returns (B,)."""
    if baseline == "group":
        if group < 2:
            raise ValueError("a leave-one-out group baseline needs at least 2 samples per prompt (or baseline 'batch')")
        grouped = rewards.view(-1, group)  # (P, G)
        others = (grouped.sum(1, keepdim=True) - grouped) / (group - 1)
        return (grouped - others).reshape(-1)
    if baseline == "batch":
        n = rewards.numel()
        if n < 2:
            raise ValueError("a leave-one-out batch baseline needs at least 2 samples")
        return rewards - (rewards.sum() - rewards) / (n - 1)
    raise ValueError(f"baseline {baseline!r}: use 'group' or 'batch'")


def grpo_advantages(rewards: torch.Tensor, group: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-normalised advantages (Shao et al. 2024), as TRL computes them: the reward less
    its group's mean, divided by the group's sample standard deviation (``scale='group'``), by the
    whole batch's (``'batch'``, Liu et al. 2025 argue against per-group scaling), or not at all
    (``'none'``, Dr. GRPO), plus ``eps``. Rewards [1, 1, 1, 0] give [0.5, 0.5, 0.5, -1.5] (up to
    eps). rewards: (B,) with B = P * group. Returns (B,)."""
    if group < 2:
        raise ValueError("GRPO needs at least 2 samples per prompt (num_generations)")
    grouped = rewards.view(-1, group)  # (P, G)
    centred = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(1, keepdim=True).expand_as(grouped).reshape(-1)  # unbiased (n - 1), as TRL's nanstd
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        raise ValueError(f"scale {scale!r}: use 'group', 'batch' or 'none'")
    return centred / (std + eps)


def clipped_ratio_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                       clip_low: float = 0.2, clip_high: float = 0.2) -> torch.Tensor:
    """-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) elementwise, with r = exp(logp - old_logp).

    Per token for GRPO (logp: (B, T), advantages broadcast as (B, 1)); per sequence for RLOO
    (sums of log-probs, (B,)). A clip_high above clip_low is DAPO's "clip-higher"."""
    ratio = torch.exp(logp - old_logp)
    return -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_low, 1 + clip_high) * advantages)


def aggregate_token_loss(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str,
                         max_completion_length: int = 0, num_items: float | None = None) -> torch.Tensor:
    """How GRPO's variants average a (B, T) per-token loss over a micro-batch, as TRL 1.16 names them:

    - grpo: mean over sequences of each sequence's token mean (short answers weigh more per token);
    - bnpo: mean over every token of the micro-batch;
    - dr_grpo: token sum / (B * max_completion_length), a constant normaliser (Liu et al. 2025);
    - dapo: token sum / ``num_items``, the token count of the whole optimizer step (Yu et al. 2025).
    """
    m = mask.to(per_token.dtype)
    if loss_type == "grpo":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token * m).sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        if max_completion_length < 1:
            raise ValueError("dr_grpo needs max_completion_length >= 1")
        return (per_token * m).sum() / (per_token.shape[0] * max_completion_length)
    if loss_type == "dapo":
        if num_items is None:
            raise ValueError("dapo needs num_items: the token count of the whole optimizer step")
        return (per_token * m).sum() / max(float(num_items), 1.0)
    raise ValueError(f"loss_type {loss_type!r}: use one of {', '.join(GRPO_LOSS_TYPES)}")


GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def sequence_kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, beta: float,
                        estimator: str = "k1") -> torch.Tensor:
    """The KL leash in the reward: beta * sum_t KL_t per sequence, subtracted from the score.
    k1 (log pi - log ref, TRL's RLOO) or k3. (B, T) each -> (B,)."""
    per_token = kl_k1(logp, ref_logp) if estimator == "k1" else kl_k3(logp, ref_logp)
    return beta * (per_token * mask.to(per_token.dtype)).sum(-1)
