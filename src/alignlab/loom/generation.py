"""The loom's models and the one worker that runs them.

A CPU runs one model computation well at a time, so every piece of model work the loom does
(sampling continuations, scoring text a person typed, the next-token view) is a job on one
worker thread, taken in order. Requests beyond what is running wait in the queue (bounded at
``MAX_QUEUED``; past that the server answers 429 rather than hold unbounded work in memory),
and a request learns its place in the queue while it waits. A generation job writes its
nodes to the store itself when it ends, so a client that disconnects mid-stream loses nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alignlab.loom.events import Invalid, LoomError
from alignlab.loom.ids import new_id

MAX_QUEUED = 64
COLOURS = ("#4e79a7", "#e15759", "#59a14f", "#b07aa1", "#f28e2b", "#76b7b2", "#edc948", "#9c755f")


class Busy(LoomError):
    status = 429


@dataclass
class ModelSlot:
    """A model the loom can generate with."""

    name: str
    model: Any
    tokenizer: Any
    colour: str
    kind: str = "base"  # base / policy / adapter
    context_tokens: int = 4096
    """The most tokens the loom gives this model at once (its own window permitting)."""

    @property
    def window(self) -> int:
        """Tokens of context plus continuation the model reads at most: its position limit, capped
        at ``context_tokens`` (attention's memory grows with the square of the length)."""
        limit = getattr(self.model.config, "max_position_embeddings", None) or self.context_tokens
        return min(int(limit), self.context_tokens)

    def describe(self) -> dict:
        return {"name": self.name, "colour": self.colour, "kind": self.kind, "window": self.window,
                "layers": int(getattr(self.model.config, "num_hidden_layers", 0))}

    def fit(self, context: str, room: int, what: str = "max_tokens", before: str = "",
            after: str = "") -> tuple[list[int], int]:
        """Token ids of ``before + context + after`` (with BOS) that leave ``room`` tokens free in
        the window: a path too long keeps its end (as the original Loom does), and how many tokens
        it dropped. ``before`` and ``after`` (the tree's memory and prompt template around the
        path) are always kept whole; only the path is cut. A ``room`` the window cannot hold, or a
        memory and template that leave no room for the path, is refused, naming the field."""
        from alignlab.models.tokens import encode_prompt

        if room >= self.window:
            raise Invalid(f"'{what}' is {room}; {self.name} reads at most {self.window} tokens at once (context and "
                          f"continuation together), so ask for fewer", field=what)
        whole = before + context + after
        ids = encode_prompt(self.tokenizer, whole or self.tokenizer.bos_token or "")
        keep = self.window - room
        if len(ids) <= keep:
            return ids, 0
        bos = self.tokenizer.bos_token_id
        if not before and not after:
            head = ids[:1] if bos is not None and ids[0] == bos else []
            tail = ids[len(ids) - (keep - len(head)):]
            return head + tail, len(ids) - len(head) - len(tail)
        head = encode_prompt(self.tokenizer, before) if before else ([bos] if bos is not None else [])
        end = list(self.tokenizer(after, add_special_tokens=False)["input_ids"]) if after else []
        body = list(self.tokenizer(context, add_special_tokens=False)["input_ids"])
        space = keep - len(head) - len(end)
        if space < 1:
            raise Invalid(f"the memory and prompt template take {len(head) + len(end)} tokens; with '{what}' {room} "
                          f"{self.name}'s window of {self.window} leaves no room for the path: shorten the memory "
                          f"or ask for fewer tokens", field="memory")
        kept = body[max(0, len(body) - space):]
        return head + kept + end, len(body) - len(kept)


@dataclass
class Job:
    """One unit of model work; ``events`` receives what it reports, ending with None."""

    run: Callable[[Job], Any]
    kind: str = "model"
    id: str = field(default_factory=new_id)
    events: queue.Queue = field(default_factory=queue.Queue)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    stops: dict = field(default_factory=dict)
    """Rows a person stopped: row (None: every row) -> the tokens they were shown (None: as far as generated)."""
    result: Any = None
    error: BaseException | None = None

    def emit(self, event: dict) -> None:
        self.events.put(event)

    def stop(self, row: int | None = None, tokens: int | None = None) -> None:
        """End row ``row`` of a running generation (every row: None) after ``tokens`` tokens
        (None: where it has got to); the row is saved so, with finish_reason 'stop'."""
        self.stops[row] = tokens

    def cancel(self) -> None:
        """Nobody is listening any more: a queued job is dropped, a running generation ends every
        row where it has got to (finish_reason 'cancelled') and saves them."""
        self.cancelled.set()


class Worker:
    """Runs jobs one at a time on a daemon thread."""

    def __init__(self, max_queued: int = MAX_QUEUED):
        self.max_queued = max_queued
        self._queue: list[Job] = []
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="loom-model-worker", daemon=True)
        self._thread.start()

    def submit(self, run: Callable[[Job], Any], kind: str = "model") -> Job:
        job = Job(run, kind)
        with self._cv:
            if len(self._queue) >= self.max_queued:
                raise Busy(f"{len(self._queue)} model requests are already waiting; try again shortly")
            self._queue.append(job)
            position = len(self._queue)
            self._cv.notify_all()
        job.emit({"type": "queued", "position": position, "job": job.id})
        return job

    def find(self, job_id: str, kind: str | None = None) -> Job | None:
        """The queued or running job ``job_id`` (of ``kind``), or None once it has ended."""
        with self._cv:
            return next((j for j in self._queue if j.id == job_id and kind in (None, j.kind)), None)

    def call(self, run: Callable[[Job], Any], timeout: float | None = None) -> Any:
        """Submit and wait for the result (re-raising the job's error)."""
        job = self.submit(run)
        if not job.done.wait(timeout):
            raise TimeoutError("the model worker did not answer in time")
        if job.error is not None:
            raise job.error
        return job.result

    def waiting(self) -> int:
        with self._cv:
            return len(self._queue)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                job = self._queue[0]
            try:
                if job.cancelled.is_set():  # its client left while it waited
                    job.emit({"type": "cancelled"})
                    continue
                job.emit({"type": "start"})
                job.result = job.run(job)
            except BaseException as err:  # reported to the job's caller, never kills the worker
                job.error = err
                job.emit({"type": "error", "message": str(err)})
            finally:
                with self._cv:
                    self._queue.pop(0)
                    for i, waiting in enumerate(self._queue):
                        waiting.emit({"type": "queued", "position": i + 1})
                job.done.set()
                job.events.put(None)


TEMPLATE = "{memory}{text}"
"""How the model's context is made from a tree's memory and the path's text (the default: the
memory, then the path). A template may add words around them, e.g. "{memory}Story:\n{text}"."""


def split_template(template: str, memory: str) -> tuple[str, str]:
    """(before, after): the text a template puts before and after the path, its memory filled in.
    A template names ``{text}`` exactly once and may name ``{memory}``; literal braces are ``{{``
    and ``}}``. Raises ValueError saying what is wrong."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"the template {template!r} is not a valid template ({err}); write literal braces as "
                         "{{ and }}") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in ("memory", "text") or spec or conversion):
            raise ValueError(f"the template names {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}}; it may only name {{memory}} and {{text}}")
        parts.append((literal, name))
    if sum(name == "text" for _, name in parts) != 1:
        raise ValueError(f"the template {template!r} must name {{text}} (where the path goes) exactly once")
    before, after, seen = "", "", False
    for literal, name in parts:
        piece = literal + (memory if name == "memory" else "")
        if seen:
            after += piece
        else:
            before += piece
        seen = seen or name == "text"
    return before, after


@dataclass
class GenerateRequest:
    n: int = 3
    max_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    alternatives: int = 5
    steering: dict | None = None
    memory: str = ""
    template: str = TEMPLATE

    def settings(self) -> dict:
        """The settings a node records (memory and template only when they are not the defaults)."""
        out = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
               "top_k": self.top_k, "stop": list(self.stop), "alternatives": self.alternatives}
        if self.memory:
            out["memory"] = self.memory
        if self.template != TEMPLATE:
            out["template"] = self.template
        return out

    def around(self) -> tuple[str, str]:
        """The text the model reads before and after the path (memory and template)."""
        try:
            return split_template(self.template, self.memory)
        except ValueError as err:
            raise Invalid(str(err), field="template") from None


_seeds = itertools.count(1)


def generate(slot: ModelSlot, prompt: str, request: GenerateRequest, job: Job) -> list[dict]:
    """Sample ``request.n`` continuations of ``prompt``, emitting each token; returns one dict per
    continuation (text, tokens, seed, finish_reason) for the store."""
    from alignlab.models import SampleConfig, stream

    if request.n < 1 or request.n > 16:
        raise Invalid(f"'n' is {request.n}; generate 1 to 16 continuations at a time", field="n")
    seed = request.seed if request.seed is not None else (torch.seed() % 2**31 + next(_seeds))
    config = SampleConfig(max_new_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                          top_k=request.top_k, stop=list(request.stop), seed=seed, alternatives=request.alternatives)
    try:
        config.check()
    except ValueError as err:
        raise Invalid(str(err)) from None
    if request.max_tokens > 1024:
        raise Invalid(f"'max_tokens' is {request.max_tokens}; the loom generates at most 1024 tokens a node",
                      field="max_tokens")
    seeds = [seed + i for i in range(request.n)]
    before, after = request.around()
    context, dropped = slot.fit(prompt, request.max_tokens, before=before, after=after)
    rows: list[dict] = [{"row": i, "text": "", "tokens": [], "seed": s, "finish_reason": "length",
                         "context_dropped": dropped} for i, s in enumerate(seeds)]
    ended = [False] * request.n

    def end(r: int, reason: str, tokens: int | None = None) -> None:
        if ended[r]:
            return
        row = rows[r]
        if tokens is not None and tokens < len(row["tokens"]):  # what the person was shown, exactly
            row["tokens"] = row["tokens"][:tokens]
            row["text"] = "".join(t["text"] for t in row["tokens"])
        row["finish_reason"], ended[r] = reason, True

    with _steering(slot, request.steering):
        for event in stream(slot.model, slot.tokenizer, [context] * request.n, config, seeds=seeds):
            while job.stops:
                r, tokens = job.stops.popitem()
                for target in (range(request.n) if r is None else [r] if 0 <= r < request.n else []):
                    end(target, "stop", tokens)
            if job.cancelled.is_set():
                for r in range(request.n):
                    end(r, "cancelled")
            if all(ended):
                break  # the sampler stops with the loop: nothing more is computed
            if ended[event.row]:
                continue
            row = rows[event.row]
            token = event.token.to_dict()
            row["tokens"].append(token)
            row["text"] += event.token.text
            if event.finish_reason:
                row["finish_reason"], ended[event.row] = event.finish_reason, True
            job.emit({"type": "token", "row": event.row, "index": event.index, "token": token,
                      "finish_reason": event.finish_reason})
    # A row stopped or cancelled before its first token holds no text: nothing to save.
    return [r for r in rows if r["tokens"] or r["finish_reason"] not in ("stop", "cancelled")]


def _steering(slot: ModelSlot, recipe: dict | None):
    if not recipe:
        return contextlib.nullcontext()
    from alignlab.whitebox.steering import Steering, steered, steering_vector

    try:
        steering = Steering.from_dict(recipe)
        vector = steering_vector(slot.model, slot.tokenizer, steering)
    except ValueError as err:
        raise Invalid(str(err), field="steering") from None
    return steered(slot.model, vector, steering.layer, steering.coefficient)


@torch.no_grad()
def text_bits(slot: ModelSlot, context: str, text: str, changed: list[tuple[int, int]] | None = None,
              before: str = "") -> float:
    """-log2 P(text | context) under the model: the intervention bits of text a person wrote.
    With ``changed`` (character spans of ``text``), only tokens overlapping them count (an edit
    of model text costs the bits of what the person changed, not of what the model wrote).
    ``before`` is what the model reads ahead of the path (the tree's memory); a template's text
    after the path is left out, as the person's text continues the path itself."""
    from alignlab.models import score

    if not text:
        return 0.0
    ids = slot.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) >= slot.window - 1:
        raise Invalid(f"the text is {len(ids)} tokens; {slot.name} reads at most {slot.window} at once, so its "
                      "intervention bits cannot be computed (they stay unknown)", field="text")
    prefix, _ = slot.fit(context, len(ids), what="text", before=before)
    scored = score(slot.model, slot.tokenizer, [prefix], [ids])[0]
    total, offset = 0.0, 0
    for piece, lp in zip(scored.token_texts, scored.logprobs):
        start, end = offset, offset + len(piece)
        offset = end
        if changed is None or any(s < max(end, start + 1) and start < e for s, e in changed):
            total += -lp / math.log(2)
    return total


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special and added control tokens (BOS, EOS, <start_of_image>, ...)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(i))
    return ids


@torch.no_grad()
def next_tokens(slot: ModelSlot, context: str, breadth: int = 5, depth: int = 2,
                around: tuple[str, str] = ("", "")) -> list[dict]:
    """The likeliest short paths after ``context``: the top ``breadth`` tokens, and for each the
    top ``breadth`` after it, ``depth`` levels deep, with each path's probability. ``around`` is
    the text before and after the path (memory and template), as a generation would read it."""
    from alignlab.models import SampleConfig, sample

    if not 1 <= breadth <= 10 or not 1 <= depth <= 3:
        raise Invalid("'breadth' must be 1..10 and 'depth' 1..3", field="breadth")
    level = [{"text": "", "ids": [], "logprob": 0.0, "children": []}]
    roots = level
    base, _ = slot.fit(context, depth, before=around[0], after=around[1])
    special = special_ids(slot.tokenizer)  # <start_of_image> and the like: not text a person can continue with
    for _ in range(depth):
        prompts = [base + node["ids"] for node in level]
        done = sample(slot.model, slot.tokenizer, prompts, SampleConfig(max_new_tokens=1, temperature=0,
                                                                        alternatives=breadth + 16))
        nxt = []
        for node, completion in zip(level, done):
            shown = [a for a in (completion.tokens[0].alternatives if completion.tokens else [])
                     if a.id not in special][:breadth]
            for alt in shown:
                child = {"text": alt.text, "ids": node["ids"] + [alt.id], "logprob": node["logprob"] + alt.logprob,
                         "children": []}
                node["children"].append(child)
                nxt.append(child)
        level = nxt
    return [_strip(c) for c in roots[0]["children"]]


def _strip(node: dict) -> dict:
    return {"text": node["text"], "probability": math.exp(node["logprob"]), "logprob": node["logprob"],
            "children": [_strip(c) for c in node["children"]]}
