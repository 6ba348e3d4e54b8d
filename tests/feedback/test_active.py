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
