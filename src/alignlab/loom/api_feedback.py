"""Routes for feedback events, agreement between annotators, exports and Loom JSON interop."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response
from pydantic import Field

from alignlab.loom.api_trees import Strict, author, store
from alignlab.loom.events import FEEDBACK, Invalid
from alignlab.loom.store import Store

router = APIRouter()


class Feedback(Strict):
    kind: Annotated[str, Field(min_length=1, max_length=32)]
    node_id: Annotated[str, Field(max_length=26)] | None = None
    payload: dict[str, Any] = {}


@router.post("/trees/{tree_id}/feedback", status_code=201)
def give_feedback(tree_id: str, body: Feedback, s: Store = Depends(store), who: str = Depends(author)) -> dict:
    """Record one explicit judgement: compare, rank, thumb, rating, stop, highlight or critique."""
    return s.record(tree_id, body.kind, body.payload, who, node_id=body.node_id)


@router.get("/trees/{tree_id}/events")
def list_events(tree_id: str, s: Store = Depends(store),
                kind: Annotated[list[str] | None, Query()] = None, annotator: str | None = None) -> list[dict]:
    s.tree(tree_id)
    return s.events(tree_id, kinds=kind, author=annotator)


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
    """A dataset as JSONL: pairs, process, thumbs, ratings, stops, spans, critiques,
    demonstrations, edits, or the raw events."""
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


@router.post("/import/loom", status_code=201)
def import_loom(document: Annotated[dict[str, Any], Body()], s: Store = Depends(store), who: str = Depends(author),
                title: Annotated[str, Query(max_length=500)] = "") -> dict:
    from alignlab.loom.loomjson import import_tree

    return import_tree(s, document, who, title=title)
