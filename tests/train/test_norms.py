"""Gradient norms: blocked float32 partial sums combined in float64 (train/loop.py tensor_norms)."""

import math

import pytest
import torch

from alignlab.train.hooks import Hooks, StepContext
from alignlab.train.loop import NORM_BLOCK, AdamW, clip_gradients_before_hooks, global_norm, tensor_norms


def test_norms_match_float64_for_every_size_including_ragged_tails():
    torch.manual_seed(0)
    tensors = [torch.randn(3), torch.randn(2 * NORM_BLOCK - 1), torch.randn(2 * NORM_BLOCK),
               torch.randn(5 * NORM_BLOCK + 17), torch.randn(300, 70), torch.randn(4, 5, 6).transpose(0, 2)]
    for got, t in zip(tensor_norms(tensors), tensors):
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(float(t.double().norm()), rel=1e-6)
    exact = math.sqrt(sum(float(t.double().norm()) ** 2 for t in tensors))
    assert float(global_norm(tensors)) == pytest.approx(exact, rel=1e-6)
    assert float(global_norm([])) == 0.0


def test_a_large_gradient_norm_is_right_where_one_float32_sum_drifts():
    """16M standard normal entries: torch's vector_norm here comes out ~7e-4 low (its float32
    sum of squares drifts); the blocked norm agrees with float64 to float32 rounding."""
    torch.manual_seed(0)
    t = torch.randn(1 << 24)
    exact = float(t.double().norm())
    assert float(tensor_norms([t])[0]) == pytest.approx(exact, rel=1e-6)
    assert float(global_norm([t, t])) == pytest.approx(exact * math.sqrt(2), rel=1e-6)


def test_non_finite_entries_give_non_finite_norms():
    inf = torch.zeros(3 * NORM_BLOCK)
    inf[5] = math.inf
    nan = torch.zeros(3 * NORM_BLOCK)
    nan[-1] = math.nan
    assert math.isinf(float(tensor_norms([inf])[0]))
    assert math.isnan(float(tensor_norms([nan])[0]))
    assert not math.isfinite(float(global_norm([inf, nan])))


def test_bfloat16_gradients_are_measured_in_float32():
    torch.manual_seed(0)
    t = torch.randn(4 * NORM_BLOCK).to(torch.bfloat16)
    assert float(tensor_norms([t])[0]) == pytest.approx(float(t.double().norm()), rel=1e-6)


def test_clipping_scales_to_the_limit_with_the_blocked_norm():
    torch.manual_seed(0)
    layer = torch.nn.Linear(200, 100)
    layer(torch.randn(8, 200)).pow(2).sum().backward()
    params = dict(layer.named_parameters())
    before = math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in params.values()))
    ctx = StepContext(1, layer, torch.tensor(0.0), AdamW(params.values(), lr=0.1), params)
    norm, clipped = clip_gradients_before_hooks(ctx, 0.5, Hooks())
    assert norm == pytest.approx(before, rel=1e-6) and clipped
    after = math.sqrt(sum(float(p.grad.double().norm()) ** 2 for p in params.values()))
    assert after == pytest.approx(0.5, rel=1e-5)
