"""Routes that run models: generation (streamed), counterfactual tokens, the next-token view,
reward scores, the model list, and training jobs started from the loom."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from alignlab.loom.api_trees import Strict, author, public, store
from alignlab.loom.events import Invalid, NotFound
from alignlab.loom.generation import GenerateRequest, generate, job_events, next_tokens
from alignlab.loom.store import Store

router = APIRouter()

DEFAULTS = GenerateRequest().settings() | {"n": 3}
"""Generation settings when neither the request, the branch nor the tree sets them."""


class Steering(Strict):
    positive: Annotated[str, Field(max_length=2000)]
    negative: Annotated[str, Field(max_length=2000)]
    layer: Annotated[int, Field(ge=0, le=1000)]
    coefficient: Annotated[float, Field(ge=-1000, le=1000)]


class Generate(Strict):
    n: Annotated[int, Field(ge=1, le=16)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1024)] | None = None
    temperature: Annotated[float, Field(ge=0, le=10)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0, le=100000)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    stop: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    model: Annotated[str, Field(max_length=1000)] | None = None
    steering: Steering | None = None


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
    req = GenerateRequest(n=settings["n"], max_tokens=settings["max_tokens"], temperature=settings["temperature"],
                          top_p=settings["top_p"], top_k=settings["top_k"], seed=settings.get("seed"),
                          stop=list(settings["stop"]), alternatives=settings["alternatives"],
                          steering=settings.get("steering"))

    def run(job):
        slot = registry.slot(name)
        rows = generate(slot, prompt, req, job)
        children = [{"text": r["text"], "source": "model", "model": name, "settings": req.settings(),
                     "seed": r["seed"], "steering": req.steering, "tokens": r["tokens"],
                     "finish_reason": r["finish_reason"]} for r in rows]
        made = s.add_nodes(node_id, children, who, kind="generate",
                           payload={"model": name, "n": req.n, "settings": req.settings(), "steering": req.steering})
        job.emit({"type": "done", "nodes": [public(n) for n in made]})
        return made

    job = request.app.state.worker.submit(run)
    return StreamingResponse((json.dumps(e, default=str) + "\n" for e in job_events(job)),
                             media_type="application/x-ndjson")


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


@router.post("/train", status_code=202)
def start_training(body: dict[str, Any], request: Request, who: str = Depends(author)) -> dict:
    """Start a reward-model or DPO run on what the loom recorded (a background process)."""
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
