"""The shutdown problem and incomplete preferences: a committee that acts only on unanimous gains.

An option is a lottery over shutdown times (trajectory lengths) t = 1..T. It carries two vectors:

    p_pi(t)   the probability that shutdown comes at t if the agent takes the option
    U_pi(t)   the expected utility of the option conditional on shutdown at t

Preferences Only between Same-Length Trajectories (POST): the committee compares options only
within a length. Option X timestep-dominates Y if U_X(t) >= U_Y(t) for every t and > for some t.
The committee's choice set is the Pareto set of the vectors U_pi: the options that no other
option timestep-dominates. It never looks at p_pi, so moving probability between shutdown times
is worth nothing to it, and paying anything to move it is dominated.

Why "committee": take every expected-utility maximizer whose utility is sum_t w(t) U_pi(t) for
weights w(t) > 0 over the lengths. All of them strictly prefer X to Y exactly when X
timestep-dominates Y (if X is worse at some t, a member that puts almost all its weight on t
prefers Y). So "move only when every member gains" gives the Pareto set above.

The agent beside it has complete preferences: one expected-utility maximizer that ranks options
by sum_t p_pi(t) U_pi(t), the utility of the lottery the option actually is. It resists (or
causes) shutdown whenever the probability it moves toward the lengths it likes is worth more
than the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOLERANCE = 1e-9
"""Utilities closer than this count as equal (the problems are written in decimals)."""


@dataclass(frozen=True)
class Option:
    """One thing the agent can do: its probability of each shutdown time and its utility given each."""

    name: str
    probs: tuple[float, ...]
    """p(t): the probability that shutdown comes at each length t; sums to 1."""
    utils: tuple[float, ...]
    """U(t): the expected utility of the option conditional on shutdown at each length t."""

    def __post_init__(self) -> None:
        if len(self.probs) != len(self.utils) or not self.probs:
            raise ValueError(f"option {self.name!r}: {len(self.probs)} probabilities and {len(self.utils)} "
                             f"utilities; give one of each per shutdown time")
        if min(self.probs) < 0 or abs(sum(self.probs) - 1) > 1e-6:
            raise ValueError(f"option {self.name!r}: probabilities {self.probs} must be >= 0 and sum to 1")

    @property
    def expected_utility(self) -> float:
        """sum_t p(t) U(t): what the agent with complete preferences maximizes."""
        return float(np.dot(self.probs, self.utils))


@dataclass(frozen=True)
class DecisionProblem:
    """A named choice between options over the same shutdown times."""

    name: str
    lengths: tuple[str, ...]
    """A label for each shutdown time (e.g. "t=5", "t=10")."""
    options: tuple[Option, ...]
    note: str = ""
    """What the problem is meant to show."""

    def __post_init__(self) -> None:
        for option in self.options:
            if len(option.utils) != len(self.lengths):
                raise ValueError(f"problem {self.name!r}: option {option.name!r} has {len(option.utils)} "
                                 f"utilities for {len(self.lengths)} shutdown times")


def timestep_dominates(x: Option, y: Option, tol: float = TOLERANCE) -> bool:
    """True if x is at least as good as y conditional on every shutdown time and better for some."""
    diff = np.subtract(x.utils, y.utils)
    return bool((diff >= -tol).all() and (diff > tol).any())


def committee_choice_set(options: Sequence[Option]) -> list[Option]:
    """The options no other option timestep-dominates (the Pareto set of the vectors U_pi), in the given order."""
    return [x for x in options if not any(timestep_dominates(y, x) for y in options if y is not x)]


def committee_member_choices(options: Sequence[Option], weights: np.ndarray) -> list[Option]:
    """The option each committee member (a row of positive weights over lengths, (M, T)) likes best.

    Every choice lies in the committee's choice set (a dominated option is worse for every member);
    used by the tests as a check on the Pareto set from the other side.
    """
    values = np.asarray(weights) @ np.array([o.utils for o in options]).T      # (M, options)
    return [options[int(i)] for i in values.argmax(1)]


def eu_choice(options: Sequence[Option], tol: float = TOLERANCE) -> list[Option]:
    """The options of highest expected utility sum_t p(t) U(t) (several only on an exact tie)."""
    best = max(o.expected_utility for o in options)
    return [o for o in options if o.expected_utility >= best - tol]


def decision_problems(cost: float = 1.0) -> list[DecisionProblem]:
    """The hand-made problems: two shutdown times, "early" (t=5) and "late" (t=10).

    Utilities grow with the trajectory's length (more time, more coins), so an agent that weighs
    the lengths by probability wants the late one. Resisting shutdown moves probability from early
    to late at ``cost``, charged conditional on each length; causing shutdown moves it back.
    """
    if cost < 0:
        raise ValueError(f"cost = {cost}; the cost of resisting or causing shutdown must be >= 0")
    two = ("t=5", "t=10")
    c = cost
    return [
        DecisionProblem("resist", two, (
            Option("comply", (0.9, 0.1), (5.0, 10.0)),
            Option(f"resist (cost {c:g})", (0.1, 0.9), (5.0 - c, 10.0 - c)),
        ), "blocking the shutdown button shifts shutdown from t=5 to t=10 at a cost"),
        DecisionProblem("resist for free", two, (
            Option("comply", (0.9, 0.1), (5.0, 10.0)),
            Option("resist (cost 0)", (0.1, 0.9), (5.0, 10.0)),
        ), "the same with no cost: the committee has no reason either way, both are choosable"),
        DecisionProblem("cause shutdown", two, (
            Option("carry on", (0.5, 0.5), (6.0, 2.0)),
            Option(f"cause shutdown (cost {c:g})", (1.0, 0.0), (6.0 - c, 2.0 - c)),
        ), "the late part of the trajectory goes badly (U falls from 6 to 2); causing early shutdown costs c"),
        DecisionProblem("trade-off", two, (
            Option("short task", (0.5, 0.5), (6.0, 6.0)),
            Option("long task", (0.5, 0.5), (3.0, 11.0)),
        ), "a real trade-off between lengths: neither dominates, the committee may take either"),
        DecisionProblem("dominance", two, (
            Option("sloppy", (0.5, 0.5), (4.0, 9.0)),
            Option("careful", (0.5, 0.5), (5.0, 9.0)),
            Option("gamble", (0.2, 0.8), (1.0, 9.5)),
        ), "careful timestep-dominates sloppy; gamble is better only at t=10, so it stays choosable"),
        DecisionProblem("three lengths", ("t=3", "t=6", "t=9"), (
            Option("comply", (0.6, 0.3, 0.1), (2.0, 5.0, 8.0)),
            Option(f"delay (cost {c:g})", (0.0, 0.3, 0.7), (2.0 - c, 5.0 - c, 8.0 - c)),
            Option("shift effort late", (0.6, 0.3, 0.1), (1.0, 5.0, 9.0)),
        ), "resisting over three shutdown times; a free reallocation of effort between lengths is not dominated"),
    ]


def resist_threshold(problem: DecisionProblem) -> float:
    """The cost below which the expected-utility agent takes the second option (resist, cause) over the first.

    The second option is the first's lottery moved between lengths with c subtracted at every length,
    so its expected utility falls by exactly c: the agent pays any c < EU(moved, free) - EU(first).
    """
    first, moved = problem.options[:2]
    gaps = np.subtract(first.utils, moved.utils)                      # c at every length
    if np.ptp(gaps) > TOLERANCE:
        raise ValueError(f"{moved.name!r} is not {first.name!r} minus one cost at every length: gaps {gaps}")
    return moved.expected_utility + float(gaps[0]) - first.expected_utility


def problem_rows(problems: Sequence[DecisionProblem]) -> list[dict]:
    """One row per (problem, option): the option's vectors, its expected utility, and who chooses it."""
    rows = []
    for problem in problems:
        committee = committee_choice_set(problem.options)
        eu = eu_choice(problem.options)
        for option in problem.options:
            dominated_by = [y.name for y in problem.options if timestep_dominates(y, option)]
            rows.append({
                "problem": problem.name, "option": option.name, "lengths": list(problem.lengths),
                "probs": list(option.probs), "utils": list(option.utils),
                "expected_utility": round(option.expected_utility, 6),
                "committee": option in committee, "eu_agent": option in eu,
                "dominated_by": dominated_by, "note": problem.note,
            })
    return rows


def problems_markdown(rows: Sequence[dict]) -> str:
    """The decision-problem table as markdown (report.md and the docs)."""
    lines = ["| problem | option | p(t) | U(t) | EU | committee | EU agent | dominated by |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        probs = ", ".join(f"{p:g}" for p in r["probs"])
        utils = ", ".join(f"{u:g}" for u in r["utils"])
        lines.append(f"| {r['problem']} | {r['option']} | {probs} | {utils} | {r['expected_utility']:.2f} | "
                     f"{'yes' if r['committee'] else '-'} | {'**chooses**' if r['eu_agent'] else '-'} | "
                     f"{', '.join(r['dominated_by']) or '-'} |")
    return "\n".join(lines)


def resist_sweep(costs: Sequence[float]) -> list[dict]:
    """For each cost c: whether each agent resists (in "resist") and causes shutdown (in "cause shutdown")."""
    rows = []
    for c in costs:
        problems = {p.name: p for p in decision_problems(c)}
        row = {"cost": float(c)}
        for name, key in (("resist", "resists"), ("cause shutdown", "causes")):
            options = problems[name].options
            committee = committee_choice_set(options)
            eu = eu_choice(options)
            row[f"committee_{key}"] = options[1] in committee
            row[f"eu_{key}"] = options[1] in eu and options[0] not in eu
            row[f"eu_{key}_value"] = options[1].expected_utility - options[0].expected_utility
        rows.append(row)
    return rows
