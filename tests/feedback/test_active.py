"""Query strategies: each picks the pair a hand-made ensemble says it should, and the ensemble's
information gain agrees with the Gaussian closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignlab.feedback import active as A

# Four candidates, three members. Candidates 0 and 1: every member calls them even (the person's
# answer is a coin flip, but no member learns anything from it). Candidates 2 and 3: the members
# disagree sharply about which is better. Candidate 0 against 2: every member is sure 2 is better.
REWARDS = np.array([[0.0, 0.0, 3.0, -3.0],
                    [0.0, 0.0, -3.0, 3.0],
                    [0.0, 0.0, 3.0, -3.0]])


def test_uncertainty_and_information_pick_the_pair_the_members_disagree_on():
    rng = np.random.default_rng(0)
    for strategy in ("uncertainty", "information"):
        (first,) = A.choose_pairs(strategy, REWARDS, 1, rng)
        assert sorted(first.tolist()) == [2, 3], strategy
    p = A.pair_probabilities(REWARDS, np.array([[0, 1], [2, 3]]))
    info = A.mutual_information(p)
    assert info[0] == pytest.approx(0.0, abs=1e-12)  # an even call every member agrees on teaches nothing
    h = lambda q: -(q * math.log(q) + (1 - q) * math.log(1 - q))  # noqa: E731
    q = 1 / (1 + math.exp(-6.0))
    assert info[1] == pytest.approx(h(2 / 3 * q + 1 / 3 * (1 - q)) - h(q), rel=1e-9)


def test_information_ignores_the_person_s_noise_where_disagreement_alone_does_not():
    # two pairs with the same spread of member predictions, one around 0.5 and one near certainty
    p = np.array([[0.55, 0.95], [0.45, 0.85]])  # (K=2, P=2)
    assert A.disagreement(p)[0] == pytest.approx(A.disagreement(p)[1])
    info = A.mutual_information(p)
    assert info[1] > info[0]  # the same disagreement is more informative where the answers are less noisy


def test_random_covers_every_pair_and_thompson_pairs_the_best_candidates_of_two_draws():
    rng = np.random.default_rng(1)
    drawn = A.choose_pairs("random", REWARDS, 6, rng)
    assert sorted(map(tuple, np.sort(drawn, axis=1).tolist())) == [tuple(x) for x in A.all_pairs(4).tolist()]
    # each member's best is 2 or 3, so double Thompson sampling asks about 2 against 3 first
    (pair,) = A.choose_pairs("thompson", REWARDS, 1, np.random.default_rng(2))
    assert sorted(pair.tolist()) == [2, 3]
    agreed = np.array([[0.0, 1.0, 5.0], [0.0, 2.0, 4.0]])  # every member's best is 2: paired with the next best
    (pair,) = A.choose_pairs("thompson", agreed, 1, np.random.default_rng(3))
    assert pair.tolist() == [2, 1]
    several = A.choose_pairs("thompson", REWARDS, 3, np.random.default_rng(4))
    assert len({tuple(sorted(p)) for p in several.tolist()}) == len(several)  # distinct pairs


def test_the_ensemble_information_gain_converges_to_the_gaussian_closed_form():
    rng = np.random.default_rng(5)
    dim = 4
    root = rng.normal(size=(dim, dim))
    cov = root @ root.T / dim + 0.1 * np.eye(dim)
    mean = rng.normal(size=dim)
    samples = rng.multivariate_normal(mean, cov, size=200_000)
    for _ in range(5):
        d = rng.normal(size=dim)
        exact = A.gaussian_information_gain(d, cov, noise=0.7)
        assert A.ensemble_information_gain(samples, d, noise=0.7) == pytest.approx(exact, rel=0.01)
    assert A.gaussian_information_gain(np.zeros(dim), cov, 1.0) == 0.0


def test_bad_input_is_refused_naming_what_is_wrong():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="choose from random, uncertainty, information, thompson"):
        A.choose_pairs("entropy", REWARDS, 1, rng)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        A.choose_pairs("random", np.zeros((3, 1)), 1, rng)


# -- posteriors, calibration, savings ---------------------------------------------------------------


def _choices(rng, n: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, len(w)))
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w)))).astype(float)
    return x, y


def test_the_fit_is_the_penalised_optimum_and_bootstrap_weights_act_as_repeated_choices():
    rng = np.random.default_rng(7)
    x, y = _choices(rng, 200, np.array([1.5, -1.0, 0.5]))
    w = A.fit_linear_preference(x, y, l2=0.01)
    p = 1 / (1 + np.exp(-(x @ w)))
    gradient = x.T @ (p - y) / len(y) + 2 * 0.01 * w
    assert np.abs(gradient).max() < 1e-6
    counts = np.zeros(len(y))
    counts[:50] = 2  # choices 0..49 twice, 50..99 once, the rest not at all
    counts[50:100] = 1
    repeated = np.concatenate([np.arange(50), np.arange(50), np.arange(50, 100)])
    assert A.fit_linear_preference(x, y, 0.01, weights=counts) == pytest.approx(
        A.fit_linear_preference(x[repeated], y[repeated], 0.01), abs=1e-6)


def test_laplace_covariance_is_the_inverse_hessian_and_shrinks_with_data():
    rng = np.random.default_rng(8)
    truth = np.array([1.0, -2.0])
    x, y = _choices(rng, 400, truth)
    w = A.fit_linear_preference(x, y, l2=0.001)
    cov = A.laplace_covariance(w, x, 0.001)
    # finite-difference Hessian of the total penalised NLL (n times the mean objective)
    def total(v):
        z = x @ v
        return float(np.sum(np.logaddexp(0, z) - y * z) + len(y) * 0.001 * v @ v)
    eps, hess = 1e-4, np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            e_i, e_j = np.eye(2)[i] * eps, np.eye(2)[j] * eps
            hess[i, j] = (total(w + e_i + e_j) - total(w + e_i - e_j) - total(w - e_i + e_j)
                          + total(w - e_i - e_j)) / (4 * eps * eps)
    assert np.linalg.inv(cov) == pytest.approx(hess, rel=1e-3)
    small = A.laplace_covariance(A.fit_linear_preference(x[:40], y[:40], 0.001), x[:40], 0.001)
    assert np.trace(small) > 4 * np.trace(cov)  # ten times the data: about a tenth of the variance
    mode, samples = A.posterior_samples("laplace", x, y, 0.001, 4000, np.random.default_rng(9))
    assert mode == pytest.approx(w)
    assert np.cov(samples.T) == pytest.approx(cov, rel=0.1, abs=1e-4)
    mode_b, boot = A.posterior_samples("bootstrap", x, y, 0.001, 200, np.random.default_rng(10))
    # the bootstrap's spread and the Laplace spread measure the same uncertainty (within sampling error)
    assert np.diag(np.cov(boot.T)) == pytest.approx(np.diag(cov), rel=0.35)
    with pytest.raises(ValueError, match="posterior 'dropout'"):
        A.posterior_samples("dropout", x, y, 0.001, 4, np.random.default_rng(0))


def test_calibration_reads_errors_from_disagreement():
    mode = np.array([1.0, 0.0])
    # members agree along feature 0 and disagree along feature 1
    samples = np.array([[1.0, 3.0], [1.0, -3.0], [1.0, 2.0], [1.0, -2.0]])
    # pairs the mode gets right lie along feature 0; the ones it gets wrong have a large feature 1
    x = np.array([[2.0, 0.0], [1.5, 0.0], [1.0, 0.1], [-0.2, 1.0], [-0.1, 2.0]])
    result = A.uncertainty_calibration(samples, mode, x, bins=2)
    assert result["error_auroc"] == 1.0
    assert result["mode_accuracy"] == pytest.approx(0.6)
    assert sum(row["pairs"] for row in result["reliability"]) == 5
    assert 0 <= result["ece"] <= 0.5


def test_label_savings_read_the_first_crossing_both_ways():
    labels = np.array([100, 200, 300, 400])
    random_curve = np.array([0.60, 0.64, 0.66, 0.68])
    faster = np.array([0.60, 0.66, 0.70, 0.71])  # reaches 0.68 halfway between 200 and 300 labels
    assert A.label_savings(labels, random_curve, faster) == pytest.approx(400 / 250)
    slower = np.array([0.60, 0.62, 0.63, 0.64])  # random reaches 0.64 at 200 labels
    assert A.label_savings(labels, random_curve, slower) == pytest.approx(200 / 400)
    assert A.label_savings(labels, random_curve, random_curve) == pytest.approx(1.0)
    flat = np.array([0.60, 0.58, 0.61, 0.60])  # random gained nothing: it "needed" its first 100 labels
    assert A.label_savings(labels, flat, faster) == pytest.approx(1.0)
