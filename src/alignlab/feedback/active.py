"""Which comparisons to ask a person for: query strategies over a reward ensemble's scores.

A reward ensemble (K members, train/reward_model.py) scores N candidate responses: ``rewards``
is (K, N). Each member k predicts a comparison of candidates a and b with the Bradley-Terry
probability p_k(a > b) = sigmoid(beta (r_k(a) - r_k(b))). The strategies rank candidate pairs:

- ``random``: any pair, uniformly (the baseline every other is measured against);
- ``uncertainty``: the largest disagreement among the members, the variance over k of p_k(a > b);
- ``information``: the expected information the answer carries about which member is right,
  H(mean_k p_k) - mean_k H(p_k) (BALD, Houlsby et al. 2011): high where the members disagree,
  zero where they agree, however unsure each is of the person's answer;
- ``thompson``: double Thompson sampling (Dwaracherla et al. 2024, "Efficient Exploration for
  LLMs"): draw a member and take its best candidate; draw members again until one's best is a
  different candidate, and pair the two (among one prompt's candidates).

``gaussian_information_gain`` is the closed form for a linear reward with a Gaussian posterior
observed with Gaussian noise, 1/2 log(1 + d' S d / noise^2); ``ensemble_information_gain`` is
the same quantity estimated from an ensemble's samples (the two agree as the ensemble grows).
"""

from __future__ import annotations

import math

import numpy as np

STRATEGIES = ("random", "uncertainty", "information", "thompson")


def all_pairs(n: int) -> np.ndarray:
    """Every unordered pair of n candidates, (n (n - 1) / 2, 2)."""
    a, b = np.triu_indices(n, k=1)
    return np.stack([a, b], axis=1)


def pair_probabilities(rewards: np.ndarray, pairs: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """(K, P): each member's probability that the first of each pair is preferred."""
    rewards = np.asarray(rewards, dtype=float)
    diff = rewards[:, pairs[:, 0]] - rewards[:, pairs[:, 1]]
    return 0.5 * (1.0 + np.tanh(0.5 * beta * diff))


def _entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in nats, 0 at p = 0 or 1."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def disagreement(probabilities: np.ndarray) -> np.ndarray:
    """(P,) the variance over members of p_k(a > b)."""
    return np.asarray(probabilities).var(axis=0)


def mutual_information(probabilities: np.ndarray) -> np.ndarray:
    """(P,) H(mean_k p_k) - mean_k H(p_k), in nats (at most log 2)."""
    p = np.asarray(probabilities)
    return np.maximum(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0)


def choose_pairs(strategy: str, rewards: np.ndarray, count: int, rng: np.random.Generator,
                 pairs: np.ndarray | None = None, beta: float = 1.0, tries: int = 30) -> np.ndarray:
    """``count`` pairs of candidates (rows of ``pairs``, default every pair) to ask about, best first.

    For ``thompson`` the candidates are one prompt's responses and ``pairs`` is not used: each
    pair is drawn afresh (distinct pairs, as long as there are new ones to find)."""
    rewards = np.asarray(rewards, dtype=float)
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (members, candidates) with at least 2 candidates, got {rewards.shape}")
    if strategy not in STRATEGIES:
        raise ValueError(f"query strategy {strategy!r}: choose from {', '.join(STRATEGIES)}")
    if strategy == "thompson":
        return _double_thompson(rewards, count, rng, tries)
    pairs = all_pairs(rewards.shape[1]) if pairs is None else np.asarray(pairs)
    count = min(count, len(pairs))
    if strategy == "random":
        return pairs[rng.choice(len(pairs), size=count, replace=False)]
    p = pair_probabilities(rewards, pairs, beta)
    score = disagreement(p) if strategy == "uncertainty" else mutual_information(p)
    order = np.lexsort((rng.random(len(pairs)), -score))  # ties broken at random
    return pairs[order[:count]]


def _double_thompson(rewards: np.ndarray, count: int, rng: np.random.Generator, tries: int) -> np.ndarray:
    members, n = rewards.shape
    chosen: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for _ in range(count * tries):
        if len(chosen) == count or len(seen) == n * (n - 1) // 2:
            break
        first = int(rewards[rng.integers(members)].argmax())
        second = first
        for _ in range(tries):
            second = int(rewards[rng.integers(members)].argmax())
            if second != first:
                break
        if second == first:  # every draw agrees on the best: pair it with the best other under a fresh draw
            row = rewards[rng.integers(members)].copy()
            row[first] = -np.inf
            second = int(row.argmax())
        key = (min(first, second), max(first, second))
        if key not in seen:
            seen.add(key)
            chosen.append((first, second))
    return np.array(chosen, dtype=int).reshape(-1, 2)


def gaussian_information_gain(d: np.ndarray, covariance: np.ndarray, noise: float) -> float:
    """Information (nats) an observation y = w . d + eps, eps ~ N(0, noise^2), carries about
    w ~ N(m, covariance): 1/2 log(1 + d' S d / noise^2)."""
    d = np.asarray(d, dtype=float)
    return 0.5 * math.log1p(float(d @ np.asarray(covariance, dtype=float) @ d) / noise ** 2)


def ensemble_information_gain(samples: np.ndarray, d: np.ndarray, noise: float) -> float:
    """The same information, from an ensemble's members taken as posterior samples (K, D): the
    spread of their predictions w_k . d in place of d' S d."""
    predictions = np.asarray(samples, dtype=float) @ np.asarray(d, dtype=float)
    return 0.5 * math.log1p(float(predictions.var(ddof=1)) / noise ** 2)
