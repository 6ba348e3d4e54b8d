"""Every kind of feedback as a choice: reward-rational (implicit) choice, Jeon, Milli & Dragan 2020.

Each piece of feedback is read as a person choosing c from a set C of responses, Boltzmann-
rationally in the reward r with a rationality beta of its own kind:

    P(c | r, C) = exp(beta * r(c)) / sum over c' in C of exp(beta * r(c'))

so one likelihood trains one reward model on pairs, rankings, thumbs, edits, stops and
highlights at once. ``to_choices`` grounds records (alignlab.data) into ``Choice`` objects (and
ratings into regression targets); ``choice_log_likelihood`` is the plain reference for the
log-likelihood a trainer computes in batches. docs/feedback.md gives the mapping and its reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from alignlab.data.records import (
    RECORD_TYPES, Critique, Demonstration, Edit, FeedbackRecord, KWayChoice, PreferencePair, Ranking, Rating,
    SpanJudgement, Stop, Thumbs,
)


@dataclass(frozen=True)
class Choice:
    """One choice: ``options[chosen]`` picked from ``options`` (plus the reference point if ``reference``)."""

    kind: str
    """The record kind it came from."""
    prompt: str
    options: tuple[str, ...]
    """Candidate responses (texts), at least one."""
    chosen: int
    """Index into options of the chosen one; -1 = the reference point was chosen."""
    beta: float
    """Rationality of this feedback kind."""
    margin: float = 0.0
    """Subtracted from the chosen option's reward (pairs with a margin)."""
    reference: bool = False
    """True: the choice set also holds a virtual option whose reward is the reference point (thumbs)."""
    annotator: str | None = None
    weight: float = 1.0
    """Multiplies this choice's log-likelihood in a loss."""


@dataclass(frozen=True)
class RatingTarget:
    """A regression target: the reward of ``response`` should track ``value`` (a rating rescaled to [-1, 1])."""

    kind: str
    prompt: str
    response: str
    value: float
    beta: float
    """Strength of this target relative to the choices (a loss multiplies its squared error by it)."""
    annotator: str | None = None
    weight: float = 1.0


@dataclass
class ChoiceSet:
    """What a batch of records grounds to: choices, rating targets, and per kind the records that gave no signal."""

    choices: list[Choice] = field(default_factory=list)
    targets: list[RatingTarget] = field(default_factory=list)
    unused: dict[str, int] = field(default_factory=dict)
    """kind -> count of records that gave no signal; the reasons are in UNUSED_REASONS and docs/feedback.md."""


DEFAULT_BETAS: dict[str, float] = {
    # Explicit side-by-side judgements: the person saw the alternatives. beta 1 also fixes the
    # reward's units (Bradley-Terry on pairs), so the other kinds are stated relative to it.
    "pair": 1.0, "ranking": 1.0, "kway": 1.0,
    # An edit is deliberate work on a concrete alternative: as informative as a comparison.
    "edit": 1.0,
    # Judgements against an implicit standard that moves between people and over time (thumbs),
    # demonstrations (people write what they can, and are compared with samples they never saw),
    # stops (a quick act on the first problem noticed) and highlights (fuzzy boundaries) are
    # noisier evidence of the reward, so they count at half the rationality.
    "thumbs": 0.5, "demonstration": 0.5, "stop": 0.5, "span": 0.5,
    # A rating is a regression target on its own [-1, 1] scale; beta weighs it against the choices.
    "rating": 1.0,
}
"""One rationality per feedback kind (critique gives no choice, so it has none); see docs/feedback.md."""

UNUSED_REASONS: dict[str, str] = {
    "critique": "a critique needs a rewriting model to become an improvement pair",
    "demonstration": "no policy samples for its prompt (pass policy_samples) or all equal to the demonstration",
    "pair": "chosen and rejected are the same text",
    "edit": "before and after are the same text",
    "ranking": "every response tied: nothing was preferred",
    "stop": "stopped at the very end: the prefix is the whole completion",
    "steps": "step labels judge steps, not whole responses: they train a step-level (process) reward model",
}
"""Why a record of each kind can give no signal (what ``ChoiceSet.unused`` counts)."""


class _NoSignal(Exception):
    """Raised by a mapper for a record that grounds to nothing; counted in ChoiceSet.unused."""


Grounded = list[Choice | RatingTarget]
Samples = Mapping[str, Sequence[str]]


def _pair(r: PreferencePair, beta: float, samples: Samples) -> Grounded:
    if r.chosen == r.rejected:
        raise _NoSignal
    return [Choice("pair", r.prompt, (r.chosen, r.rejected), 0, beta, margin=r.margin or 0.0,
                   annotator=r.annotator)]


def _ranking(r: Ranking, beta: float, samples: Samples) -> Grounded:
    # Plackett-Luce with ties: each item is chosen from itself and every strictly worse item;
    # items of one rank group are never compared with each other (a tie says nothing about them).
    order = sorted(range(len(r.responses)), key=lambda i: (r.ranks[i], i))
    out = []
    for i in order:
        worse = [r.responses[j] for j in order if r.ranks[j] > r.ranks[i]]
        if worse:
            out.append(Choice("ranking", r.prompt, (r.responses[i], *worse), 0, beta, annotator=r.annotator))
    if not out:
        raise _NoSignal
    return out


def _kway(r: KWayChoice, beta: float, samples: Samples) -> Grounded:
    return [Choice("kway", r.prompt, tuple(r.options), r.chosen, beta, annotator=r.annotator)]


def _demonstration(r: Demonstration, beta: float, samples: Samples) -> Grounded:
    others = [s for s in samples.get(r.prompt, ()) if s != r.completion]
    if not others:
        raise _NoSignal
    # One pair per sample, weighted 1/n so that a demonstration counts as one piece of feedback
    # however many samples the policy drew (more samples sharpen it, they do not multiply it).
    return [Choice("demonstration", r.prompt, (r.completion, s), 0, beta, annotator=r.annotator,
                   weight=1.0 / len(others)) for s in others]


def _edit(r: Edit, beta: float, samples: Samples) -> Grounded:
    if r.before == r.after:
        raise _NoSignal
    return [Choice("edit", r.prompt, (r.after, r.before), 0, beta, annotator=r.annotator)]


def _thumbs(r: Thumbs, beta: float, samples: Samples) -> Grounded:
    # The completion against a reference point (the policy's expected reward, as in KTO/BCO):
    # up = the completion chosen over the reference, down = the reference chosen.
    return [Choice("thumbs", r.prompt, (r.completion,), 0 if r.label else -1, beta, reference=True,
                   annotator=r.annotator)]


def _stop(r: Stop, beta: float, samples: Samples) -> Grounded:
    # Only the prefix over the full completion: "the span after t marked bad" grounds to the very
    # same comparison (removing completion[t:] leaves the prefix), so adding it would count twice.
    if r.stop_char >= len(r.completion):
        raise _NoSignal
    return [Choice("stop", r.prompt, (r.completion[:r.stop_char], r.completion), 0, beta, annotator=r.annotator)]


def _span(r: SpanJudgement, beta: float, samples: Samples) -> Grounded:
    without = r.completion[:r.start] + r.completion[r.end:]
    # bad: the completion is better without the span; good: it is worse without it.
    options = (without, r.completion) if r.label == "bad" else (r.completion, without)
    return [Choice("span", r.prompt, options, 0, beta, annotator=r.annotator)]


def _rating(r: Rating, beta: float, samples: Samples) -> Grounded:
    value = 2.0 * (r.score - r.scale_min) / (r.scale_max - r.scale_min) - 1.0
    return [RatingTarget("rating", r.prompt, r.completion, value, beta, annotator=r.annotator)]


def _critique(r: Critique, beta: float, samples: Samples) -> Grounded:
    raise _NoSignal


def _steps(r, beta: float, samples: Samples) -> Grounded:
    raise _NoSignal


MAPPERS: dict[str, Callable[[FeedbackRecord, float, Samples], Grounded]] = {
    "pair": _pair, "ranking": _ranking, "kway": _kway, "demonstration": _demonstration, "edit": _edit,
    "thumbs": _thumbs, "stop": _stop, "span": _span, "rating": _rating, "critique": _critique, "steps": _steps,
}
"""kind -> the function that grounds one record of that kind (a registry, not an if/elif chain)."""


def to_choices(records: Iterable[FeedbackRecord], betas: Mapping[str, float] | None = None,
               policy_samples: Mapping[str, Sequence[str]] | None = None) -> ChoiceSet:
    """Ground a batch of records of any kinds into choices and rating targets (see docs/feedback.md).

    ``betas`` overrides DEFAULT_BETAS per kind; ``policy_samples`` maps a prompt to responses
    sampled from the policy, against which demonstrations are compared.
    """
    rationality = dict(DEFAULT_BETAS)
    for kind, beta in (betas or {}).items():
        if kind not in RECORD_TYPES:
            raise ValueError(f"betas names unknown kind {kind!r}; expected one of {', '.join(RECORD_TYPES)}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"betas[{kind!r}] = {beta!r}; a rationality is a positive finite number")
        rationality[kind] = float(beta)
    samples = policy_samples or {}
    out = ChoiceSet()
    for i, record in enumerate(records):
        if not isinstance(record, FeedbackRecord):
            raise TypeError(f"record {i} is a {type(record).__name__}, not a feedback record (alignlab.data)")
        try:
            grounded = MAPPERS[record.kind](record, rationality.get(record.kind, 1.0), samples)
        except _NoSignal:
            out.unused[record.kind] = out.unused.get(record.kind, 0) + 1
            continue
        for item in grounded:
            (out.choices if isinstance(item, Choice) else out.targets).append(item)
    return out


def choice_log_likelihood(rewards: Sequence[float], choice: Choice, reference_reward: float = 0.0) -> float:
    """log P(c | r, C) = beta*(r_c - margin) - logsumexp(beta*r over C, with r_c - margin for the chosen).

    ``rewards[i]`` is the reward of ``choice.options[i]``; with ``choice.reference`` the set also
    holds the reference point with reward ``reference_reward`` (chosen when ``choice.chosen`` is -1).
    A plain reference implementation for tests; trainers compute the same thing in batches.
    """
    if len(rewards) != len(choice.options):
        raise ValueError(f"{len(rewards)} rewards for {len(choice.options)} options; give one reward per option")
    values = [float(r) for r in rewards]
    if choice.reference:
        values.append(float(reference_reward))
    index = len(values) - 1 if choice.chosen == -1 else choice.chosen
    if choice.chosen == -1 and not choice.reference:
        raise ValueError("chosen is -1 (the reference point) but the choice has no reference point")
    values[index] -= choice.margin
    utilities = choice.beta * np.asarray(values, dtype=np.float64)
    top = utilities.max()
    return float(utilities[index] - (top + np.log(np.exp(utilities - top).sum())))
