"""Routes that run models: generation (streamed), counterfactual tokens, the next-token view,
reward scores, the model list, and training jobs started from the loom."""

from __future__ import annotations

import asyncio
import json
import math
import queue
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from alignlab.loom.api_trees import Generate, Strict, author, public, store
from alignlab.loom.endpoint import EndpointSlot, generate_remote
from alignlab.loom.events import Conflict, Invalid, NotFound
from alignlab.loom.generation import GenerateRequest, generate, next_tokens
from alignlab.loom.settings import BUILTIN_PRESETS, effective_settings, presets, request_from
from alignlab.loom.store import Store
from alignlab.models.cache import reporting

router = APIRouter()


class BranchSettings(Generate):
    """Settings stored on a node and inherited by every generation below it."""


class Counterfactual(Strict):
    token_index: Annotated[int, Field(ge=0)]
    token_id: Annotated[int, Field(ge=0)]


class AddModel(Strict):
    name: Annotated[str, Field(min_length=1, max_length=1000)]
    kind: Annotated[str, Field(max_length=16)] | None = None


@router.get("/models")
def list_models(request: Request) -> list[dict]:
    registry = request.app.state.models
    return [registry.describe(n) for n in registry.names()]


@router.post("/models", status_code=201)
def add_model(body: AddModel, request: Request, who: str = Depends(author)) -> dict:
    """Add a model beside the others: a base model name, a trained policy or adapter folder, or
    a reward model folder (which scores nodes). Kept in the store: a restart lists it again."""
    return request.app.state.models.add(body.name, body.kind, author=who)


class Preset(Generate):
    """A preset: the generation settings it sets (a tree's memory, a steering recipe and the
    model stay out of presets)."""


@router.get("/presets")
def list_presets(s: Store = Depends(store)) -> list[dict]:
    """The built-in presets, then those saved in this store."""
    return presets(s)


@router.put("/presets/{name}")
def save_preset(name: Annotated[str, Path(min_length=1, max_length=200)], body: Preset, s: Store = Depends(store),
                who: str = Depends(author)) -> dict:
    """Save (or replace) a preset under ``name``; built-in names are taken."""
    if name in BUILTIN_PRESETS:
        raise Conflict(f"{name!r} is a built-in preset; save yours under another name", field="name")
    values = body.model_dump(exclude_none=True)
    for personal in ("steering", "model", "memory"):
        values.pop(personal, None)
    return {**s.save_preset(name.strip(), values, who), "builtin": False}


@router.delete("/presets/{name}", status_code=204)
def delete_preset(name: str, s: Store = Depends(store)) -> None:
    if name in BUILTIN_PRESETS:
        raise Conflict(f"{name!r} is a built-in preset and stays", field="name")
    s.delete_preset(name)


@router.get("/queue")
def queue_length(request: Request) -> dict:
    return {"waiting": request.app.state.worker.waiting()}


@router.get("/nodes/{node_id}/settings")
def get_settings(node_id: str, s: Store = Depends(store)) -> dict:
    return effective_settings(s, node_id)


@router.put("/nodes/{node_id}/settings")
def put_settings(node_id: str, body: BranchSettings, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    s.set_branch_settings(node_id, body.model_dump(exclude_none=True), who)
    return effective_settings(s, node_id)


@router.post("/nodes/{node_id}/generate")
def generate_children(node_id: str, body: Generate, request: Request, s: Store = Depends(store),
                      who: str = Depends(author)) -> StreamingResponse:
    """Sample continuations of the node, streamed as JSON lines: {"type": "queued", "position"},
    {"type": "start"}, {"type": "token", "row", "index", "token"}, and at the end {"type": "done",
    "nodes": [...]} (or {"type": "error", "message"}). The nodes are saved even if the client
    has gone by then."""
    settings = effective_settings(s, node_id, body.model_dump(exclude_none=True))
    name, req = _generation(request, settings)
    prompt = s.text_of(node_id)

    def save(rows: list[dict]) -> list[dict]:
        return s.add_nodes(node_id, _children(rows, name, req), who, kind="generate", payload=_payload(name, req))

    return JobStream(request.app.state.worker.submit(_generation_job(request, name, prompt, req, save),
                                                     kind="generate"))


@router.post("/nodes/{node_id}/reroll")
def reroll(node_id: str, body: Generate, request: Request, s: Store = Depends(store),
           who: str = Depends(author)) -> StreamingResponse:
    """Reroll a model continuation in place: one fresh continuation of its parent, with the
    settings, model and steering it was made with (and a new seed, unless the request sets one),
    streamed as a generation is; when it ends the new node is saved and the old one archived (a
    ``reroll`` event on it names its successor; unarchive brings it back)."""
    node = s.node(node_id)
    if node["parent_id"] is None:
        raise Invalid("the root is the prompt; reroll one of its continuations", field="node_id")
    if node["source"] != "model" or not node["model"]:
        raise Invalid("only text a model wrote is rerolled; to replace your own text, edit it or generate from "
                      "its parent", field="node_id")
    own = {k: v for k, v in (node["settings"] or {}).items() if k in Generate.model_fields}
    own |= {"model": node["model"], "steering": node["steering"]}
    settings = effective_settings(s, node["parent_id"], own | body.model_dump(exclude_none=True))
    name, req = _generation(request, settings, n=1)
    prompt = s.text_of(node["parent_id"])

    def save(rows: list[dict]) -> list[dict]:
        if not rows:
            return []
        return [s.reroll(node_id, _children(rows, name, req)[0], who, payload=_payload(name, req))]

    return JobStream(request.app.state.worker.submit(_generation_job(request, name, prompt, req, save),
                                                     kind="generate"))


def _generation(request: Request, settings: dict, n: int | None = None) -> tuple[str, GenerateRequest]:
    """The model and the request that ``settings`` describe, checked before anything is queued."""
    registry = request.app.state.models
    name = settings.get("model") or registry.default()
    if name not in registry.names("generate"):
        raise NotFound(f"no generation model {name!r} in this loom (models: {', '.join(registry.names()) or 'none'})",
                       field="model")
    if settings["max_tokens"] >= registry.context_tokens:
        raise Invalid(f"'max_tokens' is {settings['max_tokens']}; this loom gives a model at most "
                      f"{registry.context_tokens} tokens at once (context and continuation; --context-tokens), so "
                      "ask for fewer", field="max_tokens")
    req = request_from(settings, n)
    req.around()  # a bad template is refused now, not in the queue
    if registry.kind(name) == "endpoint":  # what an endpoint cannot do is refused now too
        if req.steering:
            raise Invalid(f"{name} is served over an endpoint: steering adds to a model's activations, which only a "
                          "local model exposes", field="steering")
        registry.slot(name).headers()
    return name, req


def _children(rows: list[dict], name: str, req: GenerateRequest) -> list[dict]:
    return [{"text": r["text"], "source": "model", "model": name, "settings": req.settings(), "seed": r["seed"],
             "steering": req.steering, "tokens": r["tokens"], "finish_reason": r["finish_reason"],
             **({"meta": {"context_dropped": r["context_dropped"]}} if r["context_dropped"] else {})}
            for r in rows]


def _payload(name: str, req: GenerateRequest) -> dict:
    return {"model": name, "n": req.n, "settings": req.settings(), "steering": req.steering}


def _generation_job(request: Request, name: str, prompt: str, req: GenerateRequest, save):
    registry = request.app.state.models

    def run(job):
        if not registry.describe(name)["loaded"]:
            job.emit({"type": "status", "message": f"loading {name} (its first use; the embedded model is converted "
                                                   "from GGUF once, about a minute, then cached)"})
            with reporting(lambda message: job.emit({"type": "status", "message": f"loading {name}: {message}"})):
                registry.slot(name)
        slot = registry.slot(name)
        rows = (generate_remote if isinstance(slot, EndpointSlot) else generate)(slot, prompt, req, job)
        made = save(rows)
        job.emit({"type": "done", "nodes": [public(n) for n in made], "rows": [r["row"] for r in rows][:len(made)]})
        return made

    return run


class JobStream(StreamingResponse):
    """A job's events as JSON lines; a client that leaves before the job ends cancels it (a
    queued generation is dropped, a running one ends where it has got to and is saved)."""

    def __init__(self, job):
        super().__init__(self._lines(job), media_type="application/x-ndjson")
        self.job = job

    @staticmethod
    async def _lines(job):
        while True:
            try:
                event = job.events.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)
                continue
            if event is None:
                return
            yield json.dumps(event, default=str) + "\n"

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.job.done.is_set():
                self.job.cancel()


class StopGeneration(Strict):
    row: Annotated[int, Field(ge=0, le=15)] | None = None
    tokens: Annotated[int, Field(ge=0, le=1024)] | None = None


@router.post("/generations/{job_id}/stop")
def stop_generation(job_id: str, body: StopGeneration, request: Request) -> dict:
    """Stop a running generation: row ``row`` (every row when absent) ends after ``tokens`` tokens
    (the ones the person was shown; where it has got to when absent), saved with finish_reason
    'stop'. The job id is in the stream's first event."""
    job = request.app.state.worker.find(job_id, kind="generate")
    if job is None:
        raise NotFound(f"no running generation {job_id!r}: it has ended (its continuations are saved) or never "
                       "started", field="job_id")
    job.stop(body.row, body.tokens)
    return {"job": job_id, "row": body.row, "tokens": body.tokens}


@router.post("/nodes/{node_id}/counterfactual", status_code=201)
def counterfactual(node_id: str, body: Counterfactual, request: Request, s: Store = Depends(store),
                   who: str = Depends(author)) -> dict:
    """Branch from an alternative token: a new sibling holding the node's text up to token
    ``token_index`` and then the chosen alternative. It costs -log2 p(alternative) bits of
    intervention; the model-written tokens before it are kept with their log-probs."""
    node = s.node(node_id)
    tokens = node["tokens"] or []
    if node["parent_id"] is None or not tokens:
        raise Invalid("only model-written nodes with recorded tokens have alternatives", field="node_id")
    if body.token_index >= len(tokens):
        raise Invalid(f"'token_index' is {body.token_index}; the node has {len(tokens)} tokens", field="token_index")
    if tokens[body.token_index].get("id") is None:
        raise Invalid(f"{node['model']} is served over an endpoint, which gives token texts but not their ids: write the "
                      "alternative yourself (Write) to branch with it", field="token_id")
    alternatives = {a[0]: a for a in tokens[body.token_index]["alternatives"]}
    if body.token_id not in alternatives:
        raise Invalid(f"token {body.token_id} is not among the recorded alternatives at position "
                      f"{body.token_index}", field="token_id")
    alt_id, alt_text, alt_lp = alternatives[body.token_id]
    kept = tokens[:body.token_index]
    new_token = {"id": alt_id, "text": alt_text, "logprob": alt_lp, "sample_logprob": None, "alternatives":
                 tokens[body.token_index]["alternatives"], "substituted": True}
    text = "".join(t["text"] for t in kept) + alt_text
    return s.add_nodes(node["parent_id"], [{
        "text": text, "source": "mixed", "model": node["model"], "settings": node["settings"], "seed": node["seed"],
        "steering": node["steering"], "tokens": kept + [new_token], "finish_reason": None,
        "intervention_bits": -alt_lp / math.log(2), "meta": {"counterfactual_of": node_id,
                                                             "token_index": body.token_index}}],
        who, kind="write", payload={"counterfactual_of": node_id, "token_index": body.token_index,
                                    "token_id": alt_id})[0]


@router.get("/nodes/{node_id}/next-tokens")
def next_token_view(node_id: str, request: Request, s: Store = Depends(store),
                    breadth: Annotated[int, Query(ge=1, le=10)] = 5, depth: Annotated[int, Query(ge=1, le=3)] = 2,
                    model: str | None = None) -> list[dict]:
    """The likeliest next tokens and the likeliest token after each (a block multiverse), with
    the memory and template a generation from this node would use."""
    context = s.text_of(node_id)
    around = request_from(effective_settings(s, node_id)).around()
    registry = request.app.state.models
    return request.app.state.worker.call(
        lambda job: next_tokens(registry.local(model, "the next-token view"), context, breadth, depth, around))


@router.get("/nodes/{node_id}/reward")
def reward(node_id: str, request: Request, model: str, s: Store = Depends(store)) -> dict:
    """A reward model's score for the node's text given its ancestry."""
    node = s.node(node_id)
    if node["parent_id"] is None:
        raise Invalid("the root is the prompt; score one of its continuations", field="node_id")
    context = s.text_of(node["parent_id"])
    registry = request.app.state.models
    mean, spread = request.app.state.worker.call(lambda job: registry.reward(model).score([context], [node["text"]]))
    return {"model": model, "node_id": node_id, "reward": float(mean[0]), "ensemble_std": float(spread[0])}


@router.get("/trees/{tree_id}/ask")
def ask_me(tree_id: str, request: Request, model: str | None = None, s: Store = Depends(store)) -> dict:
    """Ask me: the sibling pair of this tree whose comparison the loom most wants (the most
    expected information under a reward head fitted on the tree's compare judgements so far, on a
    local model's features; loom/ask.py), with why, and the model's uncertainty over every open
    pair (it falls as answers come in). ``pair`` is null, with ``why``, when nothing is left to ask.
    Answer it as any comparison: ``POST /trees/{id}/feedback`` with kind compare."""
    from alignlab.loom.ask import ask

    nodes = s.tree_nodes(tree_id)
    events = s.events(tree_id, kinds=["compare"])
    registry = request.app.state.models
    caches = request.app.state.ask_features

    def work(job):
        slot = registry.local(model, "asking (its features)")
        return ask(nodes, events, slot, caches.setdefault(slot.name, {}))

    return request.app.state.worker.call(work)


@router.get("/nodes/{node_id}/step-scores")
def step_scores(node_id: str, request: Request, model: str, s: Store = Depends(store),
                by: Annotated[str, Query(max_length=16)] = "lines") -> dict:
    """A process reward model's P(right) of each of the node's steps (cut as ``GET
    /nodes/{id}/steps`` cuts them) given its ancestry; null for a step past the model's length limit."""
    from alignlab.data.steps import split_steps
    from alignlab.loom.events import STEP_SPLITS

    if by not in STEP_SPLITS:
        raise Invalid(f"'by' is {by!r}; split a node by {', '.join(STEP_SPLITS)}", field="by")
    registry = request.app.state.models
    if model not in registry.names("process"):
        raise NotFound(f"no process reward model {model!r} in this loom (process reward models: "
                       f"{', '.join(registry.names('process')) or 'none'}; add one with + model)", field="model")
    node = s.node(node_id)
    steps = split_steps(node["text"], by)
    if not steps:
        raise Invalid("the node's text is empty: it has no steps to score", field="node_id")
    context = s.text_of(node["parent_id"]) if node["parent_id"] else ""
    (probs,) = request.app.state.worker.call(lambda job: registry.process(model).score_steps([context], [steps]))
    return {"model": model, "node_id": node_id, "by": by,
            "p_right": [None if math.isnan(p) else float(p) for p in probs]}


@router.post("/train", status_code=202)
def start_training(body: dict[str, Any], request: Request, who: str = Depends(author)) -> dict:
    """Start a reward-model, DPO or process-reward-model run on what the loom recorded (a background process)."""
    from alignlab.loom.training import TrainRequest, start

    try:
        spec = TrainRequest(**body)
    except TypeError as err:
        raise Invalid(f"unknown or missing training option: {err}", field="body") from None
    return start(request.app, spec, who)


@router.get("/jobs")
def list_jobs(request: Request) -> list[dict]:
    from alignlab.loom.training import jobs

    return jobs(request.app)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> dict:
    from alignlab.loom.training import job

    return job(request.app, job_id)
