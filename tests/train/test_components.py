"""Reward-model math against hand-derived values."""

import math

import pytest
import torch

from alignlab.train.components import (bradley_terry_loss, centering_loss, choice_nll, last_token_index,
                                       masked_mean, plackett_luce_nll, rating_loss)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_last_token_index_under_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]


def test_masked_mean():
    v = torch.tensor([[1.0, 2.0, 100.0], [3.0, 5.0, 7.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert float(masked_mean(v, m)) == pytest.approx((1 + 2 + 3 + 5 + 7) / 5)
    assert masked_mean(v, m, dim=1).tolist() == pytest.approx([1.5, 5.0])


def test_bradley_terry_with_and_without_margin():
    got = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0]))
    assert got.tolist() == pytest.approx([-math.log(sig(0.5)), math.log(2)])


def test_choice_nll_of_two_options_is_bradley_terry_scaled_by_beta():
    r = torch.tensor([[1.5, -0.5]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    got = choice_nll(r, valid, torch.tensor([0]), torch.tensor([2.0]), torch.tensor([0.3]))
    assert float(got[0]) == pytest.approx(-math.log(sig(2.0 * (1.5 - 0.3 + 0.5))), rel=1e-5)


def test_choice_nll_k_way_with_padding_columns():
    r = torch.tensor([[1.0, 2.0, 3.0, 99.0], [0.0, 1.0, -9.0, -9.0]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    got = choice_nll(r, valid, torch.tensor([1, 0]), torch.tensor([1.0, 1.0]))
    z = math.exp(1) + math.exp(2) + math.exp(3)
    assert got.tolist() == pytest.approx([-(2 - math.log(z)), -math.log(1 / (1 + math.e))])


def test_label_noise_robust_choice():
    r = torch.tensor([[2.0, 0.0]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    got = choice_nll(r, valid, torch.tensor([0]), torch.tensor([1.0]), label_noise=0.1)
    expected = 0.9 * -math.log(sig(2.0)) + 0.1 * -math.log(sig(-2.0))
    assert float(got[0]) == pytest.approx(expected)


def test_plackett_luce_equals_a_sequence_of_choices():
    r = torch.tensor([0.5, 2.0, -1.0])
    order = [1, 0, 2]
    z1 = math.exp(0.5) + math.exp(2.0) + math.exp(-1.0)
    z2 = math.exp(0.5) + math.exp(-1.0)
    expected = -(2.0 - math.log(z1)) - (0.5 - math.log(z2))
    assert float(plackett_luce_nll(r, order)) == pytest.approx(expected)
    # the same as choice_nll over the sequence of remaining sets
    valid = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    sets = torch.tensor([[2.0, 0.5, -1.0], [0.5, -1.0, 0.0]])
    seq = choice_nll(sets, valid, torch.tensor([0, 0]), torch.ones(2)).sum()
    assert float(seq) == pytest.approx(expected)


def test_centering_and_rating_losses():
    r = torch.tensor([[1.0, 2.0, 5.0]])
    valid = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    assert centering_loss(r, valid).tolist() == [9.0]
    assert rating_loss(torch.tensor([0.5, -1.0]), torch.tensor([1.0, -1.0])).tolist() == [0.25, 0.0]


# -- RLOO and GRPO ---------------------------------------------------------------------------------------


def test_grpo_advantages_of_one_one_one_zero_are_as_trl_computes_them():
    from alignlab.train.components import grpo_advantages

    # mean 0.75, sample std sqrt((3 * 0.25^2 + 0.75^2) / 3) = 0.5
    adv = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0]), group=4)
    assert adv.tolist() == pytest.approx([0.25 / 0.5001, 0.25 / 0.5001, 0.25 / 0.5001, -0.75 / 0.5001])
    assert adv.tolist() == pytest.approx([0.5, 0.5, 0.5, -1.5], abs=1e-3)
    # two groups are normalised separately; 'none' only centres; 'batch' uses the batch's std
    two = grpo_advantages(torch.tensor([1.0, 3.0, 10.0, 30.0]), group=2, scale="none")
    assert two.tolist() == pytest.approx([-1.0, 1.0, -10.0, 10.0])
    batch = grpo_advantages(torch.tensor([1.0, 3.0, 10.0, 30.0]), group=2, scale="batch")
    std = float(torch.tensor([1.0, 3.0, 10.0, 30.0]).std())
    assert batch.tolist() == pytest.approx([-1 / (std + 1e-4), 1 / (std + 1e-4), -10 / (std + 1e-4), 10 / (std + 1e-4)])
    with pytest.raises(ValueError, match="at least 2"):
        grpo_advantages(torch.tensor([1.0]), group=1)


def test_rloo_advantages_are_the_reward_less_the_others_mean():
    from alignlab.train.components import rloo_advantages

    adv = rloo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 4.0, 6.0, 8.0]), group=4)
    assert adv.tolist() == pytest.approx([1 - 2 / 3, 1 - 2 / 3, 1 - 2 / 3, 0 - 1, 2 - 6, 4 - 16 / 3, 6 - 14 / 3, 8 - 4])
    assert float(adv[:4].sum()) == pytest.approx(0.0, abs=1e-6)  # the baseline sums out within a group
    batch = rloo_advantages(torch.tensor([0.0, 3.0, 6.0]), group=1, baseline="batch")
    assert batch.tolist() == pytest.approx([0 - 4.5, 3 - 3.0, 6 - 1.5])
    with pytest.raises(ValueError, match="baseline 'batch'"):
        rloo_advantages(torch.tensor([1.0, 2.0]), group=1)


def test_clipped_ratio_loss_by_hand():
    from alignlab.train.components import clipped_ratio_loss

    logp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.5]))  # ratios against old log-prob 0
    adv = torch.tensor([1.0, 1.0, -2.0, -2.0])
    loss = clipped_ratio_loss(logp, torch.zeros(4), adv, 0.2, 0.2)
    # r=1.5, A=1: min(1.5, 1.2) -> -1.2; r=0.5, A=1: min(0.5, 0.8) = 0.5 -> -0.5;
    # r=1.1, A=-2: min(-2.2, -2.2) -> 2.2; r=0.5, A=-2: min(-1.0, -1.6) = -1.6 -> 1.6
    assert loss.tolist() == pytest.approx([-1.2, -0.5, 2.2, 1.6])
    higher = clipped_ratio_loss(logp, torch.zeros(4), adv, 0.2, 0.28)  # DAPO's clip-higher
    assert higher[0].item() == pytest.approx(-1.28)


def test_every_grpo_loss_variant_on_a_group_of_four_with_a_masked_token():
    from alignlab.train.components import aggregate_token_loss

    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0], [6.0, 99.0, 99.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    # grpo: mean of per-sequence means (2, 4.5, 6, 8) = 5.125
    assert aggregate_token_loss(per_token, mask, "grpo").item() == pytest.approx(5.125)
    # bnpo: token sum 45 over 9 tokens
    assert aggregate_token_loss(per_token, mask, "bnpo").item() == pytest.approx(5.0)
    # dr_grpo: 45 / (4 rows x max length 5)
    assert aggregate_token_loss(per_token, mask, "dr_grpo", max_completion_length=5).item() == pytest.approx(2.25)
    # dapo: 45 over the whole step's 18 tokens (two such micro-batches)
    assert aggregate_token_loss(per_token, mask, "dapo", num_items=18).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="num_items"):
        aggregate_token_loss(per_token, mask, "dapo")
    with pytest.raises(ValueError, match="loss_type"):
        aggregate_token_loss(per_token, mask, "ppo")


def test_kl_in_the_reward_and_as_a_k3_loss_term():
    import math

    from alignlab.train.components import kl_k3, sequence_kl_penalty

    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, -9.0]])
    mask = torch.tensor([[1, 1, 0]])
    # k1: (0.5) + (-1.0) = -0.5 over the two response tokens, times beta 0.1
    assert sequence_kl_penalty(logp, ref, mask, 0.1).item() == pytest.approx(-0.05)
    # k3 per token: exp(ref - logp) - (ref - logp) - 1
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert kl_k3(logp, ref)[0, :2].tolist() == pytest.approx(k3)
    assert sequence_kl_penalty(logp, ref, mask, 0.1, "k3").item() == pytest.approx(0.1 * sum(k3))
