"""Routes for trees and nodes: read, write, edit, organise. Every change is logged as an event
by the store in the same transaction. The annotator is the ``X-Annotator`` header (default: the
name the server was started with)."""

from __future__ import annotations

import difflib
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alignlab.loom.settings import effective_settings, request_from
from alignlab.loom.store import Store

router = APIRouter()

NAME = Annotated[str, Field(min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    memory: Annotated[str, Field(max_length=100_000)] | None = None
    """Text the model reads before the path (kept whole when a long path is cut), as in Loom."""
    template: Annotated[str, Field(min_length=6, max_length=10_000)] | None = None
    """How memory and path make the model's context: names {text} once, may name {memory}."""

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        from alignlab.loom.generation import split_template

        if value is not None:
            split_template(value, "")  # a ValueError here is a 422 naming the field
        return value


class NewTree(Strict):
    prompt: Annotated[str, Field(max_length=1_000_000)]
    title: Annotated[str, Field(max_length=500)] = ""
    settings: Generate = Generate()
    """Generation settings every node of the tree inherits (checked here: a wrong type would break every generation)."""


class TreeUpdate(Strict):
    title: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    settings: Generate | None = None
    archived: bool | None = None


class Text(Strict):
    text: Annotated[str, Field(max_length=1_000_000)]


class At(Strict):
    at: Annotated[int, Field(ge=1)]


class Flag(Strict):
    value: bool = True


class Tag(Strict):
    tag: Annotated[str, Field(min_length=1, max_length=200)]


class Note(Strict):
    note: Annotated[str, Field(max_length=100_000)]


def store(request: Request) -> Store:
    return request.app.state.store


def author(request: Request, x_annotator: Annotated[str | None, Header(max_length=200)] = None) -> str:
    name = (x_annotator or "").strip()
    return name or request.app.state.settings.annotator


def public(node: dict) -> dict:
    """A node as the tree view needs it (no per-token data)."""
    return {k: v for k, v in node.items() if k != "tokens"}


@router.get("/trees")
def list_trees(s: Store = Depends(store), archived: bool = False) -> list[dict]:
    return s.trees(include_archived=archived)


@router.post("/trees", status_code=201)
def create_tree(body: NewTree, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.create_tree(body.prompt, who, title=body.title, settings=body.settings.model_dump(exclude_none=True))


@router.get("/trees/{tree_id}")
def get_tree(tree_id: str, s: Store = Depends(store)) -> dict:
    return {"tree": s.tree(tree_id), "nodes": [public(n) for n in s.tree_nodes(tree_id)]}


@router.patch("/trees/{tree_id}")
def update_tree(tree_id: str, body: TreeUpdate, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    settings = None if body.settings is None else body.settings.model_dump(exclude_none=True)
    return s.update_tree(tree_id, who, title=body.title, settings=settings, archived=body.archived)


@router.get("/trees/{tree_id}/search")
def search(tree_id: str, q: Annotated[str, Query(min_length=1, max_length=1000)], s: Store = Depends(store)) -> list[dict]:
    return [public(n) for n in s.search(tree_id, q)]


@router.get("/nodes/{node_id}")
def get_node(node_id: str, s: Store = Depends(store)) -> dict:
    return {**s.node(node_id), "pressure": s.pressure(node_id)[-1]}


@router.get("/nodes/{node_id}/path")
def get_path(node_id: str, s: Store = Depends(store)) -> dict:
    """The ancestry (root first) with tokens, for the read view, and the bits along it."""
    return {"nodes": s.ancestry(node_id), "pressure": s.pressure(node_id)}


@router.get("/nodes/{node_id}/children")
def get_children(node_id: str, s: Store = Depends(store), archived: bool = False) -> list[dict]:
    return s.children(node_id, include_archived=archived)


@router.get("/nodes/{node_id}/revisions")
def get_revisions(node_id: str, s: Store = Depends(store)) -> list[dict]:
    return s.revisions(node_id)


@router.post("/nodes/{node_id}/children", status_code=201)
def write_child(node_id: str, body: Text, request: Request, s: Store = Depends(store),
                who: str = Depends(author)) -> dict:
    """A child a person typed; its intervention bits are its -log2 probability under the base model
    (computed after the write commits: see ``_bits_after``)."""
    context = s.text_of(node_id)
    made = s.add_nodes(node_id, [{"text": body.text, "source": "human", "intervention_bits": None}], who, kind="write")[0]
    return _bits_after(request, s, made, context)


@router.post("/nodes/{node_id}/sibling", status_code=201)
def save_as_sibling(node_id: str, body: Text, request: Request, s: Store = Depends(store),
                    who: str = Depends(author)) -> dict:
    """An edit of the node kept beside it instead of replacing it."""
    node = s.node(node_id)
    if node["parent_id"] is None:
        from alignlab.loom.events import Conflict

        raise Conflict("the root has no siblings; edit it or start a new tree", field="id")
    context = s.text_of(node["parent_id"])
    source = "human" if node["source"] in ("human", "prompt") else "mixed"
    changed = _changed(node["text"], body.text) if source == "mixed" else None
    made = s.add_nodes(node["parent_id"], [{"text": body.text, "source": source,
                                            "intervention_bits": _no_model_bits(body.text, changed),
                                            "meta": {"edited_from": node_id}}], who, kind="write",
                       payload={"edited_from": node_id})[0]
    return _bits_after(request, s, made, context, changed)


@router.patch("/nodes/{node_id}")
def edit_node(node_id: str, body: Text, request: Request, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    node = s.node(node_id)
    if node["parent_id"] is None or node["text"] == body.text:
        return s.edit(node_id, body.text, who)
    context = s.text_of(node["parent_id"])
    changed = None if node["source"] == "human" else _changed(node["text"], body.text)
    edited = s.edit(node_id, body.text, who, intervention_bits=_no_model_bits(body.text, changed))
    return _bits_after(request, s, edited, context, changed)


@router.post("/nodes/{node_id}/split", status_code=201)
def split(node_id: str, body: At, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.split(node_id, body.at, who)


class Move(Strict):
    parent_id: Annotated[str, Field(min_length=1, max_length=64)]


@router.post("/nodes/{node_id}/move")
def move(node_id: str, body: Move, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    """Move the node, with its subtree, under another node of the same tree."""
    return s.move(node_id, body.parent_id, who)


@router.post("/nodes/{node_id}/merge")
def merge(node_id: str, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.merge(node_id, who)


@router.post("/nodes/{node_id}/archive")
def archive(node_id: str, body: Flag, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.set_flag(node_id, "archived", body.value, who)


@router.post("/nodes/{node_id}/bookmark")
def bookmark(node_id: str, body: Flag, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.set_flag(node_id, "bookmarked", body.value, who)


@router.post("/nodes/{node_id}/tags")
def add_tag(node_id: str, body: Tag, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.tag(node_id, body.tag, who)


@router.delete("/nodes/{node_id}/tags/{tag}")
def remove_tag(node_id: str, tag: str, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.tag(node_id, tag, who, remove=True)


@router.put("/nodes/{node_id}/note")
def note(node_id: str, body: Note, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    return s.set_note(node_id, body.note, who)


@router.post("/nodes/{node_id}/continue")
def continued(node_id: str, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    """The person chose to continue from this node (implicit feedback: it beat its siblings)."""
    node = s.node(node_id)
    return s.record(node["tree_id"], "continue", {}, who, node_id=node_id, explicit_only=False)


def _changed(before: str, after: str) -> list[tuple[int, int]]:
    """Character spans of ``after`` that an edit inserted or replaced."""
    spans = []
    for op, _, _, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if op in ("replace", "insert") and j2 > j1:
            spans.append((j1, j2))
    return spans


def _no_model_bits(text: str, changed: list[tuple[int, int]] | None = None) -> float | None:
    """The intervention bits a write has without asking a model: 0 for an edit that only deleted
    text, None (unknown, or computed later by ``_bits_after``) otherwise."""
    return 0.0 if changed is not None and not changed and text else None


def _bits_after(request: Request, s: Store, node: dict, context: str,
                changed: list[tuple[int, int]] | None = None) -> dict:
    """Queue the intervention bits of ``node``'s (already committed) text on the model worker and
    return the node at once, marked ``intervention_bits_pending``.

    A person's writing never waits for a model: the write commits first, and the bits are stored
    when the worker reaches them (after any generation already running), only if the node still
    holds the text they were computed for. With no model loaded, or the worker's queue full, the
    bits stay unknown (None)."""
    from alignlab.loom.generation import Busy, text_bits

    models = request.app.state.models
    text = node["text"]
    if (node["intervention_bits"] is not None or not text or not models.names("generate")
            or models.kind(models.default()) == "endpoint"):  # an endpoint does not score text: bits stay unknown
        return {**node, "intervention_bits_pending": False}
    node_id = node["id"]

    before = ""
    if node["parent_id"] is not None:  # the model reads the tree's memory before the path
        before = request_from(effective_settings(s, node["parent_id"])).around()[0]

    def compute(job):
        bits = text_bits(models.slot(None), context, text, changed, before=before)
        s.set_intervention_bits(node_id, text, bits)
        return bits

    try:
        request.app.state.worker.submit(compute)
    except Busy:
        return {**node, "intervention_bits_pending": False}
    return {**node, "intervention_bits_pending": True}
