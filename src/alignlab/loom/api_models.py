"""Routes that run models: generation (streamed), counterfactual tokens, the next-token view,
reward scores, the model list, and training jobs started from the loom."""

from __future__ import annotations

import asyncio
import json
import math
import queue
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from alignlab.loom.api_trees import Generate, Strict, author, public, store
from alignlab.loom.events import Invalid, NotFound
from alignlab.loom.generation import GenerateRequest, generate, next_tokens
from alignlab.loom.store import Store

router = APIRouter()

DEFAULTS = GenerateRequest().settings() | {"n": 3}
"""Generation settings when neither the request, the branch nor the tree sets them."""


class BranchSettings(Generate):
    """Settings stored on a node and inherited by every generation below it."""


class Counterfactual(Strict):
    token_index: Annotated[int, Field(ge=0)]
    token_id: Annotated[int, Field(ge=0)]


class AddModel(Strict):
    name: Annotated[str, Field(min_length=1, max_length=1000)]
    kind: Annotated[str, Field(max_length=16)] | None = None


def effective_settings(s: Store, node_id: str, request: dict | None = None) -> dict:
    """Defaults, then the tree's settings, then each ancestor's branch settings from the root
    down, then the request: the nearest wins."""
    path = s.ancestry(node_id)
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in (s.tree(path[0]["tree_id"])["settings"] or {}).items() if v is not None})
    for node in path:
        merged.update({k: v for k, v in (node["meta"].get("branch_settings") or {}).items() if v is not None})
    merged.update({k: v for k, v in (request or {}).items() if v is not None})
    return merged


@router.get("/models")
def list_models(request: Request) -> list[dict]:
    registry = request.app.state.models
    return [registry.describe(n) for n in registry.names()]


@router.post("/models", status_code=201)
def add_model(body: AddModel, request: Request, who: str = Depends(author)) -> dict:
    """Add a model beside the others: a base model name, a trained policy or adapter folder, or
    a reward model folder (which scores nodes). Kept in the store: a restart lists it again."""
    return request.app.state.models.add(body.name, body.kind, author=who)


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
    prompt = s.text_of(node_id)
    registry = request.app.state.models
    name = settings.get("model") or registry.default()
    if name not in registry.names("generate"):
        raise NotFound(f"no generation model {name!r} in this loom (models: {', '.join(registry.names()) or 'none'})",
                       field="model")
    if settings["max_tokens"] >= registry.context_tokens:
        raise Invalid(f"'max_tokens' is {settings['max_tokens']}; this loom gives a model at most "
                      f"{registry.context_tokens} tokens at once (context and continuation; --context-tokens), so "
                      "ask for fewer", field="max_tokens")
    req = GenerateRequest(n=settings["n"], max_tokens=settings["max_tokens"], temperature=settings["temperature"],
                          top_p=settings["top_p"], top_k=settings["top_k"], seed=settings.get("seed"),
                          stop=list(settings["stop"]), alternatives=settings["alternatives"],
                          steering=settings.get("steering"))

    def run(job):
        if not registry.describe(name)["loaded"]:
            job.emit({"type": "status", "message": f"loading {name} (its first use; the embedded model is converted "
                                                   "from GGUF once, about a minute, then cached)"})
        slot = registry.slot(name)
        rows = generate(slot, prompt, req, job)
        children = [{"text": r["text"], "source": "model", "model": name, "settings": req.settings(),
                     "seed": r["seed"], "steering": req.steering, "tokens": r["tokens"],
                     "finish_reason": r["finish_reason"],
                     **({"meta": {"context_dropped": r["context_dropped"]}} if r["context_dropped"] else {})}
                    for r in rows]
        made = s.add_nodes(node_id, children, who, kind="generate",
                           payload={"model": name, "n": req.n, "settings": req.settings(), "steering": req.steering})
        job.emit({"type": "done", "nodes": [public(n) for n in made], "rows": [r["row"] for r in rows]})
        return made

    return JobStream(request.app.state.worker.submit(run, kind="generate"))


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
    """The likeliest next tokens and the likeliest token after each (a block multiverse)."""
    context = s.text_of(node_id)
    registry = request.app.state.models
    return request.app.state.worker.call(lambda job: next_tokens(registry.slot(model), context, breadth, depth))


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
