"""Exports of what the loom recorded, and the original Loom's JSON format in and out."""

from __future__ import annotations

import json

import pytest

from alignlab.data.records import (Critique, Demonstration, Edit, PreferencePair, Ranking, Rating, SpanJudgement,
                                   StepLabels, Stop, Thumbs)
from alignlab.loom.events import Invalid
from alignlab.loom.export import KINDS, records


@pytest.fixture
def session(store):
    """A small curation session: a branch point, a comparison, a ranking, every explicit kind."""
    tree = store.create_tree("Write a poem about rain.\n", "ada")
    root = tree["root_id"]
    a, b, c = store.add_nodes(root, [{"text": "Rain taps the roof."}, {"text": "It is wet."}, {"text": "Clouds."}], "ada")
    store.record(tree["id"], "continue", {}, "ada", node_id=a["id"], explicit_only=False)
    deeper = store.add_nodes(a["id"], [{"text": " Soft and slow."}], "ada")[0]
    store.record(tree["id"], "compare", {"a": a["id"], "b": b["id"], "choice": "a", "strength": 0.7}, "ada")
    store.record(tree["id"], "compare", {"a": a["id"], "b": c["id"], "choice": "cant_tell"}, "ada")
    store.record(tree["id"], "rank", {"order": [a["id"], c["id"], b["id"]]}, "bob")
    store.record(tree["id"], "thumb", {"value": "down"}, "bob", node_id=b["id"])
    store.record(tree["id"], "rating", {"value": 6, "scale_min": 1, "scale_max": 7}, "bob", node_id=a["id"])
    store.record(tree["id"], "stop", {"token_index": 1, "char": 4}, "ada", node_id=c["id"])
    store.record(tree["id"], "highlight", {"start": 0, "end": 4, "label": "good"}, "ada", node_id=a["id"])
    store.record(tree["id"], "critique", {"text": "too flat"}, "ada", node_id=b["id"])
    store.record(tree["id"], "step", {"by": "sentences", "index": 0, "label": "right"}, "ada", node_id=a["id"])
    store.edit(deeper["id"], " Soft, and slow.", "ada")
    typed = store.add_nodes(root, [{"text": "Drops on glass.", "source": "human"}], "bob", kind="write")[0]
    return store, tree, {"a": a, "b": b, "c": c, "deeper": deeper, "typed": typed}


def test_pairs_from_comparisons_and_rankings(session):
    store, tree, n = session
    pairs, skipped = records(store, "pairs")
    assert skipped == {"cant_tell": 1}
    first = pairs[0]
    assert isinstance(first, PreferencePair)
    assert (first.prompt, first.chosen, first.rejected) == ("Write a poem about rain.\n", "Rain taps the roof.", "It is wet.")
    assert first.annotator == "ada" and first.meta["strength"] == 0.7 and first.meta["chosen_node"] == n["a"]["id"]
    from_ranking = [(p.chosen, p.rejected) for p in pairs if p.meta.get("from_ranking")]
    assert from_ranking == [("Rain taps the roof.", "Clouds."), ("Rain taps the roof.", "It is wet."),
                            ("Clouds.", "It is wet.")]
    rankings, _ = records(store, "rankings")
    assert isinstance(rankings[0], Ranking) and rankings[0].ranks == [1, 2, 3] and rankings[0].annotator == "bob"


def test_process_data_prefers_the_continued_child_at_each_branch_point(session):
    store, tree, n = session
    pairs, _ = records(store, "process")
    got = {(p.chosen, p.rejected) for p in pairs}
    # a was continued from (it has a child); b, c and the typed sibling were not
    assert got == {("Rain taps the roof.", "It is wet."), ("Rain taps the roof.", "Clouds."),
                   ("Rain taps the roof.", "Drops on glass.")}
    assert all(p.prompt == "Write a poem about rain.\n" and p.meta["branch_point"] == tree["root_id"] for p in pairs)


def test_every_per_node_kind(session):
    store, tree, n = session
    (thumb,), _ = records(store, "thumbs")
    assert isinstance(thumb, Thumbs) and thumb.label is False and thumb.completion == "It is wet."
    (rating,), _ = records(store, "ratings")
    assert isinstance(rating, Rating) and rating.score == 6
    (stop,), _ = records(store, "stops")
    assert isinstance(stop, Stop) and stop.stop_char == 4 and stop.meta["token_index"] == 1
    (span,), _ = records(store, "spans")
    assert isinstance(span, SpanJudgement) and (span.start, span.end, span.label) == (0, 4, "good")
    (critique,), _ = records(store, "critiques")
    assert isinstance(critique, Critique) and critique.text == "too flat"
    (edit,), _ = records(store, "edits")
    assert isinstance(edit, Edit) and (edit.before, edit.after) == (" Soft and slow.", " Soft, and slow.")
    assert edit.prompt == "Write a poem about rain.\nRain taps the roof."
    demos, _ = records(store, "demonstrations")
    assert {d.completion for d in demos} == {"Drops on glass.", " Soft, and slow."}
    assert all(isinstance(d, Demonstration) for d in demos)
    for kind in KINDS:  # every set writes and reads back through the ordinary feedback files
        found, _ = records(store, kind)
        assert found, kind


def test_step_judgements_export_as_step_labels_each_step_s_latest_label_unjudged_null(store):
    tree = store.create_tree("Add 2 and 3, then double it.\n", "ada")
    node = store.add_nodes(tree["root_id"], [{"text": "2 + 3 = 5.\nDouble 5 is 12.\nSo the answer is 12."}], "ada")[0]
    judge = lambda who, index, label, by="lines": store.record(  # noqa: E731
        tree["id"], "step", {"by": by, "index": index, "label": label}, who, node_id=node["id"])
    event = judge("ada", 0, "right")
    assert event["payload"] == {"by": "lines", "index": 0, "label": "right", "steps": 3, "step": "2 + 3 = 5.\n",
                                "seen": {"prompt": "Add 2 and 3, then double it.\n", "text": node["text"]}}
    judge("ada", 1, "right")
    judge("ada", 1, "wrong")  # changed her mind: the latest label holds
    judge("ada", 2, "wrong")
    judge("ada", 2, "clear")  # taken back: not judged
    judge("bob", 0, "wrong", by="sentences")  # another annotator, another split: a record of its own
    (ada, bob), skipped = records(store, "steps", [tree["id"]])
    assert skipped == {}
    assert isinstance(ada, StepLabels) and ada.annotator == "ada"
    assert ada.prompt == "Add 2 and 3, then double it.\n"
    assert ada.completions == ["2 + 3 = 5.\n", "Double 5 is 12.\n", "So the answer is 12."]
    assert ada.labels == [True, False, None]
    assert "".join(ada.completions) == node["text"]  # lossless: the steps are the node's text
    assert ada.meta["node"] == node["id"] and ada.meta["split_by"] == "lines" and len(ada.meta["events"]) == 5
    assert (bob.annotator, bob.labels, bob.meta["split_by"]) == ("bob", [False, None, None], "sentences")

    # An edit after judging: the record keeps the text judged; judging the new text makes another.
    judge("bob", 0, "clear", by="sentences")  # every judged step cleared: nothing to export, counted
    store.edit(node["id"], "2 + 3 = 5.\nDouble 5 is 10.", "ada")
    judge("ada", 1, "right")
    found, skipped = records(store, "steps", [tree["id"]])
    assert [(r.annotator, r.completions, r.labels) for r in found] == [
        ("ada", ["2 + 3 = 5.\n", "Double 5 is 12.\n", "So the answer is 12."], [True, False, None]),
        ("ada", ["2 + 3 = 5.\n", "Double 5 is 10."], [None, True])]
    assert skipped == {"every judged step cleared": 1}


def test_bad_step_judgements_are_refused_naming_the_field(store):
    tree = store.create_tree("Q\n", "ada")
    node = store.add_nodes(tree["root_id"], [{"text": "One.\nTwo."}], "ada")[0]
    empty = store.add_nodes(tree["root_id"], [{"text": ""}], "ada")[0]
    cases = [({"index": 2, "label": "right"}, node, "index", r"'index' is 2; split by lines the node has 2 steps \(0..1\)"),
             ({"index": -1, "label": "right"}, node, "index", "'index' must be a step number"),
             ({"index": True, "label": "right"}, node, "index", "'index' must be a step number"),
             ({"index": 0, "label": "maybe"}, node, "label", "'right', 'wrong' or 'clear'"),
             ({"index": 0, "label": ["right"]}, node, "label", "'right', 'wrong' or 'clear'"),
             ({"index": 0, "label": "right", "by": ["lines"]}, node, "by", "lines, sentences, paragraphs"),
             ({"index": 0, "label": "right", "by": "marks"}, node, "by", "lines, sentences, paragraphs"),
             ({"index": 0, "label": "right"}, None, "node_id", "give 'node_id'"),
             ({"index": 0, "label": "right"}, empty, "node_id", "no steps to judge")]
    for payload, on, field, message in cases:
        with pytest.raises(Invalid, match=message) as err:
            store.record(tree["id"], "step", payload, "ada", node_id=on and on["id"])
        assert err.value.field == field
    assert store.events(tree["id"], kinds=["step"]) == []


def test_exported_steps_are_what_prm_train_reads(store, tmp_path):
    from alignlab.data.formats import write_feedback
    from alignlab.train.prm import read_steps

    tree = store.create_tree("Q\n", "ada")
    node = store.add_nodes(tree["root_id"], [{"text": "One.\nTwo.\nThree."}], "ada")[0]
    for index, label in ((0, "right"), (1, "wrong")):
        store.record(tree["id"], "step", {"index": index, "label": label}, "ada", node_id=node["id"])
    found, _ = records(store, "steps")
    write_feedback(tmp_path / "steps.jsonl", found)
    (back,) = read_steps(str(tmp_path / "steps.jsonl"))
    assert (back.prompt, back.completions, back.labels) == ("Q\n", ["One.\n", "Two.\n", "Three."], [True, False, None])
    assert back.annotator == "ada" and back.meta["node"] == node["id"]
    # TRL's stepwise layout cannot hold the unjudged step: refused, saying what to do
    with pytest.raises(ValueError, match="unjudged steps"):
        write_feedback(tmp_path / "trl.jsonl", found, style="trl")


def test_exports_hold_the_text_that_was_judged_not_the_text_edited_since(store):
    # Compare A and B, then edit B, the prompt and A: the exported pair once held text nobody saw.
    tree = store.create_tree("Write about rain.\n", "ada")
    root = tree["root_id"]
    a, b = store.add_nodes(root, [{"text": "Rain taps the roof."}, {"text": "It is wet."}], "ada")
    store.record(tree["id"], "compare", {"a": a["id"], "b": b["id"], "choice": "b"}, "ada")
    store.record(tree["id"], "rank", {"order": [b["id"], a["id"]]}, "ada")
    for kind, payload in [("thumb", {"value": "up"}), ("rating", {"value": 5}), ("critique", {"text": "plain"}),
                          ("stop", {"token_index": 1, "char": 3}), ("highlight", {"start": 0, "end": 2, "label": "bad"})]:
        store.record(tree["id"], kind, payload, "ada", node_id=b["id"])
    store.edit(b["id"], "It is wet, and the roof sings.", "bob")
    store.edit(a["id"], "Rain.", "bob")
    store.edit(root, "Write about snow.\n", "bob")
    store.split(b["id"], 6, "bob")  # structure changes too: B's text now spans two nodes

    pairs, _ = records(store, "pairs", [tree["id"]])
    (pair,) = [p for p in pairs if not p.meta.get("from_ranking")]
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Write about rain.\n", "It is wet.", "Rain taps the roof.")
    assert "text_as_judged" not in pair.meta
    (ranking,), _ = records(store, "rankings", [tree["id"]])
    assert ranking.responses == ["It is wet.", "Rain taps the roof."]
    for kind in ("thumbs", "ratings", "critiques", "stops", "spans"):
        (record,), _ = records(store, kind, [tree["id"]])
        assert (record.prompt, record.completion) == ("Write about rain.\n", "It is wet."), kind
    # the raw log keeps them too, with the event
    compare = store.events(tree["id"], kinds=["compare"])[0]
    assert compare["payload"]["seen"] == {"prompt": "Write about rain.\n", "texts": ["Rain taps the roof.", "It is wet."]}


def test_events_from_before_the_store_kept_the_judged_text_are_exported_and_marked(store):
    tree = store.create_tree("Q\n", "ada")
    a, b = store.add_nodes(tree["root_id"], [{"text": "one"}, {"text": "two"}], "ada")
    with store.engine.begin() as c:  # as an older loom wrote them: no "seen" in the payload
        store._event(c, tree["id"], None, "compare", "ada", {"a": a["id"], "b": b["id"], "choice": "a", "strength": 1.0})
        store._event(c, tree["id"], a["id"], "thumb", "ada", {"value": "up"})
    (pair,), _ = records(store, "pairs", [tree["id"]])
    assert (pair.chosen, pair.rejected) == ("one", "two") and pair.meta["text_as_judged"] is False
    (up,), _ = records(store, "thumbs", [tree["id"]])
    assert up.completion == "one" and up.meta["text_as_judged"] is False


def test_exported_files_read_back_as_feedback(session, tmp_path):
    from alignlab.data.formats import read_feedback, write_feedback

    store, _, _ = session
    for kind in KINDS:
        found, _ = records(store, kind)
        path = tmp_path / f"{kind}.jsonl"
        write_feedback(path, found)
        back = read_feedback(path).records
        assert [r.to_dict() for r in back] == [r.to_dict() for r in found], kind


LOOM_FILE = {
    "root": {
        "id": "r", "text": "Once", "mutable": False, "visited": True, "meta": {"source": "prompt"},
        "children": [
            {"id": "c1", "text": " upon", "parent_id": "r", "tags": ["demo"], "chapter_id": "x1",
             "meta": {"source": "AI", "modified": False},
             "children": [{"id": "g1", "text": " a time", "parent_id": "c1", "meta": {"source": "mixed"},
                           "children": []}]},
            {"id": "c2", "text": " more", "parent_id": "r", "children": [], "open": 0},
            {"id": "c3", "text": " I wrote", "parent_id": "r", "meta": {"source": "human"}, "children": []},
        ],
    },
    "chapters": {"x1": {"title": "one"}},
    "canonical": ["r", "c1"],
}


def test_loom_json_import_keeps_structure_sources_tags_and_export_gives_the_file_back(store):
    from alignlab.loom.loomjson import export_tree, import_tree

    tree = import_tree(store, json.loads(json.dumps(LOOM_FILE)), "ada")
    nodes = {n["meta"]["loom"]["id"]: n for n in store.tree_nodes(tree["id"])}
    assert {k: v["source"] for k, v in nodes.items()} == {"r": "prompt", "c1": "model", "g1": "mixed", "c2": "model",
                                                          "c3": "human"}
    assert nodes["c1"]["tags"] == ["demo"] and store.text_of(nodes["g1"]["id"]) == "Once upon a time"
    assert export_tree(store, tree["id"]) == LOOM_FILE


def test_our_trees_round_trip_through_loom_json(session):
    from alignlab.loom.loomjson import export_tree, import_tree

    store, tree, n = session
    store.tag(n["a"]["id"], "good", "ada")
    doc = export_tree(store, tree["id"])
    assert doc["root"]["meta"]["source"] == "prompt"
    again = import_tree(store, json.loads(json.dumps(doc)), "ada")

    def shape(tree_id):
        nodes = store.tree_nodes(tree_id)
        by_id = {x["id"]: x for x in nodes}

        def walk(node):
            kids = [x for x in nodes if x["parent_id"] == node["id"]]
            return (node["text"], node["source"], tuple(node["tags"]), tuple(walk(k) for k in kids))
        return walk(next(x for x in by_id.values() if x["parent_id"] is None))

    assert shape(again["id"]) == shape(tree["id"])
    assert export_tree(store, again["id"]) == doc


def test_bad_loom_files_name_the_problem(store, tmp_path):
    from alignlab.loom.events import Invalid
    from alignlab.loom.loomjson import import_tree, read_loom_file

    bad = tmp_path / "bad.json"
    bad.write_text('{"root": {"text": "a",\n "children": [1]}}')
    with pytest.raises(Invalid, match=r"root.children\[0\]: a node must be an object"):
        import_tree(store, read_loom_file(bad), "ada")
    bad.write_text("{\n oops")
    with pytest.raises(Invalid, match=r"bad.json: line 2: not JSON"):
        read_loom_file(bad)
    assert store.trees() == []  # nothing half-imported
