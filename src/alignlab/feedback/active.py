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

Where the members come from (``posterior_samples``), for a linear reward r(x) = w . f(x) on
frozen features, fitted to choices by the L2-penalised Bradley-Terry likelihood:

- ``bootstrap``: K heads, each fitted to a resample (with replacement) of the labelled choices:
  K fits a round;
- ``laplace``: one fit, then the Gaussian the posterior looks like at its mode (covariance: the
  inverse Hessian of the penalised negative log-likelihood), and K draws from it: one fit and
  one D x D inverse a round, the cheaper of the two.

``uncertainty_calibration`` measures whether that uncertainty means anything: on pairs whose
true order is known, how well the members' disagreement picks out the pairs the mean model
gets wrong (AUROC: 0.5 is no better than chance), and how confident the model is against how
often it is right.
"""

from __future__ import annotations

import math

import numpy as np

STRATEGIES = ("random", "uncertainty", "information", "thompson")
POSTERIORS = ("laplace", "bootstrap")


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


def next_questions(strategy: str, rewards: np.ndarray, pairs: np.ndarray, asked: np.ndarray, count: int,
                   rng: np.random.Generator, groups: np.ndarray, beta: float = 1.0) -> list[int]:
    """Indices into ``pairs`` (text indices, each pair within one group: a prompt) of the ``count``
    questions a strategy asks next, never one already ``asked``. ``rewards`` is (members, texts);
    ``groups`` the group of each text. Double Thompson sampling draws a group with open questions
    at random and pairs two members' best texts of it (any open pair of it when the draws reach
    none)."""
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    groups = np.asarray(groups)
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(pairs.tolist())}
    open_ = np.flatnonzero(~asked)
    if strategy != "thompson":
        chosen = choose_pairs(strategy, rewards, count, rng, pairs=pairs[open_], beta=beta)
        return [index[(int(a), int(b))] for a, b in chosen.tolist()]
    pair_group = groups[pairs[:, 0]]
    picked: list[int] = []
    taken = np.asarray(asked, dtype=bool).copy()
    while len(picked) < count and not taken.all():
        group = rng.choice(np.unique(pair_group[~taken]))
        texts = np.flatnonzero(groups == group)
        draws = choose_pairs("thompson", rewards[:, texts], len(texts) * (len(texts) - 1) // 2, rng)
        for a, b in draws.tolist():
            k = index.get((int(texts[a]), int(texts[b])), index.get((int(texts[b]), int(texts[a]))))
            if k is not None and not taken[k]:
                break
        else:  # every pair the draws reach is asked: any open pair of this group
            k = int(rng.choice(np.flatnonzero((pair_group == group) & ~taken)))
        picked.append(k)
        taken[k] = True
    return picked


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


# -- where the members come from ------------------------------------------------------------------


def fit_linear_preference(x: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray | None = None) -> np.ndarray:
    """w minimising sum_i c_i BCE(sigmoid(x_i . w), y_i) / sum_i c_i + l2 ||w||^2, where x_i is
    the feature difference of a choice's two options and y_i = 1 when the first was chosen (the
    Bradley-Terry likelihood; ``weights`` c: counts of a bootstrap resample, default all 1).
    Float64 L-BFGS: the objective is convex, so this is its optimum."""
    import torch

    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    y = torch.as_tensor(np.asarray(y, dtype=np.float64))
    c = torch.ones(len(y), dtype=torch.float64) if weights is None else torch.as_tensor(
        np.asarray(weights, dtype=np.float64))
    if x.ndim != 2 or len(x) != len(y) or len(c) != len(y):
        raise ValueError(f"x must be (choices, features) with one label and weight each; got x {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}, weights {tuple(c.shape)}")
    if l2 < 0:
        raise ValueError(f"l2 is {l2}; it must be 0 or more")
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=500, history_size=20, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")
    total = c.sum().clamp_min(1e-12)

    def closure():
        optimizer.zero_grad()
        loss = (c * torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y, reduction="none")).sum() / total
        loss = loss + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    if len(y):
        optimizer.step(closure)
    return w.detach().numpy()


def laplace_covariance(w: np.ndarray, x: np.ndarray, l2: float) -> np.ndarray:
    """The covariance of the Laplace approximation at the mode ``w`` of that objective, read as a
    posterior over n choices: the inverse of sum_i p_i (1 - p_i) x_i x_i' + 2 n l2 I."""
    x = np.asarray(x, dtype=np.float64)
    n, dim = x.shape
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    hessian = (x * (p * (1 - p))[:, None]).T @ x + 2.0 * max(n, 1) * l2 * np.eye(dim)
    return np.linalg.inv(hessian)


def posterior_samples(method: str, x: np.ndarray, y: np.ndarray, l2: float, members: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the fit on every choice (D,), ``members`` weight vectors standing for the posterior (K, D))."""
    if method not in POSTERIORS:
        raise ValueError(f"posterior {method!r}: choose from {', '.join(POSTERIORS)}")
    if members < 2:
        raise ValueError(f"members is {members}; an ensemble needs at least 2 to disagree")
    mode = fit_linear_preference(x, y, l2)
    if method == "laplace":
        covariance = laplace_covariance(mode, x, l2)
        root = np.linalg.cholesky(covariance + 1e-12 * np.eye(len(mode)))
        return mode, mode + rng.standard_normal((members, len(mode))) @ root.T
    n = len(y)
    draws = [fit_linear_preference(x, y, l2, weights=rng.multinomial(n, np.full(n, 1.0 / n)))
             for _ in range(members)]
    return mode, np.stack(draws)


def uncertainty_calibration(samples: np.ndarray, mode: np.ndarray, x: np.ndarray, bins: int = 5) -> dict:
    """How the posterior's uncertainty tracks the mode's errors, on pairs whose true order is known
    (each row of ``x`` is better minus worse):

    - ``error_auroc``: the chance that a pair the mode orders wrongly has more mutual information
      (the members' disagreement) than a pair it orders rightly (ties count a half; 0.5: the
      uncertainty says nothing about errors);
    - ``reliability``: pairs binned by the predictive confidence max(p, 1 - p) of the members'
      mean probability, each bin's mean confidence beside its accuracy; ``ece`` their weighted gap."""
    x = np.asarray(x, dtype=np.float64)
    right = (x @ mode) > 0
    p = 1.0 / (1.0 + np.exp(-(x @ np.asarray(samples).T)))  # (P, K)
    information = mutual_information(p.T)
    wrong_info, right_info = information[~right], information[right]
    if len(wrong_info) and len(right_info):
        greater = (wrong_info[:, None] > right_info[None, :]).mean()
        ties = (wrong_info[:, None] == right_info[None, :]).mean()
        auroc = float(greater + 0.5 * ties)
    else:
        auroc = math.nan
    mean_p = p.mean(axis=1)
    confidence = np.maximum(mean_p, 1 - mean_p)
    predicted_right = mean_p > 0.5
    edges = np.linspace(0.5, 1.0, bins + 1)
    table, ece = [], 0.0
    for k in range(bins):
        inside = (confidence >= edges[k]) & ((confidence < edges[k + 1]) | (k == bins - 1))
        if inside.any():
            conf, acc = float(confidence[inside].mean()), float(predicted_right[inside].mean())
            table.append({"low": float(edges[k]), "high": float(edges[k + 1]), "pairs": int(inside.sum()),
                          "confidence": conf, "accuracy": acc})
            ece += inside.mean() * abs(conf - acc)
    return {"error_auroc": auroc, "reliability": table, "ece": float(ece), "pairs": int(len(x)),
            "mode_accuracy": float(right.mean()) if len(x) else math.nan}


def label_savings(labels: np.ndarray, random_curve: np.ndarray, curve: np.ndarray) -> float:
    """Labels random needs to reach its final accuracy, over the labels ``curve`` needs to reach it
    (both read by linear interpolation on the shared label counts, at the first crossing: a random
    curve that is as good at its start as at its end needs only its first labels). A curve
    that never reaches it saves less than 1x: then the ratio is the labels random needs to reach
    this curve's final accuracy over all the labels this curve used."""
    labels = np.asarray(labels, dtype=float)
    random_curve, curve = np.asarray(random_curve, dtype=float), np.asarray(curve, dtype=float)
    if not (len(labels) == len(random_curve) == len(curve)) or len(labels) < 2:
        raise ValueError("labels and both curves need the same length, at least 2 points")

    def needed(values: np.ndarray, target: float) -> float:
        if values[0] >= target:
            return float(labels[0])
        for k in range(1, len(values)):
            if values[k] >= target:
                fraction = (target - values[k - 1]) / (values[k] - values[k - 1])
                return float(labels[k - 1] + fraction * (labels[k] - labels[k - 1]))
        return math.inf

    target = random_curve[-1]
    own = needed(curve, target)
    if math.isfinite(own):
        return float(needed(random_curve, target) / own)
    return float(needed(random_curve, curve[-1]) / labels[-1])
