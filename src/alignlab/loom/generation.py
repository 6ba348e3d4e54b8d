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
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from alignlab.loom.events import Invalid, LoomError

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

    def describe(self) -> dict:
        return {"name": self.name, "colour": self.colour, "kind": self.kind,
                "layers": int(getattr(self.model.config, "num_hidden_layers", 0))}


@dataclass
class Job:
    """One unit of model work; ``events`` receives what it reports, ending with None."""

    run: Callable[[Job], Any]
    events: queue.Queue = field(default_factory=queue.Queue)
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def emit(self, event: dict) -> None:
        self.events.put(event)


class Worker:
    """Runs jobs one at a time on a daemon thread."""

    def __init__(self, max_queued: int = MAX_QUEUED):
        self.max_queued = max_queued
        self._queue: list[Job] = []
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="loom-model-worker", daemon=True)
        self._thread.start()

    def submit(self, run: Callable[[Job], Any]) -> Job:
        job = Job(run)
        with self._cv:
            if len(self._queue) >= self.max_queued:
                raise Busy(f"{len(self._queue)} model requests are already waiting; try again shortly")
            self._queue.append(job)
            position = len(self._queue)
            self._cv.notify_all()
        job.emit({"type": "queued", "position": position})
        return job

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
            job.emit({"type": "start"})
            try:
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


def job_events(job: Job, timeout: float = 3600) -> Iterator[dict]:
    """The job's events until it ends."""
    while True:
        event = job.events.get(timeout=timeout)
        if event is None:
            return
        yield event


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

    def settings(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k, "stop": list(self.stop), "alternatives": self.alternatives}


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
    rows: list[dict] = [{"text": "", "tokens": [], "seed": s, "finish_reason": "length"} for s in seeds]
    with _steering(slot, request.steering):
        for event in stream(slot.model, slot.tokenizer, [prompt or slot.tokenizer.bos_token or ""] * request.n,
                            config, seeds=seeds):
            row = rows[event.row]
            token = event.token.to_dict()
            row["tokens"].append(token)
            row["text"] += event.token.text
            if event.finish_reason:
                row["finish_reason"] = event.finish_reason
            job.emit({"type": "token", "row": event.row, "index": event.index, "token": token,
                      "finish_reason": event.finish_reason})
    return rows


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
def text_bits(slot: ModelSlot, context: str, text: str, changed: list[tuple[int, int]] | None = None) -> float:
    """-log2 P(text | context) under the model: the intervention bits of text a person wrote.
    With ``changed`` (character spans of ``text``), only tokens overlapping them count (an edit
    of model text costs the bits of what the person changed, not of what the model wrote)."""
    from alignlab.models import score

    if not text:
        return 0.0
    scored = score(slot.model, slot.tokenizer, [context or slot.tokenizer.bos_token or ""], [text])[0]
    total, offset = 0.0, 0
    for piece, lp in zip(scored.token_texts, scored.logprobs):
        start, end = offset, offset + len(piece)
        offset = end
        if changed is None or any(s < max(end, start + 1) and start < e for s, e in changed):
            total += -lp / math.log(2)
    return total


@torch.no_grad()
def next_tokens(slot: ModelSlot, context: str, breadth: int = 5, depth: int = 2) -> list[dict]:
    """The likeliest short paths after ``context``: the top ``breadth`` tokens, and for each the
    top ``breadth`` after it, ``depth`` levels deep, with each path's probability."""
    from alignlab.models import SampleConfig, sample

    if not 1 <= breadth <= 10 or not 1 <= depth <= 3:
        raise Invalid("'breadth' must be 1..10 and 'depth' 1..3", field="breadth")
    prompt = context or slot.tokenizer.bos_token or ""
    level = [{"text": "", "ids": [], "logprob": 0.0, "children": []}]
    roots = level
    from alignlab.models.sampling import encode_prompt

    base = encode_prompt(slot.tokenizer, prompt)
    for _ in range(depth):
        prompts = [base + node["ids"] for node in level]
        done = sample(slot.model, slot.tokenizer, prompts, SampleConfig(max_new_tokens=1, temperature=0,
                                                                        alternatives=breadth))
        nxt = []
        for node, completion in zip(level, done):
            for alt in completion.tokens[0].alternatives if completion.tokens else []:
                child = {"text": alt.text, "ids": node["ids"] + [alt.id], "logprob": node["logprob"] + alt.logprob,
                         "children": []}
                node["children"].append(child)
                nxt.append(child)
        level = nxt
    return [_strip(c) for c in roots[0]["children"]]


def _strip(node: dict) -> dict:
    return {"text": node["text"], "probability": math.exp(node["logprob"]), "logprob": node["logprob"],
            "children": [_strip(c) for c in node["children"]]}
