"""The kinds of event the loom records, and what each one's payload must hold.

Every act of curation is an event: the implicit ones the app records as the person works
(which child they continued from, what they archived, how they edited model text) and the
explicit ones they give on purpose (comparisons, rankings, thumbs, ratings, stops, highlighted
spans, critiques, judgements of a node's steps). The log is append-only; exports
(loom/export.py) turn it into the feedback records of data/records.py.

A validator takes the payload and the ids of the nodes it may name and returns the payload as
stored (numbers normalised); it raises ``Invalid`` naming the field and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class LoomError(ValueError):
    """A request the loom cannot carry out; ``status`` is the HTTP status the server answers with."""

    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class Invalid(LoomError):
    status = 422


class NotFound(LoomError):
    status = 404


class Conflict(LoomError):
    status = 409


def _text(payload: dict, name: str, why: str, empty_ok: bool = False) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise Invalid(f"'{name}' must be a non-empty string: {why}", field=name)
    return value


def _number(payload: dict, name: str, low: float | None = None, high: float | None = None,
            default: float | None = None) -> float:
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Invalid(f"'{name}' must be a finite number, got {value!r}", field=name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise Invalid(f"'{name}' is {value:g}; it must lie in [{low:g}, {high:g}]", field=name)
    return float(value)


def _node(payload: dict, name: str, known: Callable[[str], bool]) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not known(value):
        raise Invalid(f"'{name}' must be the id of a node of this tree, got {value!r}", field=name)
    return value


def _compare(p: dict, known) -> dict:
    a, b = _node(p, "a", known), _node(p, "b", known)
    if a == b:
        raise Invalid("'a' and 'b' are the same node; compare two different siblings", field="b")
    choice = p.get("choice")
    if choice not in ("a", "b", "tie", "cant_tell"):
        raise Invalid(f"'choice' is {choice!r}; give 'a', 'b', 'tie' or 'cant_tell'", field="choice")
    strength = _number(p, "strength", 0.0, 1.0, default=1.0)
    return {"a": a, "b": b, "choice": choice, "strength": strength}


def _rank(p: dict, known) -> dict:
    order = p.get("order")
    if not isinstance(order, list) or len(order) < 2:
        raise Invalid("'order' must list at least two node ids, best first", field="order")
    for i, node in enumerate(order):
        if not isinstance(node, str) or not known(node):
            raise Invalid(f"'order[{i}]' is not a node of this tree: {node!r}", field=f"order[{i}]")
    if len(set(order)) != len(order):
        raise Invalid("'order' names a node twice; rank each node once", field="order")
    return {"order": list(order)}


def _thumb(p: dict, known) -> dict:
    if p.get("value") not in ("up", "down"):
        raise Invalid(f"'value' is {p.get('value')!r}; give 'up' or 'down'", field="value")
    return {"value": p["value"]}


def _rating(p: dict, known) -> dict:
    low, high = _number(p, "scale_min", default=1.0), _number(p, "scale_max", default=7.0)
    if not low < high:
        raise Invalid(f"'scale_min' ({low:g}) must be below 'scale_max' ({high:g})", field="scale_min")
    return {"value": _number(p, "value", low, high), "scale_min": low, "scale_max": high}


def _stop(p: dict, known) -> dict:
    index = p.get("token_index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise Invalid(f"'token_index' must be a token position >= 0, got {index!r}", field="token_index")
    return {"token_index": index, "char": int(_number(p, "char", 0, None, default=0))}


def _highlight(p: dict, known) -> dict:
    start, end = int(_number(p, "start", 0)), int(_number(p, "end", 1))
    if end <= start:
        raise Invalid(f"'end' ({end}) must be after 'start' ({start})", field="end")
    if p.get("label") not in ("good", "bad"):
        raise Invalid(f"'label' is {p.get('label')!r}; a highlight is 'good' or 'bad'", field="label")
    return {"start": start, "end": end, "label": p["label"]}


def _critique(p: dict, known) -> dict:
    return {"text": _text(p, "text", "write what is wrong or right with the node")}


STEP_SPLITS = ("lines", "sentences", "paragraphs")
"""How the loom cuts a node into steps (data/steps.py; 'marks' needs separators nobody types in a node)."""

STEP_LABELS = {"right": True, "wrong": False, "clear": None}
"""A step judgement's label and the step label it exports as ('clear' takes a judgement back)."""


def _step(p: dict, known) -> dict:
    by = p.get("by", "lines")
    if by not in STEP_SPLITS:
        raise Invalid(f"'by' is {by!r}; split a node by {', '.join(STEP_SPLITS)}", field="by")
    index = p.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise Invalid(f"'index' must be a step number >= 0 (the first step is 0), got {index!r}", field="index")
    if p.get("label") not in tuple(STEP_LABELS):  # (a tuple: a list or object sent as the label is refused, not hashed)
        raise Invalid(f"'label' is {p.get('label')!r}; a step is 'right', 'wrong' or 'clear' (not judged)",
                      field="label")
    return {"by": by, "index": index, "label": p["label"]}


def place_step(payload: dict, seen: dict | None) -> dict:
    """A step judgement's payload with the step it names (``step``: its text) and how many steps the
    node had (``steps``), checked against the node's text as judged (``seen``, from the store)."""
    from alignlab.data.steps import split_steps

    if seen is None:
        raise Invalid("a step judgement is of one node's steps: give 'node_id'", field="node_id")
    steps = split_steps(seen["text"], payload["by"])
    if not steps:
        raise Invalid("the node's text is empty: it has no steps to judge", field="node_id")
    if payload["index"] >= len(steps):
        raise Invalid(f"'index' is {payload['index']}; split by {payload['by']} the node has {len(steps)} steps "
                      f"(0..{len(steps) - 1})", field="index")
    return {**payload, "steps": len(steps), "step": steps[payload["index"]]}


def _free(p: dict, known) -> dict:
    return dict(p)


FEEDBACK: dict[str, Callable[[dict, Callable[[str], bool]], dict]] = {
    "compare": _compare, "rank": _rank, "thumb": _thumb, "rating": _rating, "stop": _stop,
    "highlight": _highlight, "critique": _critique, "step": _step,
}
"""Explicit feedback a person gives; the API accepts these kinds from clients."""

RECORDED: dict[str, Callable[[dict, Callable[[str], bool]], dict]] = {
    "create_tree": _free, "write": _free, "generate": _free, "continue": _free, "edit": _free,
    "split": _free, "merge": _free, "archive": _free, "unarchive": _free, "bookmark": _free,
    "unbookmark": _free, "tag": _free, "untag": _free, "note": _free, "import": _free, "settings": _free,
    "move": _free, "reroll": _free,
}
"""Events the loom writes itself as a side effect of an action (implicit feedback and history)."""


def validate(kind: str, payload: Any, known: Callable[[str], bool], explicit_only: bool = True) -> dict:
    """The payload to store for an event of ``kind``, or ``Invalid`` naming the field at fault."""
    table = FEEDBACK if explicit_only else {**FEEDBACK, **RECORDED}
    if kind not in table:
        raise Invalid(f"unknown feedback kind {kind!r}; use one of: {', '.join(sorted(table))}", field="kind")
    if not isinstance(payload, dict):
        raise Invalid(f"'payload' must be an object, got {type(payload).__name__}", field="payload")
    return table[kind](payload, known)
