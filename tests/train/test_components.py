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
