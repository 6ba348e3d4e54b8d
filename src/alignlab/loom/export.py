"""What the loom recorded, as training data: the feedback records of data/records.py.

- pairs: explicit comparisons (chosen over rejected; "tie" and "can't tell" are left out and
  counted), and each ranking as the pairs it implies (every node over each one ranked below it),
  with the text both options continue as the prompt;
- rankings: each ranking whole;
- process: step-level data. At each branch point, every child the person continued from is
  preferred over each sibling they did not continue from; the shared ancestry is the prompt;
- steps: a node's steps as a person judged them (process supervision): one record per node,
  annotator, split and text as judged, each step's latest label (right, wrong, or null where not
  judged or cleared); what `alignlab prm train` reads;
- thumbs, ratings, stops, highlighted spans, critiques: one record per event;
- demonstrations: text a person wrote or edited (sources 'human' and 'mixed');
- edits: model text and what a person made of it;
- events: the raw log (JSONL), nothing dropped.

Every record carries the node ids and event id in ``meta`` and the event's author as its
annotator, so a dataset can be traced back to the tree and split by annotator.

A judgement's record holds the texts the annotator judged, which the store keeps with the event
(``payload["seen"]``), not the nodes' texts today: edit B after comparing A with B and the pair
still holds the B that was compared. Events recorded before the store kept those texts fall back
to today's text and say so (``meta["text_as_judged"] = False``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alignlab.data.records import (Critique, Demonstration, Edit, FeedbackRecord, PreferencePair, Ranking, Rating,
                                   SpanJudgement, StepLabels, Stop, Thumbs)
from alignlab.data.steps import split_steps
from alignlab.loom.events import FEEDBACK, STEP_LABELS
from alignlab.loom.store import Store, fork

KINDS = ("pairs", "rankings", "process", "steps", "thumbs", "ratings", "stops", "spans", "critiques", "demonstrations",
         "edits")
"""Record sets ``export`` can write (``events`` is the raw log)."""


@dataclass
class Tree:
    """One tree held in memory: its nodes by id and each node's children."""

    nodes: dict[str, dict]
    children: dict[str | None, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, store: Store, tree_id: str) -> Tree:
        rows = store.tree_nodes(tree_id)
        tree = cls({r["id"]: r for r in rows})
        for r in rows:
            tree.children.setdefault(r["parent_id"], []).append(r["id"])
        return tree

    def path(self, node_id: str) -> list[str]:
        out: list[str] = []
        current: str | None = node_id
        while current is not None:
            out.append(current)
            current = self.nodes[current]["parent_id"]
        return out[::-1]

    def text(self, node_id: str | None) -> str:
        return "" if node_id is None else "".join(self.nodes[n]["text"] for n in self.path(node_id))

    def fork(self, ids: list[str]) -> tuple[str, list[str]]:
        """The prompt every node in ``ids`` continues (the text to their deepest common
        ancestor, exclusive of themselves) and each node's text from there."""
        return fork([[self.nodes[n] for n in self.path(i)] for i in ids])

    def judged(self, event: dict, ids: list[str]) -> tuple[str, list[str], bool]:
        """The prompt and texts a comparison or ranking was made on, as the store recorded them
        with the event, and True; for an event recorded before the loom kept them, today's
        texts and False."""
        seen = event["payload"].get("seen")
        if seen is not None:
            return seen["prompt"], list(seen["texts"]), True
        return (*self.fork(ids), False)


def _time(event: dict) -> str:
    return event["created_at"].isoformat()


def _common(event: dict, **meta) -> dict:
    return {"annotator": event["author"], "time": _time(event),
            "meta": {"tree": event["tree_id"], "event": event["id"], **meta}}


def _judged_meta(as_judged: bool) -> dict:
    """Marks a record built from today's text (its event predates the texts the store keeps)."""
    return {} if as_judged else {"text_as_judged": False}


def records(store: Store, kind: str, tree_ids: Iterable[str] | None = None) -> tuple[list[FeedbackRecord], dict]:
    """The records of one set (see ``KINDS``) from the given trees (default: all), and counts
    of what was left out and why."""
    if kind not in KINDS:
        raise ValueError(f"unknown export {kind!r}; choose from {', '.join(KINDS)} or 'events'")
    ids = list(tree_ids) if tree_ids is not None else [t["id"] for t in store.trees(include_archived=True)]
    out: list[FeedbackRecord] = []
    skipped: dict[str, int] = {}
    for tree_id in ids:
        tree = Tree.load(store, tree_id)
        events = store.events(tree_id)
        out += EXPORTERS[kind](tree, events, skipped)
    return out, skipped


def _pairs(tree: Tree, events: list[dict], skipped: dict) -> list[FeedbackRecord]:
    out: list[FeedbackRecord] = []
    for e in events:
        p = e["payload"]
        if e["kind"] == "compare":
            if p["choice"] not in ("a", "b"):
                skipped[p["choice"]] = skipped.get(p["choice"], 0) + 1
                continue
            prompt, (text_a, text_b), as_judged = tree.judged(e, [p["a"], p["b"]])
            chosen, rejected = (p["a"], p["b"]) if p["choice"] == "a" else (p["b"], p["a"])
            good, bad = (text_a, text_b) if p["choice"] == "a" else (text_b, text_a)
            if not good.strip() or not bad.strip():
                skipped["empty text"] = skipped.get("empty text", 0) + 1
                continue
            out.append(PreferencePair(prompt or " ", good, bad, **_common(
                e, chosen_node=chosen, rejected_node=rejected, strength=p["strength"], **_judged_meta(as_judged))))
        elif e["kind"] == "rank":
            order = p["order"]
            prompt, texts, as_judged = tree.judged(e, order)
            for i, better in enumerate(order):
                for j in range(i + 1, len(order)):
                    good, bad = texts[i], texts[j]
                    if good.strip() and bad.strip():
                        out.append(PreferencePair(prompt or " ", good, bad, **_common(
                            e, chosen_node=better, rejected_node=order[j], from_ranking=True,
                            **_judged_meta(as_judged))))
    return out


def _rankings(tree: Tree, events: list[dict], skipped: dict) -> list[FeedbackRecord]:
    out: list[FeedbackRecord] = []
    for e in events:
        if e["kind"] == "rank":
            prompt, texts, as_judged = tree.judged(e, e["payload"]["order"])
            if not all(t.strip() for t in texts):
                skipped["empty text"] = skipped.get("empty text", 0) + 1
                continue
            out.append(Ranking(prompt or " ", texts, list(range(1, len(texts) + 1)),
                               **_common(e, nodes=e["payload"]["order"], **_judged_meta(as_judged))))
    return out


def _process(tree: Tree, events: list[dict], skipped: dict) -> list[FeedbackRecord]:
    continued = {e["node_id"] for e in events if e["kind"] in ("continue", "generate", "write") and e["node_id"]}
    out: list[FeedbackRecord] = []
    for parent, kids in tree.children.items():
        if parent is None or len(kids) < 2:
            continue
        chosen = [k for k in kids if k in continued or tree.children.get(k)]
        rejected = [k for k in kids if k not in chosen]
        prompt = tree.text(parent)
        for good in chosen:
            for bad in rejected:
                g, b = tree.nodes[good], tree.nodes[bad]
                if not g["text"].strip() or not b["text"].strip():
                    skipped["empty text"] = skipped.get("empty text", 0) + 1
                    continue
                out.append(PreferencePair(prompt or " ", g["text"], b["text"], annotator=g["author"],
                                          meta={"tree": g["tree_id"], "branch_point": parent, "chosen_node": good,
                                                "rejected_node": bad, "depth": len(tree.path(parent)),
                                                "rejected_archived": bool(b["archived"])}))
    return out


def step_labels(events: Iterable[dict]) -> dict[tuple[str, str, str, str, str], dict]:
    """The step judgements among ``events``, by (node, annotator, split, prompt and text as judged):
    each step's latest label by its index (True right, False wrong, None cleared), the events
    that gave them, and the last of those. A node edited between judgements has one entry per text."""
    groups: dict[tuple[str, str, str, str, str], dict] = {}
    for e in events:
        if e["kind"] != "step":
            continue
        p = e["payload"]
        key = (e["node_id"], e["author"], p["by"], p["seen"]["prompt"], p["seen"]["text"])
        group = groups.setdefault(key, {"labels": {}, "events": []})
        group["labels"][p["index"]] = STEP_LABELS[p["label"]]
        group["events"].append(e["id"])
        group["last"] = e
    return groups


def _steps(tree: Tree, events: list[dict], skipped: dict) -> list[FeedbackRecord]:
    out: list[FeedbackRecord] = []
    for (node, author, by, prompt, text), group in step_labels(events).items():
        steps = split_steps(text, by)
        labels = [group["labels"].get(i) for i in range(len(steps))]
        if all(label is None for label in labels):
            skipped["every judged step cleared"] = skipped.get("every judged step cleared", 0) + 1
            continue
        last = group["last"]
        out.append(StepLabels(prompt or " ", steps, labels, annotator=author, time=_time(last),
                              meta={"tree": last["tree_id"], "event": last["id"], "events": group["events"],
                                    "node": node, "split_by": by}))
    return out


def _per_node(make):
    def export(tree: Tree, events: list[dict], skipped: dict) -> list[FeedbackRecord]:
        out = []
        for e in events:
            node_id = e["node_id"]
            if node_id is None or node_id not in tree.nodes:
                continue
            node = tree.nodes[node_id]
            seen = e["payload"].get("seen")
            if seen is not None:  # the text judged, not today's (edits since do not change the record)
                prompt, node = seen["prompt"] or " ", {**node, "text": seen["text"]}
            else:
                prompt = tree.text(node["parent_id"]) or " "
            if not node["text"].strip():
                skipped["empty text"] = skipped.get("empty text", 0) + 1
                continue
            try:
                record = make(e, prompt, node)
            except ValueError as err:  # e.g. a highlight past the end of text edited since
                skipped[str(err)[:80]] = skipped.get(str(err)[:80], 0) + 1
                continue
            if record is not None:
                if seen is None and e["kind"] in FEEDBACK:
                    record.meta.update(_judged_meta(False))
                out.append(record)
        return out
    return export


def _thumb(e, prompt, node):
    if e["kind"] == "thumb":
        return Thumbs(prompt, node["text"], e["payload"]["value"] == "up", **_common(e, node=node["id"]))


def _rating(e, prompt, node):
    if e["kind"] == "rating":
        p = e["payload"]
        return Rating(prompt, node["text"], p["value"], p["scale_min"], p["scale_max"], **_common(e, node=node["id"]))


def _stop(e, prompt, node):
    if e["kind"] == "stop":
        return Stop(prompt, node["text"], min(e["payload"]["char"], len(node["text"])), **_common(
            e, node=node["id"], token_index=e["payload"]["token_index"]))


def _span(e, prompt, node):
    if e["kind"] == "highlight":
        p = e["payload"]
        return SpanJudgement(prompt, node["text"], p["start"], p["end"], p["label"], **_common(e, node=node["id"]))


def _critique(e, prompt, node):
    if e["kind"] == "critique":
        return Critique(prompt, node["text"], e["payload"]["text"], **_common(e, node=node["id"]))


def _edit(e, prompt, node):
    p = e["payload"]
    if e["kind"] == "edit" and p.get("source_before") in ("model", "mixed") and p["before"].strip() and p["after"].strip():
        return Edit(prompt, p["before"], p["after"], **_common(e, node=node["id"]))


def _demonstrations(tree: Tree, events: list[dict], skipped: dict) -> list[FeedbackRecord]:
    out: list[FeedbackRecord] = []
    for node in tree.nodes.values():
        if node["parent_id"] is None or node["source"] not in ("human", "mixed") or node["archived"]:
            continue
        if not node["text"].strip():
            skipped["empty text"] = skipped.get("empty text", 0) + 1
            continue
        out.append(Demonstration(tree.text(node["parent_id"]) or " ", node["text"], annotator=node["author"],
                                 time=node["updated_at"].isoformat(),
                                 meta={"tree": node["tree_id"], "node": node["id"], "source": node["source"]}))
    return out


EXPORTERS = {"pairs": _pairs, "rankings": _rankings, "process": _process, "steps": _steps,
             "thumbs": _per_node(_thumb), "ratings": _per_node(_rating), "stops": _per_node(_stop),
             "spans": _per_node(_span), "critiques": _per_node(_critique), "demonstrations": _demonstrations,
             "edits": _per_node(_edit)}


def event_rows(store: Store, tree_ids: Iterable[str] | None = None) -> list[dict]:
    """The raw log as JSON-ready rows."""
    ids = None if tree_ids is None else set(tree_ids)
    return [{**e, "created_at": _time(e)} for e in store.events() if ids is None or e["tree_id"] in ids]


def write_events(path: Path, rows: list[dict]) -> None:
    """The raw log as JSONL, written atomically."""
    from alignlab.fileio import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
