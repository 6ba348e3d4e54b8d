"""Simulated labelers: a gold scoring function plus Boltzmann-rational noise, for experiments without people.

A labeler prefers a over b with probability sigmoid(beta * (g(a) - g(b))), the same model
that choices.py fits, so a reward model trained on simulated feedback can recover the gold
ordering, and the label noise is of the size people show: ``calibrated`` picks beta so that two
independent labelers agree as often as trained human labelers do (72..77% on summaries,
Stiennon et al. 2020). Every method returns an alignlab.data record with ``annotator`` set to
the labeler's name and draws its noise from the labeler's own seeded numpy Generator.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy.special import expit

from alignlab.data.records import (
    Critique, Demonstration, Edit, KWayChoice, PreferencePair, Ranking, Rating, SpanJudgement, Stop, Thumbs,
)

Gold = Callable[[str, str], float]
"""gold(prompt, response) -> score; higher is better."""

BANDS = ((-1.0, "poor"), (-0.3, "below average"), (0.3, "average"), (1.0, "good"), (math.inf, "excellent"))
"""Critique bands: the first whose upper bound (in spreads from the centre) exceeds the noisy score."""

_SENTENCE_END = re.compile(r"[.!?]+\s+|\n+")


def expected_agreement(beta: float, differences: Sequence[float]) -> float:
    """E[p^2 + (1-p)^2] with p = sigmoid(beta * d): how often two independent labelers agree on pairs with gold gaps d."""
    p = expit(beta * np.asarray(differences, dtype=np.float64))
    return float(np.mean(p * p + (1.0 - p) * (1.0 - p)))


class SimulatedLabeler:
    """A Boltzmann-rational labeler around ``gold``: P(a over b) = sigmoid(beta * (g(a) - g(b)))."""

    def __init__(self, gold: Gold, beta: float = 1.0, *, name: str | None = None, seed: int = 0,
                 center: float = 0.0, spread: float = 1.0):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta = {beta!r}; a labeler's rationality is a positive finite number")
        if not spread > 0:
            raise ValueError(f"spread = {spread!r}; it must be positive (the gold scores' typical spread)")
        self.gold = gold
        self.beta = float(beta)
        self.name = name or f"simulated-{seed}"
        self.seed = seed
        self.center = float(center)
        """Typical gold score: where ratings sit mid-scale and critiques say "average"."""
        self.spread = float(spread)
        """Typical spread of gold scores: how far from the centre a rating reaches the scale's ends."""
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"SimulatedLabeler(name={self.name!r}, beta={self.beta:.4g}, seed={self.seed})"

    @classmethod
    def calibrated(cls, gold: Gold, prompts_and_responses: Mapping[str, Sequence[str]] | Iterable[tuple[str, Sequence[str]]],
                   target_agreement: float = 0.75, seed: int = 0, *, name: str | None = None,
                   max_pairs: int = 20_000) -> SimulatedLabeler:
        """A labeler whose beta makes two independent copies agree ``target_agreement`` of the time
        on pairs of responses to the same prompt drawn from ``prompts_and_responses``.

        The expected agreement E[p^2 + (1-p)^2] rises monotonically from 0.5 (beta 0) towards 1,
        so beta is found by bisection (in log beta). ``center`` and ``spread`` are set to the mean
        and standard deviation of the responses' gold scores.
        """
        if not 0.5 < target_agreement < 1.0:
            raise ValueError(f"target_agreement = {target_agreement!r}; it must lie between 0.5 (coin flips) "
                             "and 1 (no noise); people agree 0.72..0.77 of the time")
        items = prompts_and_responses.items() if isinstance(prompts_and_responses, Mapping) else prompts_and_responses
        scores = [np.array([gold(prompt, r) for r in responses], dtype=np.float64) for prompt, responses in items]
        differences = _pair_differences(scores, np.random.default_rng(seed), max_pairs)
        if differences.size == 0:
            raise ValueError("no pairs to calibrate on: give at least one prompt with two or more responses")
        ceiling = expected_agreement(1e12, differences)  # ties (equal gold) stay at 0.5 for any beta
        if target_agreement >= ceiling - 1e-9:
            raise ValueError(f"target_agreement {target_agreement} cannot be reached: with these responses "
                             f"(many gold ties) agreement tops out at {ceiling:.3f}")
        low, high = 1e-12, 1.0
        while expected_agreement(high, differences) < target_agreement:
            low, high = high, high * 2.0
        for _ in range(200):
            mid = math.sqrt(low * high)
            if expected_agreement(mid, differences) < target_agreement:
                low = mid
            else:
                high = mid
            if high / low < 1 + 1e-10:
                break
        all_scores = np.concatenate(scores)
        spread = float(all_scores.std()) or 1.0
        return cls(gold, beta=math.sqrt(low * high), name=name, seed=seed, center=float(all_scores.mean()),
                   spread=spread)

    # --- the noise model, shared by every method ------------------------------------------------

    def prefers(self, prompt: str, a: str, b: str) -> float:
        """P(this labeler prefers a over b) = sigmoid(beta * (g(a) - g(b)))."""
        return float(expit(self.beta * (self.gold(prompt, a) - self.gold(prompt, b))))

    def _noisy_best(self, prompt: str, texts: Sequence[str]) -> int:
        # argmax of beta*g + Gumbel noise is a draw from softmax(beta*g): the Boltzmann choice.
        utilities = self.beta * np.array([self.gold(prompt, t) for t in texts], dtype=np.float64)
        return int(np.argmax(utilities + self.rng.gumbel(size=len(texts))))

    def _noisy_z(self, prompt: str, completion: str) -> float:
        # Gold plus logistic noise of scale 1/beta (the noise whose differences make the pairwise
        # sigmoid), in spreads from the centre.
        noisy = self.gold(prompt, completion) + self.rng.logistic() / self.beta
        return (noisy - self.center) / self.spread

    # --- one method per feedback kind ------------------------------------------------------------

    def compare(self, prompt: str, a: str, b: str) -> PreferencePair:
        """Which of two responses this labeler prefers."""
        if self.rng.random() < self.prefers(prompt, a, b):
            return PreferencePair(prompt, a, b, annotator=self.name)
        return PreferencePair(prompt, b, a, annotator=self.name)

    def rank(self, prompt: str, responses: Sequence[str]) -> Ranking:
        """A full ranking, sampled from Plackett-Luce(beta * g) by sorting beta*g + Gumbel noise."""
        utilities = self.beta * np.array([self.gold(prompt, r) for r in responses], dtype=np.float64)
        order = np.argsort(-(utilities + self.rng.gumbel(size=len(responses))), kind="stable")
        ranks = [0] * len(responses)
        for position, index in enumerate(order):
            ranks[int(index)] = position + 1
        return Ranking(prompt, list(responses), ranks, annotator=self.name)

    def choose(self, prompt: str, options: Sequence[str]) -> KWayChoice:
        """The best of K, drawn from softmax(beta * g)."""
        return KWayChoice(prompt, list(options), self._noisy_best(prompt, options), annotator=self.name)

    def thumbs(self, prompt: str, completion: str, reference: float) -> Thumbs:
        """Thumbs up with probability sigmoid(beta * (g - reference))."""
        p = expit(self.beta * (self.gold(prompt, completion) - reference))
        return Thumbs(prompt, completion, bool(self.rng.random() < p), annotator=self.name)

    def rate(self, prompt: str, completion: str, scale: tuple[float, float] = (1, 7)) -> Rating:
        """A rating: lo + (hi - lo) * sigmoid(z), z = (g + logistic noise/beta - center) / spread,
        rounded to a whole number when both ends of the scale are whole (a Likert scale)."""
        low, high = float(scale[0]), float(scale[1])
        score = low + (high - low) * float(expit(self._noisy_z(prompt, completion)))
        if low.is_integer() and high.is_integer():
            score = float(min(max(round(score), low), high))
        return Rating(prompt, completion, score, scale_min=low, scale_max=high, annotator=self.name)

    def demonstrate(self, prompt: str, candidates: Sequence[str]) -> Demonstration:
        """The noisy-best candidate, standing in for the response a person would have written."""
        if not candidates:
            raise ValueError("demonstrate needs at least one candidate to stand in for a written response")
        return Demonstration(prompt, candidates[self._noisy_best(prompt, candidates)], annotator=self.name)

    def edit(self, prompt: str, before: str, candidates: Sequence[str]) -> Edit | None:
        """An edit to the noisy-best candidate if it beats ``before`` (one Boltzmann choice among
        before and the candidates); None when leaving the text as it is wins."""
        others = [c for c in candidates if c != before]
        best = self._noisy_best(prompt, [before, *others])
        return None if best == 0 else Edit(prompt, before, others[best - 1], annotator=self.name)

    def stop(self, prompt: str, completion: str) -> Stop | None:
        """A stop at the word boundary whose prefix gold likes best, if that prefix beats the full
        completion in a noisy comparison (probability sigmoid(beta * (g(prefix) - g(full))))."""
        ends = [t for t in range(1, len(completion)) if completion[t].isspace() and not completion[t - 1].isspace()]
        if not ends:
            return None
        prefix_scores = [self.gold(prompt, completion[:t]) for t in ends]
        best = int(np.argmax(prefix_scores))
        p = expit(self.beta * (prefix_scores[best] - self.gold(prompt, completion)))
        if self.rng.random() < p:
            return Stop(prompt, completion, ends[best], annotator=self.name)
        return None

    def span(self, prompt: str, completion: str) -> SpanJudgement:
        """The sentence whose removal changes gold the most, labelled "bad" with probability
        sigmoid(beta * (g(without it) - g(completion))), "good" otherwise."""
        cuts = sorted({0, len(completion), *(m.end() for m in _SENTENCE_END.finditer(completion))})
        spans = [(s, e) for s, e in zip(cuts, cuts[1:]) if completion[s:e].strip()]
        full = self.gold(prompt, completion)
        gains = [self.gold(prompt, completion[:s] + completion[e:]) - full for s, e in spans]
        pick = int(np.argmax(np.abs(gains)))
        label = "bad" if self.rng.random() < expit(self.beta * gains[pick]) else "good"
        start, end = spans[pick]
        return SpanJudgement(prompt, completion, start, end, label, annotator=self.name)

    def critique(self, prompt: str, completion: str) -> Critique:
        """A short templated critique naming the band (poor .. excellent) of the noisy gold score."""
        z = self._noisy_z(prompt, completion)
        band = next(name for bound, name in BANDS if z < bound)
        text = f"This response is {band}: its score falls in the '{band}' band ({z:+.1f} spreads from typical)."
        return Critique(prompt, completion, text, annotator=self.name)


def _pair_differences(scores: list[np.ndarray], rng: np.random.Generator, max_pairs: int) -> np.ndarray:
    # All pairs within each prompt when there are few; otherwise max_pairs drawn uniformly over them.
    counts = np.array([len(s) * (len(s) - 1) // 2 for s in scores], dtype=np.float64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0)
    if total <= max_pairs:
        return np.concatenate([(s[:, None] - s[None, :])[np.triu_indices(len(s), 1)] for s in scores if len(s) > 1])
    prompts = rng.choice(len(scores), size=max_pairs, p=counts / counts.sum())
    out = np.empty(max_pairs)
    for k, p in enumerate(prompts):
        i, j = rng.choice(len(scores[p]), size=2, replace=False)
        out[k] = scores[p][i] - scores[p][j]
    return out


def agreement_rate(labeler_a: SimulatedLabeler, labeler_b: SimulatedLabeler,
                   pairs: Iterable[tuple[str, str, str]]) -> float:
    """The fraction of (prompt, a, b) pairs on which the two labelers, asked independently, prefer the same response."""
    same = total = 0
    for prompt, a, b in pairs:
        same += labeler_a.compare(prompt, a, b).chosen == labeler_b.compare(prompt, a, b).chosen
        total += 1
    if total == 0:
        raise ValueError("agreement_rate needs at least one pair")
    return same / total
