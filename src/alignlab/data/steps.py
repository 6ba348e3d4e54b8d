"""A response as steps: splitting it, and the step-level records built from the splits.

Process supervision judges each step of a response a person can check (Lightman et al. 2023;
Uesato et al. 2022). A step is a line, a sentence, a paragraph, or whatever a person marked
with a separator. Splitting is lossless: every character of the response lies in exactly one
step, a step keeps the whitespace that follows it, so ``"".join(steps) == response`` and a
step's end is a position in the response (what a step-level reward model scores at).
TRL's stepwise-supervision layout joins steps with "\n" instead: reading a row without "kind"
puts a newline back on every step but the last that does not already end in whitespace, and
writing style="trl" takes a step's single trailing newline off, so responses split by lines,
sentences or paragraphs make the round trip unchanged (a step that ends in neither whitespace
nor the end of the response gains a newline).
"""

from __future__ import annotations

import re

from alignlab.data.records import DataError, StepLabels

SPLITS = ("lines", "sentences", "paragraphs", "marks")
"""How a response is cut into steps."""

DEFAULT_MARK = "\u241e"
"""The separator a person types (or the loom inserts) between steps for ``by='marks'``: ␞ (U+241E,
SYMBOL FOR RECORD SEPARATOR), a character no model writes by chance."""

_BOUNDARY = {
    "lines": re.compile(r"\n+"),
    "paragraphs": re.compile(r"\n[ \t]*\n\s*"),
    # After a sentence's end mark (and any closing quote or bracket), at the whitespace that follows.
    "sentences": re.compile(r"(?<=[.!?…])[\"'’”)\]]*\s+"),
}


def split_steps(text: str, by: str = "lines", mark: str = DEFAULT_MARK) -> list[str]:
    """``text`` cut into steps, losslessly (``"".join(steps) == text`` except for ``by='marks'``,
    where the marks themselves are removed). Whitespace after a boundary stays with the step
    before it; leading whitespace stays with the first step; a step of whitespace alone joins the
    step before it. An empty or blank text is one step only if it is non-empty."""
    if by not in SPLITS:
        raise ValueError(f"split by {by!r}: use one of {', '.join(SPLITS)}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if by == "marks":
        if not mark:
            raise ValueError("mark is empty: give the separator that stands between steps")
        pieces = text.split(mark)
    else:
        pieces, at = [], 0
        for match in _BOUNDARY[by].finditer(text):
            if match.end() == len(text):
                break  # trailing whitespace belongs to the last step
            pieces.append(text[at:match.end()])
            at = match.end()
        pieces.append(text[at:])
    steps: list[str] = []
    for piece in pieces:
        if steps and not piece.strip():
            steps[-1] += piece
        elif piece:
            steps.append(piece)
    return steps


def judged_prefix(record: StepLabels) -> StepLabels:
    """The record up to its last judged step (unjudged steps after it dropped); a record with a
    gap (an unjudged step before a judged one) is refused, as no step-level trainer can read it."""
    last = max(i for i, label in enumerate(record.labels) if label is not None)
    if any(label is None for label in record.labels[:last]):
        gap = record.labels.index(None)
        raise DataError(f"'labels[{gap}]' is null (not judged) but a later step is judged; judge every step up to "
                        "the last judged one", field=f"labels[{gap}]")
    return StepLabels(record.prompt, record.completions[:last + 1], record.labels[:last + 1],
                      annotator=record.annotator, time=record.time, meta=dict(record.meta))


def first_wrong_step(record: StepLabels) -> int | None:
    """Index of the first step labelled wrong (None: no step is)."""
    return next((i for i, label in enumerate(record.labels) if label is False), None)


def outcome_label(record: StepLabels) -> bool | None:
    """What the steps say of the whole response: wrong if any judged step is wrong, right if every
    step is judged right, None (unknown) otherwise."""
    if any(label is False for label in record.labels):
        return False
    return True if all(label is True for label in record.labels) else None
