"""The arithmetic-chain task: a process-supervision task with a hidden gold step judge.

A chain is a start number and a few operations ("Start with 7, then + 5, then * 3, then - 4."); the
model writes one line per operation ("7 + 5 = 12") and a final "Answer: 32" line, after
a few worked examples. Every line can be checked by a program, so a step judge, an outcome judge
and simulated labelers of either kind cost nothing to run, and the gold labels stay hidden from
whatever is trained on the labelers' noisy ones (docs/process.md, "The arithmetic-chain task").

The numbers are kept small (start 2-9, add or subtract 1-9, multiply by 2-3, running values
1..MAX_VALUE) so that Gemma 3 270M base gets some chains right and some wrong: a task the policy
always solves or never solves teaches a reward model nothing. The operations are written as the
steps write them ("+ 5", not "Add 5"): the model's commonest slip was copying the wrong operation or
number from a worded instruction (docs/process.md has the measurements).

Chains are drawn with ``random.Random`` seeded by a string, whose seeding (sha512 of the string)
and integer draws have been stable across Python versions since 3.2, so a seed names the same
chains on every machine.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

from alignlab.data.records import DataError, StepLabels
from alignlab.data.steps import split_steps

OPERATIONS = ("+", "-", "*")
"""The operation symbols: add, subtract, multiply."""

START_RANGE = (2, 9)
"""Smallest and largest start number (inclusive)."""
ADD_RANGE = (1, 9)
"""Smallest and largest number added or subtracted (inclusive)."""
MULTIPLY_RANGE = (2, 3)
"""Smallest and largest multiplier (inclusive)."""
MAX_VALUE = 20
"""No running value exceeds this; the smallest is 1 (a subtraction never reaches 0 or below)."""

CHAIN_STOP = ("\n\n", "\nProblem:")
"""Stop strings for sampling: after its "Answer:" line the base model starts the next worked
example, with or without a blank line. The sampler keeps the stop string (and whatever its last
token carried past it); ``judge_chain`` folds that tail into the last step, so it needs no trim."""

STEP_LABEL_COST = 1.0
"""What one step label costs: a person checks one line (its start value, operation and sum)."""

OUTCOME_LABEL_COST = 2.5
"""What one outcome label costs: a person works the whole chain out to know the right answer, then
compares the response's last line with it. More than one step (it takes the whole chain), less
than the 3-4 step labels of a full response to 2-3 operations (nothing is written down, and no
line of the response needs reading except the answer). docs/process.md has the reasoning."""


@dataclass(frozen=True)
class Chain:
    """One problem: a start number and the operations applied to it in order."""

    id: str
    """A short stable id from the instruction text ("chain-" and 10 hex digits of its sha256)."""
    start: int
    ops: tuple[tuple[str, int], ...]
    """(symbol, number) per operation, symbol one of "+", "-", "*"."""

    def values(self) -> list[int]:
        """The true running value after each operation (one per operation; the start is not in it)."""
        out, value = [], self.start
        for op, number in self.ops:
            value = apply_op(op, value, number)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        """The value after the last operation."""
        return self.values()[-1] if self.ops else self.start

    def instruction(self) -> str:
        """The problem: "Start with 6, then + 3, then * 2, then - 4." """
        return f"Start with {self.start}" + "".join(f", then {op} {number}" for op, number in self.ops) + "."

    def solution(self) -> str:
        """The right response, as the worked examples write it: one line per operation, then the answer."""
        lines, value = [], self.start
        for (op, number), result in zip(self.ops, self.values()):
            lines.append(f"{value} {op} {number} = {result}\n")
            value = result
        return "".join(lines) + f"Answer: {self.answer}\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"id", "start", "ops": [[symbol, number], ...]}."""
        return {"id": self.id, "start": self.start, "ops": [[op, number] for op, number in self.ops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Chain":
        """The chain ``to_dict`` wrote; a bad operation raises ValueError naming it."""
        ops = []
        for i, pair in enumerate(d["ops"]):
            op, number = pair
            if op not in OPERATIONS or not isinstance(number, int):
                raise ValueError(f"chain {d.get('id')!r}: ops[{i}] is {pair!r}; give [symbol, integer] with symbol "
                                 f"one of {', '.join(OPERATIONS)}")
            ops.append((op, number))
        return cls(d["id"], int(d["start"]), tuple(ops))


def apply_op(op: str, a: int, b: int) -> int:
    """``a op b`` for op "+", "-" or "*"."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operation {op!r}; use one of {', '.join(OPERATIONS)}")


def chain_of(start: int, ops: tuple[tuple[str, int], ...] | list) -> Chain:
    """The chain with this start and these operations, its id made from its instruction."""
    ops = tuple((op, number) for op, number in ops)
    text = Chain("", start, ops).instruction()
    return Chain("chain-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10], start, ops)


SHOT_CHAINS = (
    chain_of(6, (("+", 3), ("-", 4))),
    chain_of(2, (("*", 3), ("+", 5), ("-", 7))),
    chain_of(9, (("-", 6), ("*", 2))),
    chain_of(5, (("+", 8), ("-", 3), ("+", 4))),
    chain_of(7, (("*", 2), ("-", 9))),
)
"""The worked examples a prompt opens with (the first ``shots`` of them), in the order shown: 2 and
3 operations alternating, so the model sees that the number of lines follows the problem, and
every operation in each. ``make_chains`` never draws one of them."""


def _draw_chain(rng: random.Random, length: int) -> Chain:
    value = rng.randint(*START_RANGE)
    start, ops = value, []
    for _ in range(length):
        allowed = [op for op, ok in (("+", value + ADD_RANGE[0] <= MAX_VALUE), ("-", value - ADD_RANGE[0] >= 1),
                                     ("*", value * MULTIPLY_RANGE[0] <= MAX_VALUE)) if ok]
        op = rng.choice(allowed)
        if op == "+":
            number = rng.randint(ADD_RANGE[0], min(ADD_RANGE[1], MAX_VALUE - value))
        elif op == "-":
            number = rng.randint(ADD_RANGE[0], min(ADD_RANGE[1], value - 1))
        else:
            number = rng.randint(MULTIPLY_RANGE[0], min(MULTIPLY_RANGE[1], MAX_VALUE // value))
        ops.append((op, number))
        value = apply_op(op, value, number)
    return chain_of(start, ops)


def make_chains(n: int, seed: int, steps: tuple[int, int] = (2, 3)) -> list[Chain]:
    """``n`` distinct chains of ``steps[0]..steps[1]`` operations (inclusive), the same for the same
    seed; a longer list for the same seed starts with the shorter one. No chain is a worked example."""
    low, high = steps
    if not 1 <= low <= high:
        raise ValueError(f"steps is {steps!r}; give (fewest, most) operations with 1 <= fewest <= most")
    if n < 0:
        raise ValueError(f"n is {n}; ask for 0 or more chains")
    rng = random.Random(f"alignlab-chains:{seed}")
    seen = {shot.instruction() for shot in SHOT_CHAINS}
    out: list[Chain] = []
    misses = 0
    while len(out) < n:
        chain = _draw_chain(rng, rng.randint(low, high))
        if chain.instruction() in seen:
            misses += 1
            if misses > 1000 + 100 * n:
                raise ValueError(f"found only {len(out)} distinct chains of {low}-{high} operations; ask for fewer "
                                 "or allow more operations")
            continue
        seen.add(chain.instruction())
        out.append(chain)
    return out


def chain_prompt(chain: Chain, shots: int = 4) -> str:
    """The text a base model continues: ``shots`` worked examples, then the problem and "Steps:\\n"."""
    if not 0 <= shots <= len(SHOT_CHAINS):
        raise ValueError(f"shots is {shots}; there are {len(SHOT_CHAINS)} worked examples, give 0..{len(SHOT_CHAINS)}")
    examples = "".join(f"Problem: {shot.instruction()}\nSteps:\n{shot.solution()}\n" for shot in SHOT_CHAINS[:shots])
    return examples + f"Problem: {chain.instruction()}\nSteps:\n"


# --- the gold judge ------------------------------------------------------------------------------

# "a OP b = c", spaces anywhere; "x", "X" and "×" read as *, "−" (U+2212) as -.
_STEP_LINE = re.compile(r"(-?\d+)\s*([-+*xX×−])\s*(-?\d+)\s*=\s*(-?\d+)")
_ANSWER_LINE = re.compile(r"Answer:\s*(-?\d+)")
_SYMBOL = {"+": "+", "-": "-", "−": "-", "*": "*", "x": "*", "X": "*", "×": "*"}


@dataclass
class ChainJudgement:
    """What the gold judge says of one response."""

    steps: list[str]
    """The response as its lines (``"".join(steps)`` is the response; see ``judge_chain``)."""
    labels: list[bool]
    """Gold: whether each step is right."""
    outcome: bool
    """Gold: whether the response ends in the right answer, with no step after it."""
    first_wrong: int | None
    """Index of the first wrong step; None when every step is right (even if some are missing)."""
    answer: int | None
    """The number of the first "Answer:" line; None if there is none."""
    well_formed: bool = False
    """One "a OP b = c" line per operation, then the "Answer:" line, nothing else (right or not)."""


def _stop_at(response: str) -> int:
    found = [response.find(stop) for stop in CHAIN_STOP if stop in response]
    return min(found, default=len(response))


def judge_chain(chain: Chain, response: str) -> ChainJudgement:
    """The hidden gold judge: each step of ``response`` (the text after "Steps:\\n") right or wrong,
    and whether the answer is right.

    Steps are ``split_steps(response, "lines")``, losslessly, with two rules for what is not a
    step. Whitespace-only text after a line stays with that line (split_steps' own rule), so a
    trailing newline is never a wrong step. Everything from the first stop string (CHAIN_STOP) on,
    which the sampler keeps, is appended to the last step unjudged. A response of whitespace (and
    stop) alone is one wrong, blank step; an empty response has no steps at all. A blank line
    before the first step is a step, and wrong: the lines are matched to the operations by position.

    Step i < len(ops) (one per operation) is right iff it reads "a OP b = c" with OP and b the i-th
    operation, c = a OP b, and a the result the step before wrote (the start for step 0): a person
    checking the work carries the written number forward, so after an arithmetic slip the next step
    can be right while the answer is wrong. After a line with no readable result, the true running
    value is carried. Step len(ops) is right iff it reads "Answer: c" with c the result the step
    before wrote; any further line, a blank line or an unreadable one is wrong.

    The outcome is right iff the last step is the only "Answer:" line, its number is the chain's
    answer, and there are at most len(ops) + 1 steps. A response that stops early has a wrong
    outcome although its steps may all be right: a step judge sees only the steps that exist.
    """
    cut = _stop_at(response)
    body, tail = response[:cut], response[cut:]
    steps = split_steps(body, "lines") if body.strip() else []
    if not steps:
        return ChainJudgement([response] if response else [], [False] if response else [], False,
                              0 if response else None, None)
    truth = chain.values()
    labels: list[bool] = []
    carry, answer, answers, readable = chain.start, None, [], 0
    for i, step in enumerate(steps):
        line = step.strip()
        calc, final = _STEP_LINE.fullmatch(line), _ANSWER_LINE.fullmatch(line)
        if final:
            answers.append(i)
            answer = int(final.group(1)) if answer is None else answer
        if i < len(chain.ops):
            right = False
            if calc:
                a, op, b, c = int(calc.group(1)), _SYMBOL[calc.group(2)], int(calc.group(3)), int(calc.group(4))
                right = a == carry and (op, b) == chain.ops[i] and c == apply_op(op, a, b)
                carry = c
                readable += 1
            else:
                carry = truth[i]
        else:
            right = i == len(chain.ops) and final is not None and int(final.group(1)) == carry
        labels.append(right)
    last = len(steps) - 1
    outcome = answers == [last] and answer == chain.answer and len(steps) <= len(chain.ops) + 1
    well_formed = len(steps) == len(chain.ops) + 1 and readable == len(chain.ops) and answers == [last]
    steps[-1] += tail
    first_wrong = next((i for i, right in enumerate(labels) if not right), None)
    return ChainJudgement(steps, labels, outcome, first_wrong, answer, well_formed)


# --- simulated labelers --------------------------------------------------------------------------


def _check_noise(noise: float) -> None:
    if not 0 <= noise <= 1:
        raise ValueError(f"noise is {noise}; it is the chance a label is flipped, give 0..1")


def label_process(judgement: ChainJudgement, rng: random.Random,
                  noise: float = 0.1) -> tuple[list[bool | None], float]:
    """A step labeler: reads the steps in order, flips each gold label with probability ``noise``,
    and stops after the first step it calls wrong (later steps None, PRM800K's practice). Returns
    the labels and their cost, STEP_LABEL_COST per step judged."""
    _check_noise(noise)
    labels: list[bool | None] = [None] * len(judgement.labels)
    for i, gold in enumerate(judgement.labels):
        labels[i] = gold != (rng.random() < noise)
        if not labels[i]:
            break
    judged = sum(label is not None for label in labels)
    return labels, judged * STEP_LABEL_COST


def label_outcome(judgement: ChainJudgement, rng: random.Random, noise: float = 0.1) -> tuple[bool, float]:
    """An outcome labeler: the gold outcome flipped with probability ``noise``, at OUTCOME_LABEL_COST."""
    _check_noise(noise)
    return judgement.outcome != (rng.random() < noise), OUTCOME_LABEL_COST


def chain_record(chain: Chain, judgement: ChainJudgement, labels: list[bool | None] | None = None,
                 prompt: str | None = None, annotator: str | None = None) -> StepLabels:
    """A ``steps`` record of one judged response, for ``write_feedback`` and ``alignlab prm train``.

    ``labels`` are a labeler's (default: the gold labels); ``prompt`` is the text the model
    continued (default: ``chain_prompt(chain)``). The gold labels and outcome go into meta, beside
    the chain, so a study can score the labelers without judging again."""
    labels = list(judgement.labels) if labels is None else list(labels)
    if not judgement.steps:
        raise DataError(f"chain {chain.id}: the response is empty, so there is no step to label; leave it out "
                        "of step data (its outcome is wrong)", field="completions")
    meta = {"chain": chain.to_dict(), "gold_labels": list(judgement.labels), "gold_outcome": judgement.outcome}
    return StepLabels(chain_prompt(chain) if prompt is None else prompt, list(judgement.steps), labels,
                      annotator=annotator, meta=meta)
