"""Curvature routines against numpy's eigendecomposition and exact Hessians of small problems.

Quadratics 0.5 x^T A x have Hessian A exactly, so every routine is checked against a matrix of
known spectrum; a small float64 MLP checks the products against torch.autograd.functional.hessian;
the tiny language model checks them against finite differences of its gradients.
"""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from alignlab.whitebox.curvature import (HessianOperator, curvature_summary, hessian_diagonal, hutchinson_trace,
                                         hutchpp_trace, hvp, layer_blocks, select_parameters, slq_nodes,
                                         spectral_density, stability_ratio, top_eigenvalues)


def symmetric(eigenvalues, seed=0) -> np.ndarray:
    """Q diag(eigenvalues) Q^T for a random orthogonal Q."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    a = q @ np.diag(eigenvalues) @ q.T
    return (a + a.T) / 2


def quadratic(a: np.ndarray, seed=0) -> HessianOperator:
    """The operator of 0.5 x^T A x at a random x (the Hessian is A wherever x is)."""
    x = torch.tensor(np.random.default_rng(seed + 1).standard_normal(len(a)), requires_grad=True)
    matrix = torch.tensor(a)
    return HessianOperator(lambda: 0.5 * x @ matrix @ x, [x])


def by_magnitude(a: np.ndarray) -> np.ndarray:
    w = np.linalg.eigvalsh(a)
    return w[np.argsort(-np.abs(w), kind="stable")]


def mlp(dtype=torch.float64):
    """A 4-6-2 tanh MLP (44 parameters) and a mean-squared-error loss on 8 fixed points."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(dtype)
    x, y = torch.randn(8, 4, dtype=dtype), torch.randn(8, 2, dtype=dtype)
    return model, x, y


def mse(model, x, y):
    return ((model(x) - y) ** 2).mean()


def exact_hessian(model, x, y) -> torch.Tensor:
    """The full (44, 44) Hessian by torch.autograd.functional.hessian over the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        pieces = theta.split([math.prod(s) for s in shapes])
        params = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes)}
        return ((torch.func.functional_call(model, params, (x,)) - y) ** 2).mean()

    return torch.autograd.functional.hessian(loss, flat)


# -- eigenvalues on quadratics --------------------------------------------------------------------------

@pytest.mark.parametrize("spectrum", [
    [10.0, -7.0, 3.0, 1.0, 0.5, -0.2, 0.1, 0.0],        # mixed signs
    [-9.0, 4.0, 2.0, -1.0, 0.3, 0.2, 0.1, 0.05],        # the top one is negative
    [5.0, 5.0, 2.0, 1.5, -1.0, 0.5, 0.25, 0.1],         # a degenerate top pair
], ids=["mixed", "negative-top", "degenerate-pair"])
def test_top_k_eigenvalues_match_numpy(spectrum):
    a = symmetric(spectrum)
    op = quadratic(a)
    values, vectors, iterations = top_eigenvalues(op, k=3, max_iter=2000, tol=1e-10)
    assert values == pytest.approx(by_magnitude(a)[:3].tolist(), rel=1e-3)
    for value, v in zip(values, vectors):
        residual = np.linalg.norm(a @ v.numpy() - value * v.numpy())
        assert residual < 1e-3 * abs(value)
        assert float(v.norm()) == pytest.approx(1.0)
    assert max(iterations) < 2000


def test_degenerate_pair_eigenvectors_span_the_eigenspace():
    spectrum = [5.0, 5.0, 2.0, 1.0, 0.5, 0.1]
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a = q @ np.diag(spectrum) @ q.T
    _, vectors, _ = top_eigenvalues(quadratic((a + a.T) / 2), k=2, max_iter=2000, tol=1e-12)
    found = torch.stack(vectors).numpy()  # (2, 6)
    assert found @ found.T == pytest.approx(np.eye(2), abs=1e-8)
    eigenspace = q[:, :2]
    assert np.linalg.norm(found.T - eigenspace @ (eigenspace.T @ found.T)) < 1e-4


def test_default_tolerance_stops_early_near_the_answer():
    a = symmetric([8.0, 2.0, 1.0, 0.5, -0.5, 0.1])
    values, _, iterations = top_eigenvalues(quadratic(a))
    assert iterations[0] < 100
    assert values[0] == pytest.approx(8.0, rel=1e-3)


def test_zero_hessian_gives_zero_eigenvalues():
    values, _, iterations = top_eigenvalues(quadratic(np.zeros((4, 4))), k=2)
    assert values == [0.0, 0.0] and iterations == [1, 1]


def test_stability_ratio_is_lambda_lr_over_two():
    assert stability_ratio(400.0, 0.01) == pytest.approx(2.0)
    assert stability_ratio(-10.0, 0.1) == pytest.approx(-0.5)


# -- trace and diagonal on quadratics -------------------------------------------------------------------

def test_hutchinson_is_exact_on_a_diagonal_matrix():
    estimate, error, values = hutchinson_trace(quadratic(np.diag([3.0, -1.0, 2.5, 0.5])), samples=10)
    assert estimate == pytest.approx(5.0) and error == pytest.approx(0.0, abs=1e-12)
    assert values.tolist() == pytest.approx([5.0] * 10)


def test_hutchinson_with_many_samples_is_within_three_standard_errors():
    a = symmetric(np.linspace(-2.0, 6.0, 20), seed=3)
    estimate, error, values = hutchinson_trace(quadratic(a), samples=2000)
    assert len(values) == 2000 and error > 0
    assert abs(estimate - np.trace(a)) < 3 * error
    # Rademacher variance is 2 * sum_{i != j} A_ij^2: the reported error must agree with it.
    expected = math.sqrt(2 * (np.sum(a ** 2) - np.sum(np.diag(a) ** 2)) / 2000)
    assert error == pytest.approx(expected, rel=0.1)


def test_hutchinson_standard_error_shrinks_with_samples():
    a = symmetric(np.linspace(-2.0, 6.0, 20), seed=3)
    few = [hutchinson_trace(quadratic(a), samples=16, seed=s)[1] for s in range(3)]
    many = [hutchinson_trace(quadratic(a), samples=256, seed=s)[1] for s in range(3)]
    assert max(many) < min(few) / 2  # 1/sqrt(n) predicts a factor of 4


def test_hutchinson_enforces_its_minimum_and_stops_early_only_after_it():
    op = quadratic(symmetric(np.linspace(1.0, 2.0, 10)))
    with pytest.raises(ValueError, match="min_samples"):
        hutchinson_trace(op, samples=4, min_samples=10)
    _, _, values = hutchinson_trace(op, samples=500, min_samples=12, rtol=0.5)
    assert len(values) == 12


def test_hutchpp_is_exact_with_three_times_dim_products():
    a = symmetric(np.linspace(-3.0, 5.0, 12), seed=4)
    op = quadratic(a)
    assert hutchpp_trace(op, matvecs=36) == pytest.approx(np.trace(a), abs=1e-9)
    assert op.products == 24  # sketch and projection only: nothing is left for the Hutchinson part


def test_hutchpp_is_exact_on_low_rank_with_a_third_of_the_products_covering_the_rank():
    a = symmetric([4.0, -2.0, 1.0] + [0.0] * 17, seed=5)
    assert hutchpp_trace(quadratic(a), matvecs=9) == pytest.approx(3.0, abs=1e-9)


def test_hutchpp_beats_hutchinson_per_product_on_a_decaying_spectrum():
    a = symmetric([10.0 / (i + 1) ** 2 for i in range(40)], seed=6)
    truth = np.trace(a)
    hpp = [hutchpp_trace(quadratic(a), matvecs=30, seed=s) - truth for s in range(10)]
    hutch = [hutchinson_trace(quadratic(a), samples=30, seed=s)[0] - truth for s in range(10)]
    assert np.mean(np.square(hpp)) < np.mean(np.square(hutch)) / 4


def test_diagonal_is_exact_on_a_diagonal_matrix_with_one_sample():
    diag = hessian_diagonal(quadratic(np.diag([3.0, -1.0, 2.5])), samples=1)
    assert list(diag) == ["param0"] and diag["param0"].tolist() == pytest.approx([3.0, -1.0, 2.5])


def test_diagonal_estimate_matches_numpy_diag_within_its_error():
    a = symmetric(np.linspace(-1.0, 4.0, 10), seed=7) + np.diag(np.linspace(0.0, 9.0, 10))
    samples = 4000
    got = hessian_diagonal(quadratic(a), samples=samples)["param0"].numpy()
    sd = np.sqrt((np.sum(a ** 2, axis=1) - np.diag(a) ** 2) / samples)
    assert np.all(np.abs(got - np.diag(a)) < 5 * sd)


# -- spectral density -----------------------------------------------------------------------------------

def test_slq_with_dim_steps_recovers_the_spectrum_of_a_diagonal_matrix():
    eigenvalues = [-2.0, 0.5, 1.0, 3.0, 7.0]
    nodes, weights = slq_nodes(quadratic(np.diag(eigenvalues)), lanczos_steps=5, runs=1)
    # A Rademacher start has equal mass 1/5 on every eigenvector of a diagonal matrix.
    assert sorted(nodes.tolist()) == pytest.approx(eigenvalues, abs=1e-9)
    assert weights.tolist() == pytest.approx([0.2] * 5, abs=1e-9)


def test_slq_density_integrates_to_one_with_mean_trace_over_dim():
    a = symmetric(np.concatenate([np.linspace(-0.5, 1.0, 27), [5.0, 12.0, 30.0]]), seed=8)
    op = quadratic(a)
    grid, density = spectral_density(op, lanczos_steps=20, runs=40, grid=4000)
    assert grid.shape == density.shape == (4000,)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-4)
    mean = float(torch.trapezoid(grid * density, grid))
    nodes, weights = slq_nodes(op, lanczos_steps=20, runs=40)
    assert mean == pytest.approx(float(nodes @ weights), abs=1e-4)  # broadening keeps the mean
    # Each run's v^T A v / |v|^2 has variance 2 sum_{i != j} A_ij^2 / dim^2.
    sd = math.sqrt(2 * (np.sum(a ** 2) - np.sum(np.diag(a) ** 2)) / 30 ** 2 / 40)
    assert abs(mean - np.trace(a) / 30) < 4 * sd
    assert float(nodes.min()) >= np.min(np.linalg.eigvalsh(a)) - 1e-9
    assert float(nodes.max()) == pytest.approx(30.0, rel=1e-6)  # 20 steps find the outlier


# -- a small MLP against its exact Hessian ----------------------------------------------------------------

def test_mlp_hvp_and_eigenvalues_match_the_exact_hessian():
    model, x, y = mlp()
    exact = exact_hessian(model, x, y)
    params = list(model.parameters())
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype) for p in params]
    got = torch.cat([h.reshape(-1) for h in hvp(lambda: mse(model, x, y), params, v)])
    assert torch.allclose(got, exact @ torch.cat([t.reshape(-1) for t in v]), rtol=1e-10, atol=1e-12)

    op = HessianOperator.from_model(model, lambda: mse(model, x, y))
    assert op.dim == 44 and torch.allclose(op.dense(), exact, atol=1e-12)
    values, _, iterations = top_eigenvalues(op, k=3, max_iter=3000, tol=1e-12)
    assert values == pytest.approx(by_magnitude(exact.numpy())[:3].tolist(), rel=1e-3)
    assert op.products == 44 + sum(iterations)  # dense() made 44


def test_mlp_block_restriction_gives_the_sub_block_eigenvalues():
    model, x, y = mlp()
    exact = exact_hessian(model, x, y).numpy()
    op = HessianOperator.from_model(model, lambda: mse(model, x, y))
    first = op.restrict("0.")  # the first layer's weight (24) and bias (6): entries 0..29 of the flat order
    assert first.names == ["0.weight", "0.bias"] and first.dim == 30
    assert torch.allclose(first.dense(), torch.tensor(exact[:30, :30]), atol=1e-12)
    values, _, _ = top_eigenvalues(first, k=2, max_iter=3000, tol=1e-12)
    assert values == pytest.approx(by_magnitude(exact[:30, :30])[:2].tolist(), rel=1e-3)
    fresh = HessianOperator.from_model(model, lambda: mse(model, x, y), block=["2.weight"])
    assert torch.allclose(fresh.dense(), torch.tensor(exact[30:42, 30:42]), atol=1e-12)
    predicate = op.restrict(lambda name: name.endswith("bias"))
    keep = list(range(24, 30)) + list(range(42, 44))
    assert torch.allclose(predicate.dense(), torch.tensor(exact[np.ix_(keep, keep)]), atol=1e-12)


def test_mlp_diagonal_is_per_parameter_and_matches_the_exact_diagonal():
    model, x, y = mlp()
    exact = exact_hessian(model, x, y).numpy()
    samples = 3000
    diag = hessian_diagonal(HessianOperator.from_model(model, lambda: mse(model, x, y)), samples=samples)
    assert {n: tuple(d.shape) for n, d in diag.items()} == {n: tuple(p.shape) for n, p in model.named_parameters()}
    flat = torch.cat([d.reshape(-1) for d in diag.values()]).numpy()
    sd = np.sqrt((np.sum(exact ** 2, axis=1) - np.diag(exact) ** 2) / samples)
    assert np.all(np.abs(flat - np.diag(exact)) <= 5 * sd + 1e-12)


def test_batches_average_to_the_hessian_of_the_mean_loss_with_or_without_kept_graphs():
    model, x, y = mlp()
    exact = exact_hessian(model, x, y)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    for keep in (True, False):
        op = HessianOperator.from_model(model, lambda b: mse(model, *b), batches=batches, keep_graph=keep)
        assert torch.allclose(op.dense(), exact, atol=1e-12)
    assert op.loss is None  # not computed without kept graphs
    kept = HessianOperator.from_model(model, lambda b: mse(model, *b), batches=batches)
    assert kept.loss == pytest.approx(float(mse(model, x, y).detach()))


def test_float32_model_gives_float64_vectors_close_to_the_exact_hessian():
    model, x, y = mlp(torch.float32)
    exact = exact_hessian(copy.deepcopy(model).double(), x.double(), y.double())
    op = HessianOperator.from_model(model, lambda: mse(model, x, y))
    product = op.matvec(torch.ones(44, dtype=torch.float64))
    assert product.dtype == torch.float64
    assert torch.allclose(product, exact.sum(dim=1), atol=1e-5)
    values, _, _ = top_eigenvalues(op, k=1, max_iter=3000, tol=1e-9)
    assert values[0] == pytest.approx(by_magnitude(exact.numpy())[0], rel=1e-4)


def test_an_operator_refuses_products_after_an_optimizer_step():
    model, x, y = mlp()
    op = HessianOperator.from_model(model, lambda: mse(model, x, y))
    first = op.restrict("0.")  # the first layer's weight is not saved in the graph: autograd alone would not notice
    mse(model, x, y).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for stale in (op, first):
        with pytest.raises(RuntimeError, match="build a new one"):
            stale.matvec(torch.ones(stale.dim, dtype=torch.float64))
    fresh = HessianOperator.from_model(model, lambda: mse(model, x, y))
    assert torch.allclose(fresh.dense(), exact_hessian(model, x, y), atol=1e-12)


def test_curvature_summary_matches_the_routines_and_the_exact_blocks():
    model, x, y = mlp()
    exact = exact_hessian(model, x, y).numpy()
    out = curvature_summary(model, lambda: mse(model, x, y), blocks=["0.", "2."], k=2, trace_samples=16,
                            lr=0.1, max_iter=3000, tol=1e-12)
    for key, rows in {"all": slice(0, 44), "0": slice(0, 30), "2": slice(30, 44)}.items():
        top = by_magnitude(exact[rows, rows])
        assert out[f"hess/lmax/{key}"] == pytest.approx(top[0], rel=1e-3)
        assert out[f"hess/eig2/{key}"] == pytest.approx(top[1], rel=1e-3)
        assert out[f"hess/stability/{key}"] == pytest.approx(top[0] * 0.1 / 2, rel=1e-3)
        assert abs(out[f"hess/trace/{key}"] - np.trace(exact[rows, rows])) < 5 * out[f"hess/trace_se/{key}"] + 1e-9
    assert out["hess/loss"] == pytest.approx(float(mse(model, x, y).detach()))
    assert out["hess/matvecs"] >= 3 * 16


# -- parameters with no second-order path -----------------------------------------------------------------

def test_unused_and_linear_parameters_have_zero_hessian_blocks():
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    unused = torch.randn(2, dtype=torch.float64, requires_grad=True)
    linear = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def loss():
        return 1.5 * (w ** 2).sum() + w[0] * w[1] + 3 * linear.sum()

    ones = [torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)]
    hw, hu, hl = hvp(loss, [w, unused, linear], ones)
    assert hw.tolist() == pytest.approx([4.0, 4.0, 3.0]) and hu.tolist() == [0, 0] and hl.tolist() == [0, 0]
    dense = HessianOperator(loss, [w, unused, linear]).dense().numpy()
    expected = np.zeros((7, 7))
    expected[:3, :3] = [[3, 1, 0], [1, 3, 0], [0, 0, 3]]
    assert dense == pytest.approx(expected)
    nothing = HessianOperator(lambda: 3 * linear.sum(), [unused, linear])
    assert top_eigenvalues(nothing)[0] == [0.0]
    constant = HessianOperator(lambda: torch.tensor(2.0), [unused])  # no parameter at all in the graph
    assert constant.matvec(torch.ones(2, dtype=torch.float64)).tolist() == [0.0, 0.0]


def test_bad_inputs_say_what_to_fix():
    model, x, y = mlp()
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        HessianOperator.from_model(model, lambda: mse(model, x, y), block="layers.9.")
    with pytest.raises(ValueError, match="not trainable parameters"):
        select_parameters(model.named_parameters(), ["0.weight", "3.weight"])
    with pytest.raises(ValueError, match="scalar"):
        HessianOperator.from_model(model, lambda: model(x))
    with pytest.raises(ValueError, match="shape"):
        hvp(lambda: mse(model, x, y), list(model.parameters())[:1], [torch.ones(3)])


# -- the tiny language model ----------------------------------------------------------------------------

TEXT = "The quick brown fox jumps."  # short: the 262k-word output layer dominates every product


def test_tiny_lm_hvp_matches_a_finite_difference_of_gradients(tiny):
    model, tok = copy.deepcopy(tiny[0]).double(), tiny[1]
    ids = tok(TEXT, return_tensors="pt")["input_ids"]

    def loss():
        return model(input_ids=ids, labels=ids).loss

    params = [p for p in model.parameters()]  # every tensor, the tied embedding / output layer included
    gen = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    product = torch.cat([h.reshape(-1) for h in hvp(loss, params, v)])

    def gradient_at(shift):
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(shift * d)
        g = torch.autograd.grad(loss(), params)
        with torch.no_grad():
            for p, d in zip(params, v):
                p.sub_(shift * d)
        return torch.cat([t.reshape(-1) for t in g])

    def error(eps):
        difference = (gradient_at(eps) - gradient_at(-eps)) / (2 * eps)
        return float((product - difference).norm() / difference.norm())

    # Gemma 3 computes its RMSNorms and rotary angles in float32 even in a float64 model, so the
    # central difference cannot get below ~1e-4 here; what shows the product right is that the
    # mismatch is the difference's own O(eps^2) error: ten times smaller eps, a hundred times smaller.
    coarse, fine = error(1e-3), error(1e-4)
    assert fine < 2e-3
    assert coarse / fine > 50


def test_tiny_lm_summary_per_layer(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    model.get_input_embeddings().weight.requires_grad_(False)  # 16.8M of the 17M: left out to stay fast
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    blocks = layer_blocks(model)
    assert blocks == {"model.layers.0": "model.layers.0.", "model.layers.1": "model.layers.1."}
    out = curvature_summary(model, lambda: model(input_ids=ids, labels=ids).loss, blocks=["model.layers.1."],
                            max_iter=2, trace_samples=2, lr=1e-3)
    for group in ["all", "model.layers.1"]:
        for name in ("lmax", "trace", "trace_se", "stability"):
            assert math.isfinite(out[f"hess/{name}/{group}"])
        assert out[f"hess/lmax/{group}"] != 0.0
    assert out["hess/matvecs"] == 2 * (2 + 2)
