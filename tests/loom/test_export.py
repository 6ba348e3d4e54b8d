"""Exports of what the loom recorded, and the original Loom's JSON format in and out."""

from __future__ import annotations

import json

import pytest

from alignlab.data.records import Critique, Demonstration, Edit, PreferencePair, Ranking, Rating, SpanJudgement, Stop, Thumbs
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
