"""Routes for feedback events, agreement between annotators, exports and Loom JSON interop."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from alignlab.loom.api_trees import Strict, author, store
from alignlab.loom.events import FEEDBACK, Invalid
from alignlab.loom.ids import new_id
from alignlab.loom.store import Store

router = APIRouter()


class Feedback(Strict):
    kind: Annotated[str, Field(min_length=1, max_length=32)]
    node_id: Annotated[str, Field(max_length=26)] | None = None
    payload: dict[str, Any] = {}


@router.post("/trees/{tree_id}/feedback", status_code=201)
def give_feedback(tree_id: str, body: Feedback, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    """Record one explicit judgement: compare, rank, thumb, rating, stop, highlight, critique or step."""
    return s.record(tree_id, body.kind, body.payload, who, node_id=body.node_id)


@router.get("/nodes/{node_id}/steps")
def node_steps(node_id: str, s: Store = Depends(store), who: str = Depends(author),
               by: Annotated[str, Query(max_length=16)] = "lines") -> dict:
    """The node's text cut into steps (``by``: lines, sentences or paragraphs; lossless, see
    data/steps.py) with your latest judgement of each as the text reads now (true right, false
    wrong, null not judged), how many are judged, and their minimum (false if any is wrong)."""
    from alignlab.data.steps import split_steps
    from alignlab.loom.events import STEP_SPLITS
    from alignlab.loom.export import step_labels

    if by not in STEP_SPLITS:
        raise Invalid(f"'by' is {by!r}; split a node by {', '.join(STEP_SPLITS)}", field="by")
    path = s.ancestry(node_id)
    node, prompt = path[-1], "".join(n["text"] for n in path[:-1])
    events = [e for e in s.events(node["tree_id"], kinds=["step"], author=who) if e["node_id"] == node_id]
    group = step_labels(events).get((node_id, who, by, prompt, node["text"]), {"labels": {}})
    steps = split_steps(node["text"], by)
    labels = [group["labels"].get(i) for i in range(len(steps))]
    judged = [label for label in labels if label is not None]
    return {"node_id": node_id, "by": by, "annotator": who, "judged": len(judged),
            "min": min(judged) if judged else None,
            "steps": [{"index": i, "text": text, "label": label} for i, (text, label) in enumerate(zip(steps, labels))]}


@router.get("/trees/{tree_id}/events")
def list_events(tree_id: str, s: Store = Depends(store),
                kind: Annotated[list[str] | None, Query()] = None, annotator: str | None = None) -> list[dict]:
    s.tree(tree_id)
    return s.events(tree_id, kinds=kind, author=annotator)


LIVE_POLL_S = 0.5
LIVE_PING_S = 15.0


@router.get("/trees/{tree_id}/live")
async def live(tree_id: str, request: Request, s: Store = Depends(store),
               annotator: Annotated[str, Query(max_length=200)] = "") -> StreamingResponse:
    """Server-sent events for a tree: every event written to it from now on (by anyone, as
    ``data: {event}``) and who is on the tree (``data: {"type": "presence", "annotators": [...]}``)
    whenever that changes. A page keeps it open to see others' branches and judgements as they
    are made. ``annotator`` names the listener in the presence list (default: the loom's)."""
    await run_in_threadpool(s.tree, tree_id)  # 404 for an unknown tree, before the stream starts
    name = annotator.strip() or request.app.state.settings.annotator
    presence = request.app.state.presence
    after = new_id()  # ids sort by time: the events written from now on follow this one

    async def stream():
        nonlocal after
        presence[tree_id][name] += 1
        shown, idle = None, 0.0
        try:
            while True:
                here = sorted(n for n, k in presence[tree_id].items() if k > 0)
                if here != shown:
                    shown = here
                    yield f"data: {json.dumps({'type': 'presence', 'annotators': here})}\n\n"
                new = await run_in_threadpool(s.events, tree_id, None, None, after, 200)
                for event in new:
                    after = event["id"]
                    yield f"data: {json.dumps({'type': 'event', **event}, default=str)}\n\n"
                idle = 0.0 if new else idle + LIVE_POLL_S
                if idle >= LIVE_PING_S:
                    idle = 0.0
                    yield ": ping\n\n"  # keeps proxies from closing a quiet stream
                await asyncio.sleep(LIVE_POLL_S)
        finally:
            presence[tree_id][name] -= 1

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/feedback-kinds")
def feedback_kinds() -> list[str]:
    return sorted(FEEDBACK)


@router.get("/trees/{tree_id}/agreement")
def agreement(tree_id: str, s: Store = Depends(store)) -> dict:
    return comparison_agreement(s.events(tree_id, kinds=["compare"]))


def comparison_agreement(events: list[dict]) -> dict:
    """How often annotators who compared the same two nodes picked the same one.

    Each annotator's latest decisive judgement (a or b) of a pair counts; ties and "can't tell"
    are left out. Chance agreement for a two-way choice is 0.5, so Cohen's kappa is
    (agreement - 0.5) / 0.5 under balanced labels.
    """
    latest: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    for e in events:
        p = e["payload"]
        counts[e["author"]] += 1
        if p.get("choice") not in ("a", "b"):
            continue
        pair = tuple(sorted((p["a"], p["b"])))
        latest[pair][e["author"]] = p["a"] if p["choice"] == "a" else p["b"]
    pairs: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for winners in latest.values():
        names = sorted(winners)
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                pairs[(x, y)][0] += winners[x] == winners[y]
                pairs[(x, y)][1] += 1
    agree, total = sum(a for a, _ in pairs.values()), sum(n for _, n in pairs.values())
    rate = agree / total if total else None
    return {"annotators": dict(counts), "shared_items": total, "agreement": rate,
            "kappa": (rate - 0.5) / 0.5 if rate is not None else None,
            "pairs": [{"a": x, "b": y, "shared_items": n, "agreement": a / n} for (x, y), (a, n) in sorted(pairs.items())]}


@router.get("/export/{kind}")
def export(kind: str, s: Store = Depends(store), tree: Annotated[list[str] | None, Query()] = None,
           style: str = "alignlab") -> Response:
    """A dataset as JSONL: pairs, rankings, process, steps, thumbs, ratings, stops, spans,
    critiques, demonstrations, edits, or the raw events."""
    from alignlab.data.formats import record_rows
    from alignlab.loom.export import KINDS, event_rows, records

    if tree:
        for t in tree:
            s.tree(t)
    if kind == "events":
        rows = event_rows(s, tree)
    elif kind in KINDS:
        found, _ = records(s, kind, tree)
        try:
            rows = record_rows(found, style)
        except ValueError as err:
            raise Invalid(str(err), field="style") from None
    else:
        raise Invalid(f"unknown export {kind!r}; choose from {', '.join(KINDS)} or events", field="kind")
    body = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    return Response(body, media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="loom-{kind}.jsonl"'})


@router.get("/trees/{tree_id}/loom.json")
def export_loom(tree_id: str, s: Store = Depends(store)) -> Response:
    from alignlab.loom.loomjson import export_tree

    doc = export_tree(s, tree_id)
    return Response(json.dumps(doc, ensure_ascii=False, indent=1), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{tree_id}.json"'})


@router.post("/import/loomsidian", status_code=201)
def import_loomsidian_file(document: Annotated[dict[str, Any], Body()], s: Store = Depends(store),
                           who: str = Depends(author), title: Annotated[str, Query(max_length=500)] = "") -> dict:
    """Trees from Loomsidian (the Obsidian plugin): a note's state, or its data.json (every note);
    one tree per root node."""
    from alignlab.loom.loomjson import import_loomsidian

    return {"trees": import_loomsidian(s, document, who, title=title)}


@router.post("/import/exoloom", status_code=201)
def import_exoloom_file(document: Annotated[dict[str, Any], Body()], s: Store = Depends(store),
                        who: str = Depends(author), title: Annotated[str, Query(max_length=500)] = "") -> dict:
    """A tree from an Exoloom export (schema 1)."""
    from alignlab.loom.loomjson import import_exoloom

    return import_exoloom(s, document, who, title=title)


@router.post("/import", status_code=201)
def import_file(document: Annotated[dict[str, Any], Body()], s: Store = Depends(store), who: str = Depends(author),
                title: Annotated[str, Query(max_length=500)] = "") -> dict:
    """Trees from a Loom, Loomsidian or Exoloom file, told apart by their shape (the page's import)."""
    from alignlab.loom.loomjson import import_any

    return {"trees": import_any(s, document, who, title=title)}


@router.post("/import/loom", status_code=201)
def import_loom(document: Annotated[dict[str, Any], Body()], s: Store = Depends(store), who: str = Depends(author),
                title: Annotated[str, Query(max_length=500)] = "") -> dict:
    from alignlab.loom.loomjson import import_tree

    return import_tree(s, document, who, title=title)
