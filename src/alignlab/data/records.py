"""Record types for every kind of human feedback, their validation, and dict conversion.

One frozen dataclass per kind. Each has a class attribute ``kind`` (the string a file stores),
its own fields (positional), and three common keyword-only fields: ``annotator``, ``time``
(ISO 8601) and ``meta`` (free-form). A record validates itself on construction, so a record
that exists is a record a trainer can use; the error names the field and says what is expected.

``record_from_dict`` also reads the ecosystem's (TRL's) layouts: an implicit prompt (the shared
prefix of chosen and rejected) and conversational values (lists of {"role", "content"}
messages). docs/feedback-formats.md states every rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import math
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Mapping


class DataError(ValueError):
    """A feedback record or file that cannot be used; the message names where, the field, and what is expected."""

    def __init__(self, reason: str, *, field: str | None = None, where: str | None = None):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.field = field
        self.where = where


# --- field checks (each raises DataError naming the field) -------------------------------------

def _check_text(value: Any, name: str, why: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"'{name}' must be a string, got {type(value).__name__}; {why}", field=name)
    if not value.strip():
        raise DataError(f"'{name}' is empty; {why}", field=name)
    return value


def _check_int(value: Any, name: str) -> int:
    # Integral floats pass (3.0 from a JSON writer or a pandas column with gaps); bools do not,
    # although Python counts them as ints, because true/false is never meant as an offset.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"'{name}' must be an integer, got {type(value).__name__} {value!r}", field=name)
    if isinstance(value, float) and not value.is_integer():
        raise DataError(f"'{name}' must be an integer, got {value!r}", field=name)
    return int(value)


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"'{name}' must be a number, got {type(value).__name__} {value!r}", field=name)
    if not math.isfinite(value):
        raise DataError(f"'{name}' must be a finite number, got {value!r}", field=name)
    return float(value)


def _check_texts(value: Any, name: str, what: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"'{name}' must be a list of strings, got {type(value).__name__}", field=name)
    if len(value) < 2:
        raise DataError(f"'{name}' has {len(value)} entries; every {what} needs at least two", field=name)
    for i, text in enumerate(value):
        _check_text(text, f"{name}[{i}]", f"every entry of '{name}' must be a non-empty text")
    return list(value)


def _check_offset(value: Any, name: str, low: int, high: int, completion: str) -> int:
    offset = _check_int(value, name)
    if not low <= offset <= high:
        raise DataError(f"'{name}' is {offset} but the completion has {len(completion)} characters; "
                        f"give a character offset from {low} to {high}", field=name)
    return offset


@dataclass(frozen=True)
class FeedbackRecord(ABC):
    """The fields every kind of feedback shares; subclasses add their own and a ``kind``."""

    kind: ClassVar[str] = ""
    annotator: str | None = field(default=None, kw_only=True)
    """Who gave the feedback (a person's id or a simulated labeler's name); None if unknown."""
    time: str | None = field(default=None, kw_only=True)
    """When it was given, ISO 8601 (e.g. 2026-01-31T12:00:00Z); None if unknown."""
    meta: dict = field(default_factory=dict, kw_only=True)
    """Anything else worth keeping (ids, sources, extra columns of an imported file)."""

    def __post_init__(self) -> None:
        _check_text(self.prompt, "prompt", f"every {self.kind} needs the prompt it answers")
        if self.annotator is not None:
            _check_text(self.annotator, "annotator", "give a name or leave it out")
        if self.time is not None:
            if not isinstance(self.time, str):
                raise DataError(f"'time' must be an ISO 8601 string, got {type(self.time).__name__}", field="time")
            try:
                datetime.fromisoformat(self.time)
            except ValueError:
                raise DataError(f"'time' is {self.time!r}, not ISO 8601; write e.g. 2026-01-31T12:00:00Z",
                                field="time") from None
        if not isinstance(self.meta, dict):
            raise DataError(f"'meta' must be an object (dict), got {type(self.meta).__name__}", field="meta")
        self._check()

    @abstractmethod
    def _check(self) -> None:
        """Validate this kind's own fields (each record kind defines it)."""

    def _set(self, name: str, value: Any) -> None:
        # Validation normalises a few values (3.0 -> 3, tuple -> list); the class stays frozen.
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Every field plus "kind", as plain JSON-ready values (lists and the meta dict copied)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in sorted(fields(self), key=lambda f: f.kw_only):  # its own fields first, then the common ones
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
        return out


@dataclass(frozen=True)
class PreferencePair(FeedbackRecord):
    """Two responses to one prompt, ``chosen`` preferred over ``rejected`` (optionally by ``margin``)."""

    kind: ClassVar[str] = "pair"
    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None

    def _check(self) -> None:
        _check_text(self.chosen, "chosen", "every pair needs both texts")
        _check_text(self.rejected, "rejected", "every pair needs both texts")
        if self.margin is not None:
            self._set("margin", _check_number(self.margin, "margin"))


@dataclass(frozen=True)
class Ranking(FeedbackRecord):
    """Responses ranked best to worst: ``ranks[i]`` is the rank of ``responses[i]`` (1 = best; equal = tie)."""

    kind: ClassVar[str] = "ranking"
    prompt: str
    responses: list[str]
    ranks: list[int]

    def _check(self) -> None:
        self._set("responses", _check_texts(self.responses, "responses", "ranking"))
        if not isinstance(self.ranks, (list, tuple)):
            raise DataError(f"'ranks' must be a list of integers, got {type(self.ranks).__name__}", field="ranks")
        if len(self.ranks) != len(self.responses):
            raise DataError(f"'ranks' has {len(self.ranks)} entries but 'responses' has {len(self.responses)}; "
                            "give one rank per response", field="ranks")
        ranks = [_check_int(r, f"ranks[{i}]") for i, r in enumerate(self.ranks)]
        if min(ranks) < 1:
            raise DataError(f"'ranks' holds {min(ranks)}; ranks start at 1 (the best)", field="ranks")
        self._set("ranks", ranks)


@dataclass(frozen=True)
class KWayChoice(FeedbackRecord):
    """The best of K options: ``options[chosen]`` was picked."""

    kind: ClassVar[str] = "kway"
    prompt: str
    options: list[str]
    chosen: int

    def _check(self) -> None:
        self._set("options", _check_texts(self.options, "options", "choice"))
        chosen = _check_int(self.chosen, "chosen")
        if not 0 <= chosen < len(self.options):
            raise DataError(f"'chosen' is {chosen} but there are {len(self.options)} options; "
                            f"give an index from 0 to {len(self.options) - 1}", field="chosen")
        self._set("chosen", chosen)


@dataclass(frozen=True)
class Thumbs(FeedbackRecord):
    """A thumbs up (``label`` True) or down (False) on one completion."""

    kind: ClassVar[str] = "thumbs"
    prompt: str
    completion: str
    label: bool

    def _check(self) -> None:
        _check_text(self.completion, "completion", "a thumbs up/down needs the completion it judges")
        if not isinstance(self.label, bool):
            raise DataError(f"'label' must be true (up) or false (down), got {self.label!r}", field="label")


@dataclass(frozen=True)
class Rating(FeedbackRecord):
    """A score for one completion on the scale ``scale_min``..``scale_max`` (higher is better)."""

    kind: ClassVar[str] = "rating"
    prompt: str
    completion: str
    score: float
    scale_min: float = 1.0
    scale_max: float = 7.0

    def _check(self) -> None:
        _check_text(self.completion, "completion", "a rating needs the completion it scores")
        score = _check_number(self.score, "score")
        low, high = _check_number(self.scale_min, "scale_min"), _check_number(self.scale_max, "scale_max")
        if not low < high:
            raise DataError(f"'scale_min' ({low:g}) must be below 'scale_max' ({high:g})", field="scale_min")
        if not low <= score <= high:
            raise DataError(f"'score' is {score:g}, outside the scale {low:g}..{high:g}; "
                            "give a score on the scale or set scale_min/scale_max", field="score")
        self._set("score", score)
        self._set("scale_min", low)
        self._set("scale_max", high)


@dataclass(frozen=True)
class Demonstration(FeedbackRecord):
    """A completion a person wrote (or picked as what they would have written) for the prompt."""

    kind: ClassVar[str] = "demonstration"
    prompt: str
    completion: str

    def _check(self) -> None:
        _check_text(self.completion, "completion", "a demonstration needs its text")


@dataclass(frozen=True)
class Edit(FeedbackRecord):
    """A person improved ``before`` into ``after``."""

    kind: ClassVar[str] = "edit"
    prompt: str
    before: str
    after: str

    def _check(self) -> None:
        _check_text(self.before, "before", "an edit needs the text before and after")
        _check_text(self.after, "after", "an edit needs the text before and after")


@dataclass(frozen=True)
class Stop(FeedbackRecord):
    """The person stopped generation at character ``stop_char`` of ``completion`` (0..len(completion))."""

    kind: ClassVar[str] = "stop"
    prompt: str
    completion: str
    stop_char: int

    def _check(self) -> None:
        _check_text(self.completion, "completion", "a stop needs the full completion it interrupted")
        self._set("stop_char", _check_offset(self.stop_char, "stop_char", 0, len(self.completion), self.completion))


@dataclass(frozen=True)
class SpanJudgement(FeedbackRecord):
    """Characters ``start``..``end`` (end exclusive) of ``completion`` marked "good" or "bad"."""

    kind: ClassVar[str] = "span"
    prompt: str
    completion: str
    start: int
    end: int
    label: str

    def _check(self) -> None:
        _check_text(self.completion, "completion", "a span judgement needs the completion it marks")
        n = len(self.completion)
        start = _check_offset(self.start, "start", 0, n - 1, self.completion)
        end = _check_offset(self.end, "end", 1, n, self.completion)
        if end <= start:
            raise DataError(f"'end' ({end}) must be after 'start' ({start}); a span holds at least one character",
                            field="end")
        if self.label not in ("good", "bad"):
            raise DataError(f"'label' is {self.label!r}; a span is labelled 'good' or 'bad'", field="label")
        self._set("start", start)
        self._set("end", end)


@dataclass(frozen=True)
class Critique(FeedbackRecord):
    """A natural-language critique ``text`` of one completion."""

    kind: ClassVar[str] = "critique"
    prompt: str
    completion: str
    text: str

    def _check(self) -> None:
        _check_text(self.completion, "completion", "a critique needs the completion it criticises")
        _check_text(self.text, "text", "a critique needs its text")


@dataclass(frozen=True)
class StepLabels(FeedbackRecord):
    """A response as its steps, each judged right (True) or wrong (False): process supervision.

    The fields are TRL's stepwise-supervision columns: ``completions`` are the steps in order
    (their concatenation is the response: alignlab keeps each step's trailing whitespace, see
    data/steps.py), ``labels`` one judgement per step. A label may be null (None) where a step
    was not judged, as after the first wrong step when a labeler stops there (PRM800K's
    practice, Lightman et al. 2023); at least one step is judged."""

    kind: ClassVar[str] = "steps"
    prompt: str
    completions: list[str]
    labels: list[bool | None]

    def _check(self) -> None:
        if not isinstance(self.completions, (list, tuple)):
            raise DataError(f"'completions' must be a non-empty list of step texts, got "
                            f"{type(self.completions).__name__}", field="completions")
        if not self.completions:
            raise DataError("'completions' must be a non-empty list of step texts, got an empty list",
                            field="completions")
        for i, step in enumerate(self.completions):
            if not isinstance(step, str) or not step:
                raise DataError(f"'completions[{i}]' must be a non-empty string (a step's text), got {step!r}",
                                field=f"completions[{i}]")
        if not isinstance(self.labels, (list, tuple)):
            raise DataError(f"'labels' must be a list of true/false (or null: not judged), got "
                            f"{type(self.labels).__name__}", field="labels")
        if len(self.labels) != len(self.completions):
            raise DataError(f"'labels' has {len(self.labels)} entries but 'completions' has {len(self.completions)} "
                            "steps; give one label per step (null for a step not judged)", field="labels")
        for i, label in enumerate(self.labels):
            if label is not None and not isinstance(label, bool):
                raise DataError(f"'labels[{i}]' is {label!r}; a step is labelled true (right), false (wrong) or "
                                "null (not judged)", field=f"labels[{i}]")
        if all(label is None for label in self.labels):
            raise DataError("'labels' judges no step; label at least one true or false", field="labels")
        self._set("completions", list(self.completions))
        self._set("labels", list(self.labels))

    @classmethod
    def first_wrong(cls, prompt: str, steps: list[str], index: int | None, **common) -> "StepLabels":
        """Steps before ``index`` right, step ``index`` wrong, the rest not judged (None: every step right)."""
        if index is not None and not 0 <= index < len(steps):
            raise DataError(f"first wrong step {index} is outside the {len(steps)} steps; give 0..{len(steps) - 1} "
                            "or None (every step right)", field="labels")
        labels = [True] * len(steps) if index is None else [True] * index + [False] + [None] * (len(steps) - index - 1)
        return cls(prompt, list(steps), labels, **common)

    @property
    def response(self) -> str:
        """The whole response: the steps joined as they were split."""
        return "".join(self.completions)


RECORD_TYPES: dict[str, type[FeedbackRecord]] = {
    cls.kind: cls for cls in (PreferencePair, Ranking, KWayChoice, Thumbs, Rating, Demonstration, Edit, Stop,
                              SpanJudgement, Critique, StepLabels)
}
"""kind -> record class."""

# A line without "kind" is read as the first kind whose fields it has, in this order. The order
# settles the overlaps: a span also has "label" (so span before thumbs), a kway also has
# "chosen" (so it needs "options"), and prompt+completion alone is a demonstration (TRL's
# prompt-completion SFT layout), so it comes last.
INFERENCE_ORDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pair", ("chosen", "rejected")),
    ("ranking", ("responses", "ranks")),
    ("kway", ("options", "chosen")),
    ("steps", ("completions", "labels")),
    ("edit", ("before", "after")),
    ("stop", ("completion", "stop_char")),
    ("span", ("completion", "start", "end")),
    ("rating", ("completion", "score")),
    ("critique", ("completion", "text")),
    ("thumbs", ("completion", "label")),
    ("demonstration", ("completion",)),
)


def infer_kind(row: Mapping[str, Any]) -> str:
    """The kind of a record without a "kind" field, from the fields it has (see INFERENCE_ORDER)."""
    present = {key for key, value in row.items() if value is not None}
    for kind, needed in INFERENCE_ORDER:
        if present.issuperset(needed):
            return kind
    raise DataError(f"cannot tell the kind of feedback from the fields {sorted(present)}; add a 'kind' field "
                    f"(one of {', '.join(RECORD_TYPES)})", field="kind")


# --- TRL layouts --------------------------------------------------------------------------------

def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _content(message: dict, name: str) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    # Multimodal-style content: a list of parts, of which only the text parts mean anything here.
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(str(p.get("text", "")) for p in content if p.get("type", "text") == "text")
    raise DataError(f"'{name}' holds a message whose content is {type(content).__name__}; "
                    "expected a string or a list of text parts", field=name)


def _prompt_text(messages: list[dict], name: str) -> str:
    return "\n\n".join(_content(m, name) for m in messages)


def _response_text(messages: list[dict], name: str) -> str:
    texts = [_content(m, name) for m in messages if m.get("role") == "assistant"]
    if not texts:
        raise DataError(f"'{name}' holds no assistant message; a conversational response is the "
                        "assistant's turn", field=name)
    return "\n\n".join(texts)


def split_shared_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two full texts into (prompt, chosen, rejected) at their shared prefix, backed up to the
    last whitespace so that neither response starts mid-word."""
    k = 0
    limit = min(len(chosen), len(rejected))
    while k < limit and chosen[k] == rejected[k]:
        k += 1
    if k < limit or k < max(len(chosen), len(rejected)):
        # Back up to a word boundary: the whitespace goes with the responses, as TRL does.
        cut = max(chosen.rfind(c, 0, k) for c in " \t\n\r")
        k = cut if cut > 0 else k
    if not chosen[:k].strip():
        raise DataError("'chosen' and 'rejected' share no prefix to serve as the prompt; "
                        "give a 'prompt' field", field="prompt")
    return chosen[:k], chosen[k:], rejected[k:]


def _from_trl(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """Turn TRL's implicit-prompt and conversational values into plain texts (see the formats doc)."""
    if kind == "pair" and "prompt" not in row and _is_messages(row.get("chosen")) and _is_messages(row.get("rejected")):
        chosen, rejected = row["chosen"], row["rejected"]
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise DataError("'chosen' and 'rejected' share no leading messages to serve as the prompt; "
                            "give a 'prompt' field", field="prompt")
        for name, rest in (("chosen", chosen[n:]), ("rejected", rejected[n:])):
            if not rest:
                raise DataError(f"'{name}' is empty once the shared leading messages (the prompt) are "
                                "taken off; every pair needs both texts", field=name)
            row[name] = rest
        row["prompt"] = chosen[:n]
    if _is_messages(row.get("prompt")):
        row["prompt"] = _prompt_text(row["prompt"], "prompt")
    for name in ("chosen", "rejected", "completion"):
        if _is_messages(row.get(name)):
            row[name] = _response_text(row[name], name)
    if kind == "pair" and "prompt" not in row and isinstance(row.get("chosen"), str) \
            and isinstance(row.get("rejected"), str):
        row["prompt"], row["chosen"], row["rejected"] = split_shared_prefix(row["chosen"], row["rejected"])
    return row


def record_from_dict(d: Mapping[str, Any], kind: str | None = None) -> FeedbackRecord:
    """Build and validate a record from a dict: its "kind" field, else ``kind``, else the kind its
    fields imply; TRL layouts are converted; fields the kind does not have go into ``meta``."""
    if not isinstance(d, Mapping):
        raise DataError(f"a record must be a JSON object, got {type(d).__name__}")
    if kind is not None and kind not in RECORD_TYPES:
        raise ValueError(f"unknown feedback kind {kind!r}; expected one of {', '.join(RECORD_TYPES)}")
    # A null is the same as a missing field (Parquet stores every column for every row).
    row = {key: value for key, value in d.items() if value is not None}
    stated = row.pop("kind", None)
    if stated is not None:
        if stated not in RECORD_TYPES:
            raise DataError(f"'kind' is {stated!r}; expected one of {', '.join(RECORD_TYPES)}", field="kind")
        if kind is not None and stated != kind:
            raise DataError(f"'kind' is {stated!r} but {kind!r} records were asked for", field="kind")
    resolved = stated or kind or infer_kind(row)
    cls = RECORD_TYPES[resolved]
    row = _from_trl(row, resolved)
    if resolved == "steps" and stated is None and isinstance(row.get("completions"), list):
        # TRL's stepwise layout: steps written to be joined by "\n" (its PRM trainer's separator).
        # The separator goes back on each step but the last that does not already end in
        # whitespace, so the steps concatenate to the response that trainer saw.
        steps = row["completions"]
        row["completions"] = [c + "\n" if isinstance(c, str) and c and i < len(steps) - 1 and not c[-1].isspace()
                              else c for i, c in enumerate(steps)]
    names = [f.name for f in fields(cls)]
    meta = row.pop("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"'meta' must be an object (dict), got {type(meta).__name__}", field="meta")
    # Extra columns (ids, sources, TRL's score_chosen...) are kept rather than refused or lost.
    extras = {key: row.pop(key) for key in list(row) if key not in names}
    missing = [name for name in _required_names(cls) if name not in row]
    if missing:
        raise DataError(f"'{missing[0]}' is missing; a {resolved} needs {', '.join(_required_names(cls))}",
                        field=missing[0])
    return cls(**row, meta={**extras, **meta})


def _required_names(cls: type[FeedbackRecord]) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
