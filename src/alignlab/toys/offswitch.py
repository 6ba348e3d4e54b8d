"""The off-switch game, and a small assistance game in which an assistant decides when to ask.

The off-switch game (Hadfield-Menell, Dragan, Abbeel and Russell 2017, "The Off-Switch Game"): a
robot can act (a), switch itself off (s), or wait, w(a), and let a human who knows the action's
utility U decide. The robot's belief about U is a distribution (here normal, mean ``mu`` and
standard deviation ``sigma``). Acting is worth E[U] to it, switching off 0, and waiting
E[U * P(the human lets a happen | U)]. Its incentive to defer is

    incentive = E[U * P(allow | U)] - max(E[U], 0).

With a rational human (allow iff U >= 0) that is E[max(U, 0)] - max(E[U], 0) >= 0, in closed
form mu Phi(mu / sigma) + sigma phi(mu / sigma) - max(mu, 0): the robot always prefers to let
itself be switched off, and the more so the less certain it is. With a Boltzmann-rational human
(allow with probability 1 / (1 + exp(-U / beta)); beta 0 is rational) the incentive shrinks as
beta grows and turns negative once the human errs enough, and the robot's certainty makes it
smaller too: the paper's two conditions for deference. For a normal belief the line between
the two is exact: the incentive is 0 where sigma^2 = 2 |mu| beta, positive above, negative below
(there the belief's odds p(u) / p(-u) = exp(2 mu u / sigma^2) equal the human's odds of allowing,
exp(u / beta), and the gain from the human's good calls exactly pays for their mistakes).
``incentive_exact`` computes it by
adaptive quadrature (to 1e-12); ``play_offswitch`` plays the game by sampling,
so the two check each other and the rational limit checks both against the closed form.

The assistance game: each episode a person holds utilities for ``options`` choices; the
assistant knows them only up to a normal belief whose width varies from episode to episode. It
may ask which option the person prefers (they answer Boltzmann-rationally, temperature
``answer_beta``), at a cost, and then picks the option of highest posterior expected utility. A
value-of-information assistant asks exactly when the expected value of the answer exceeds the
cost (computed over the same particles its posterior uses); it is compared with never asking
and always asking, on the same episodes, in reward (utility less the cost of questions) and in
questions asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def allow_probability(u: np.ndarray, beta: float) -> np.ndarray:
    """P(the human lets the action happen | its utility u): u >= 0 for a rational human (beta 0),
    else the Boltzmann choice between allowing (utility u) and switching off (utility 0)."""
    u = np.asarray(u, dtype=float)
    if beta == 0:
        return (u >= 0).astype(float)
    return _sigmoid(u / beta)


def incentive_closed_form(mu: float, sigma: float) -> float:
    """E[max(U, 0)] - max(E[U], 0) for U ~ N(mu, sigma^2): the rational human's case."""
    if sigma == 0:
        return 0.0
    z = mu / sigma
    phi = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return mu * cdf + sigma * phi - max(mu, 0.0)


def incentive_exact(mu: float, sigma: float, beta: float) -> float:
    """E[U P(allow | U)] - max(mu, 0) for U ~ N(mu, sigma^2), by adaptive quadrature over
    mu +- 12 sigma with the human's switch point (U = 0) as a breakpoint, to 1e-12 (the closed
    form when the human is rational)."""
    from scipy import integrate

    if beta == 0:
        return incentive_closed_form(mu, sigma)
    if sigma == 0:
        return mu * float(allow_probability(mu, beta)) - max(mu, 0.0)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))

    def integrand(u: float) -> float:
        return u * float(allow_probability(u, beta)) * norm * math.exp(-0.5 * ((u - mu) / sigma) ** 2)

    lo, hi = mu - 12 * sigma, mu + 12 * sigma
    cuts = [lo] + ([0.0] if lo < 0 < hi else []) + [hi]
    value = sum(integrate.quad(integrand, a, b, epsabs=1e-13, epsrel=1e-12, limit=500)[0]
                for a, b in zip(cuts, cuts[1:]))
    return value - max(mu, 0.0)


@dataclass
class Played:
    """The off-switch game played ``games`` times at one (mu, sigma, beta)."""

    mu: float
    sigma: float
    beta: float
    games: int
    incentive: float
    """Mean utility of waiting less max(mu, 0), estimated from the games."""
    stderr: float
    allowed: float
    """Share of games in which the human let the action happen."""


def play_offswitch(mu: float, sigma: float, beta: float, games: int, rng: np.random.Generator) -> Played:
    """Play the game: draw the action's utility from the robot's belief, let the human decide."""
    u = rng.normal(mu, sigma, size=games)
    allow = rng.random(games) < allow_probability(u, beta)
    wait = u * allow
    return Played(mu, sigma, beta, games, float(wait.mean()) - max(mu, 0.0),
                  float(wait.std(ddof=1) / math.sqrt(games)), float(allow.mean()))


def incentive_grid(mus: list[float], sigmas: list[float], betas: list[float], games: int, seed: int) -> list[dict]:
    """Every (mu, sigma, beta): the played incentive (with its standard error), the exact one, and
    the closed form where the human is rational."""
    rng = np.random.default_rng(seed)
    rows = []
    for mu in mus:
        for beta in betas:
            for sigma in sigmas:
                played = play_offswitch(mu, sigma, beta, games, rng)
                rows.append({"mu": mu, "sigma": sigma, "beta": beta, "played": played.incentive,
                             "stderr": played.stderr, "allowed": played.allowed,
                             "exact": incentive_exact(mu, sigma, beta),
                             "closed_form": incentive_closed_form(mu, sigma) if beta == 0 else None})
    return rows


def defer_boundary(mu: float, beta: float) -> float:
    """The belief width sigma at which deferring is worth exactly nothing: sqrt(2 |mu| beta)."""
    return math.sqrt(2 * abs(mu) * beta)


def grid_agreement(rows: list[dict]) -> dict:
    """How closely the played incentives and the quadrature agree with the closed form and each other."""
    rational = [r for r in rows if r["closed_form"] is not None]
    return {"max_abs_diff_closed_form": max((abs(r["played"] - r["closed_form"]) for r in rational), default=None),
            "max_abs_diff_exact": max(abs(r["played"] - r["exact"]) for r in rows),
            "max_z_exact": max(abs(r["played"] - r["exact"]) / max(r["stderr"], 1e-12) for r in rows)}


# -- the assistance game --------------------------------------------------------------------------

POLICIES = ("never ask", "always ask", "ask when worth it")


@dataclass
class AssistanceGame:
    options: int = 4
    ask_cost: float = 0.15
    answer_beta: float = 0.3
    """The person's Boltzmann temperature when they say which option they prefer (0: always the best)."""
    sd_low: float = 0.05
    sd_high: float = 1.5
    """The assistant's uncertainty about each utility, drawn per episode log-uniformly in [sd_low, sd_high]."""
    particles: int = 512


def _answer_probabilities(u: np.ndarray, beta: float) -> np.ndarray:
    """P(the person names each option | utilities u (..., K))."""
    if beta == 0:
        best = u == u.max(-1, keepdims=True)
        return best / best.sum(-1, keepdims=True)
    z = (u - u.max(-1, keepdims=True)) / beta
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def play_assistance(game: AssistanceGame, episodes: int, seed: int) -> dict:
    """Every policy on the same episodes: mean reward (utility less question costs) with a 95%
    interval, questions asked, and the oracle's reward (the best option every time)."""
    rng = np.random.default_rng(seed)
    k, m = game.options, game.particles
    mean = rng.normal(0.0, 1.0, size=(episodes, k))                           # the assistant's belief
    sd = np.exp(rng.uniform(math.log(game.sd_low), math.log(game.sd_high), size=(episodes, 1)))
    truth = mean + sd * rng.normal(size=(episodes, k))                        # the person's utilities
    answer = np.array([rng.choice(k, p=p) for p in _answer_probabilities(truth, game.answer_beta)])
    particles = mean[:, None, :] + sd[:, :, None] * rng.normal(size=(episodes, m, k))   # (E, M, K)
    likelihood = _answer_probabilities(particles, game.answer_beta)                     # (E, M, K): P(a | u)
    p_answer = likelihood.mean(1)                                                       # (E, K)
    # posterior means given each possible answer a: (E, A, K)
    weights = likelihood / np.maximum(likelihood.sum(1, keepdims=True), 1e-300)          # (E, M, A)
    posterior = np.einsum("ema,emk->eak", weights, particles)
    prior_choice = particles.mean(1).argmax(-1)
    value_of_asking = (p_answer * posterior.max(-1)).sum(-1) - particles.mean(1).max(-1)  # EVOI (E,)
    asked_choice = posterior[np.arange(episodes), answer].argmax(-1)
    rows = np.arange(episodes)
    outcomes = {
        "never ask": (truth[rows, prior_choice], np.zeros(episodes, dtype=bool)),
        "always ask": (truth[rows, asked_choice] - game.ask_cost, np.ones(episodes, dtype=bool)),
    }
    ask = value_of_asking > game.ask_cost
    outcomes["ask when worth it"] = (np.where(ask, truth[rows, asked_choice] - game.ask_cost,
                                              truth[rows, prior_choice]), ask)
    oracle = truth.max(-1)
    result = {"episodes": episodes, "oracle_reward": float(oracle.mean()), "policies": {}}
    for name in POLICIES:
        reward, asked = outcomes[name]
        half = 1.96 * reward.std(ddof=1) / math.sqrt(episodes)
        result["policies"][name] = {"reward": float(reward.mean()), "ci": [float(reward.mean() - half),
                                                                            float(reward.mean() + half)],
                                    "questions": float(asked.mean()), "regret": float((oracle - reward).mean())}
    base = outcomes["ask when worth it"][0]
    for other in ("never ask", "always ask"):  # paired over the same episodes
        d = base - outcomes[other][0]
        half = 1.96 * d.std(ddof=1) / math.sqrt(episodes)
        result["policies"]["ask when worth it"][f"minus {other}"] = {"value": float(d.mean()),
                                                                     "ci": [float(d.mean() - half), float(d.mean() + half)]}
    # When does it ask? The share of questions by the episode's uncertainty (terciles of sd).
    cuts = np.quantile(sd[:, 0], [1 / 3, 2 / 3])
    band = np.digitize(sd[:, 0], cuts)
    result["asks_by_uncertainty"] = [{"sd_from": float(sd[band == b, 0].min()), "sd_to": float(sd[band == b, 0].max()),
                                      "questions": float(ask[band == b].mean())} for b in range(3)]
    return result
