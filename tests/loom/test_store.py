"""The loom's store on SQLite and PostgreSQL: schema, trees, edits, events, bits, concurrency."""

from __future__ import annotations

import math
import threading

import pytest
import sqlalchemy as sa

from alignlab.loom.events import Conflict, Invalid, NotFound
from alignlab.loom.ids import id_time, new_id

EXPECTED = {
    "trees": ["id", "title", "author", "settings", "archived", "meta", "created_at", "updated_at"],
    "nodes": ["id", "tree_id", "parent_id", "text", "source", "author", "model", "settings", "seed", "steering",
              "tokens", "finish_reason", "intervention_bits", "archived", "bookmarked", "note", "meta",
              "created_at", "updated_at"],
    "revisions": ["id", "node_id", "text", "source", "tokens", "author", "created_at"],
    "tags": ["node_id", "tag"],
    "events": ["id", "tree_id", "node_id", "kind", "author", "payload", "created_at"],
    "jobs": ["id", "kind", "state", "progress", "message", "config", "result", "author", "created_at", "updated_at"],
    "models": ["name", "kind", "author", "created_at"],
    "presets": ["name", "settings", "author", "created_at", "updated_at"],
}
INDEXES = {"nodes": {("tree_id",), ("parent_id",)}, "revisions": {("node_id",)}, "tags": {("tag",)},
           "events": {("tree_id", "kind"), ("node_id",)}}


def test_a_fresh_database_has_exactly_the_schema_of_the_migrations_and_the_code(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from alignlab.loom.schema import metadata

    inspector = sa.inspect(store.engine)
    tables = set(inspector.get_table_names())
    assert tables == set(EXPECTED) | {"alembic_version"}
    for table, columns in EXPECTED.items():
        assert [c["name"] for c in inspector.get_columns(table)] == columns, table
        indexes = {tuple(i["column_names"]) for i in inspector.get_indexes(table)}
        assert indexes == INDEXES.get(table, set()), table
    assert inspector.get_pk_constraint("tags")["constrained_columns"] == ["node_id", "tag"]
    fks = {(f["constrained_columns"][0], f["referred_table"]) for f in inspector.get_foreign_keys("nodes")}
    assert fks == {("tree_id", "trees"), ("parent_id", "nodes")}
    with store.engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0004_presets"
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    assert diff == []  # the migrations build what schema.py declares


def test_opening_again_migrates_nothing_and_keeps_the_data(db_url, tmp_path):
    from alignlab.loom.store import Store

    first = Store.open(db_url, tmp_path)
    tree = first.create_tree("Once upon a time", "ada")
    first.close()
    again = Store.open(db_url, tmp_path)
    assert again.tree(tree["id"])["title"] == "Once upon a time"
    again.close()


def test_a_database_from_before_process_models_upgrades_keeping_its_models(db_url):
    from alembic import command
    from alembic.config import Config

    from alignlab.loom.store import MIGRATIONS, Store, make_engine

    engine = make_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as c:
        config.attributes["connection"] = c
        command.upgrade(config, "0002_models")
    old = Store(engine)
    old.keep_model("/models/rm", "reward", "ada")
    with pytest.raises(sa.exc.IntegrityError):  # what 0003 is for
        old.keep_model("/models/prm", "process", "ada")
    with engine.begin() as c:
        config.attributes["connection"] = c
        command.upgrade(config, "head")
    new = Store(engine)
    new.keep_model("/models/prm", "process", "ada")
    assert [(m["name"], m["kind"]) for m in new.models()] == [("/models/rm", "reward"), ("/models/prm", "process")]
    with pytest.raises(sa.exc.IntegrityError):
        new.keep_model("/models/x", "nonsense", "ada")
    engine.dispose()


def test_ids_sort_by_creation_time():
    ids = [new_id() for _ in range(200)]
    assert ids == sorted(ids) and len(set(ids)) == 200
    assert all(len(i) == 26 for i in ids)
    assert abs(id_time(ids[0]) - __import__("time").time()) < 5


def test_tree_nodes_children_ancestry_and_text(store):
    tree = store.create_tree("The door", "ada", settings={"temperature": 0.8})
    root = tree["root_id"]
    a, b = store.add_nodes(root, [{"text": " opened."}, {"text": " stayed shut."}], "ada")
    c = store.add_nodes(a["id"], [{"text": " Light.", "source": "human"}], "bob", kind="write")[0]
    assert [n["id"] for n in store.children(root)] == [a["id"], b["id"]]
    assert store.text_of(c["id"]) == "The door opened. Light."
    assert [n["id"] for n in store.ancestry(c["id"])] == [root, a["id"], c["id"]]
    assert store.node(root)["children_count"] == 2
    assert store.tree(tree["id"])["settings"] == {"temperature": 0.8}
    listed = store.trees()
    assert listed[0]["id"] == tree["id"] and listed[0]["nodes"] == 4 and listed[0]["root_id"] == root
    kinds = [e["kind"] for e in store.events(tree["id"])]
    assert kinds == ["create_tree", "generate", "write"]
    with pytest.raises(NotFound, match="no node"):
        store.children("nope")
    with pytest.raises(Invalid, match="source"):
        store.add_nodes(root, [{"text": "x", "source": "robot"}], "ada")
    assert len(store.children(root)) == 2  # the failed insert left nothing behind


def test_edit_keeps_revisions_and_makes_model_text_mixed(store):
    tree = store.create_tree("Hello", "ada")
    node = store.add_nodes(tree["root_id"], [{"text": " world", "tokens": [{"text": " world", "logprob": -1.0}]}],
                           "ada")[0]
    edited = store.edit(node["id"], " there, world", "bob")
    assert edited["source"] == "mixed" and edited["tokens"] is None
    revisions = store.revisions(node["id"])
    assert [r["text"] for r in revisions] == [" world"] and revisions[0]["source"] == "model"
    event = store.events(tree["id"], kinds=["edit"])[0]
    assert event["payload"] == {"before": " world", "after": " there, world", "source_before": "model"}
    assert event["author"] == "bob"


def test_saving_a_node_with_its_own_text_returns_at_once_and_records_nothing(store):
    # A no-op save once opened a second connection inside its own write transaction: on SQLite it
    # waited 30 s for its own lock and failed with "database is locked".
    tree = store.create_tree("Hello", "ada")
    node = store.add_nodes(tree["root_id"], [{"text": " world"}], "ada")[0]
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(node=store.edit(node["id"], " world", "bob")))
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "a no-op edit hung (a second connection waiting for the first's lock)"
    assert result["node"]["text"] == " world" and result["node"]["source"] == node["source"]
    assert store.revisions(node["id"]) == [] and store.events(tree["id"], kinds=["edit"]) == []
    store.add_nodes(node["id"], [{"text": "!"}], "ada")  # the store still takes writes


def test_split_and_merge_round_trip(store):
    tree = store.create_tree("A", "ada")
    tokens = [{"text": " one", "logprob": -1.0}, {"text": " two", "logprob": -2.0}]
    node = store.add_nodes(tree["root_id"], [{"text": " one two", "tokens": tokens}], "ada")[0]
    kid = store.add_nodes(node["id"], [{"text": " three"}], "ada")[0]
    tail = store.split(node["id"], 4, "ada")
    assert store.node(node["id"])["text"] == " one" and tail["text"] == " two"
    assert store.node(node["id"])["tokens"] == tokens[:1] and tail["tokens"] == tokens[1:]
    assert store.node(kid["id"])["parent_id"] == tail["id"]
    assert store.text_of(kid["id"]) == "A one two three"
    merged = store.merge(node["id"], "ada")
    assert merged["text"] == " one two" and merged["tokens"] == tokens
    assert store.node(kid["id"])["parent_id"] == node["id"]
    assert store.node(tail["id"])["archived"] is True
    with pytest.raises(Invalid, match="cut inside"):
        store.split(node["id"], 0, "ada")
    store.add_nodes(node["id"], [{"text": " four"}], "ada")
    with pytest.raises(Conflict, match="exactly one"):
        store.merge(node["id"], "ada")


def test_flags_tags_notes_search(store):
    tree = store.create_tree("Cats and dogs", "ada")
    node = store.add_nodes(tree["root_id"], [{"text": " 100% of cats_sleep"}], "ada")[0]
    assert store.set_flag(node["id"], "bookmarked", True, "ada")["bookmarked"] is True
    assert store.set_flag(node["id"], "archived", True, "ada")["archived"] is True
    assert store.children(tree["root_id"]) == [] and len(store.children(tree["root_id"], include_archived=True)) == 1
    with pytest.raises(Conflict, match="root"):
        store.set_flag(tree["root_id"], "archived", True, "ada")
    assert store.tag(node["id"], "funny", "ada")["tags"] == ["funny"]
    assert store.tag(node["id"], "funny", "ada", remove=True)["tags"] == []
    assert store.set_note(node["id"], "check this", "ada")["note"] == "check this"
    assert [n["id"] for n in store.search(tree["id"], "CATS_")] == [node["id"]]
    assert [n["id"] for n in store.search(tree["id"], "100%")] == [node["id"]]
    assert store.search(tree["id"], "1_0") == []  # LIKE wildcards are escaped
    kinds = [e["kind"] for e in store.events(tree["id"])]
    assert kinds == ["create_tree", "generate", "bookmark", "archive", "tag", "untag", "note"]


def test_feedback_is_validated_and_the_log_is_append_only(store):
    tree = store.create_tree("Q", "ada")
    a, b = store.add_nodes(tree["root_id"], [{"text": " yes"}, {"text": " no"}], "ada")
    event = store.record(tree["id"], "compare", {"a": a["id"], "b": b["id"], "choice": "a"}, "ada")
    assert event["payload"] == {"a": a["id"], "b": b["id"], "choice": "a", "strength": 1.0,
                                "seen": {"prompt": "Q", "texts": [" yes", " no"]}}  # the texts judged
    with pytest.raises(Invalid, match="'choice'"):
        store.record(tree["id"], "compare", {"a": a["id"], "b": b["id"], "choice": "maybe"}, "ada")
    with pytest.raises(Invalid, match="'b' must be the id of a node of this tree"):
        store.record(tree["id"], "compare", {"a": a["id"], "b": "elsewhere", "choice": "a"}, "ada")
    with pytest.raises(Invalid, match="unknown feedback kind"):
        store.record(tree["id"], "generate", {}, "ada")
    with pytest.raises(Invalid, match="'value'"):
        store.record(tree["id"], "rating", {"value": 9}, "ada", node_id=a["id"])
    other = store.create_tree("Other", "ada")
    with pytest.raises(Invalid, match="not a node of tree"):
        store.record(other["id"], "thumb", {"value": "up"}, "ada", node_id=a["id"])
    count = store.count_events()
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with store.engine.begin() as c:
            c.execute(sa.text("UPDATE events SET kind = 'x'"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with store.engine.begin() as c:
            c.execute(sa.text("DELETE FROM events"))
    assert store.count_events() == count


def test_selection_and_intervention_bits_along_a_path(store):
    tree = store.create_tree("P", "ada")
    kids = store.add_nodes(tree["root_id"], [{"text": f" {i}"} for i in range(4)], "ada")
    grand = store.add_nodes(kids[0]["id"], [{"text": " x"}, {"text": " y"}], "ada")
    typed = store.add_nodes(grand[1]["id"], [{"text": " mine", "source": "human", "intervention_bits": 7.5}], "ada",
                            kind="write")[0]
    path = store.pressure(typed["id"])
    assert [p["selection_bits"] for p in path] == [0.0, 2.0, 1.0, 0.0]
    assert [p["intervention_bits"] for p in path] == [0.0, 0.0, 0.0, 7.5]
    assert path[-1]["selection_total"] == pytest.approx(3.0) and path[-1]["intervention_total"] == 7.5
    assert math.isclose(store.pressure(kids[0]["id"])[-1]["selection_total"], 2.0)


def test_twenty_concurrent_writers_lose_no_event(store):
    tree = store.create_tree("Concurrent", "ada")
    a, b = store.add_nodes(tree["root_id"], [{"text": " a"}, {"text": " b"}], "ada")
    before = store.count_events()
    errors = []

    def write(k: int) -> None:
        try:
            for i in range(10):
                store.record(tree["id"], "compare", {"a": a["id"], "b": b["id"], "choice": "ab"[i % 2]}, f"user{k}")
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert store.count_events() == before + 200
    assert len({e["author"] for e in store.events(tree["id"], kinds=["compare"])}) == 20


def test_a_node_moves_with_its_subtree_within_its_tree_and_never_under_itself(store):
    from alignlab.loom.events import Conflict, Invalid

    tree = store.create_tree("Once", "ann")
    a, b = store.add_nodes(tree["root_id"], [{"text": " a"}, {"text": " b"}], "ann")
    (a1,) = store.add_nodes(a["id"], [{"text": " a1"}], "ann")
    moved = store.move(a["id"], b["id"], "ann")
    assert moved["parent_id"] == b["id"] and store.node(a1["id"])["parent_id"] == a["id"]
    assert store.text_of(a1["id"]) == "Once b a a1"
    (event,) = store.events(tree["id"], kinds=["move"])
    assert event["payload"] == {"from": tree["root_id"], "to": b["id"]} and event["author"] == "ann"
    with pytest.raises(Invalid, match="own subtree"):
        store.move(a["id"], a1["id"], "ann")
    with pytest.raises(Invalid, match="own subtree"):
        store.move(a["id"], a["id"], "ann")
    with pytest.raises(Conflict, match="root"):
        store.move(tree["root_id"], a["id"], "ann")
    other = store.create_tree("Elsewhere", "ann")
    with pytest.raises(Invalid, match="another tree"):
        store.move(a["id"], other["root_id"], "ann")
    assert store.node(a["id"])["parent_id"] == b["id"]  # refused moves changed nothing
    assert len(store.events(tree["id"], kinds=["move"])) == 1


def test_loomsidian_notes_import_as_trees_with_their_text_structure_and_fields(store):
    from alignlab.loom.events import Invalid
    from alignlab.loom.loomjson import import_loomsidian

    note = {"current": "c", "hoisted": [], "searchTerm": "", "generating": None, "nodes": {
        "r": {"text": "Once upon a time", "parentId": None, "collapsed": False, "unread": False, "bookmarked": False},
        "a": {"text": " there was", "parentId": "r", "collapsed": False, "unread": True, "bookmarked": True,
              "lastVisited": 1700000000000},
        "b": {"text": " a fox", "parentId": "a", "collapsed": False, "unread": False, "bookmarked": False},
        "c": {"text": " the sea", "parentId": "r", "collapsed": True, "unread": False, "bookmarked": False}}}
    data = {"settings": {"n": 3}, "state": {"stories/fox.md": note, "other.md": {
        "current": "x", "hoisted": [], "nodes": {"x": {"text": "One", "parentId": None},
                                                 "y": {"text": "Two", "parentId": None}}}}}
    trees = import_loomsidian(store, data, "ann")
    assert [t["title"] for t in trees] == ["fox", "other (1 of 2)", "other (2 of 2)"]
    nodes = {n["meta"]["loomsidian"]["id"]: n for n in store.tree_nodes(trees[0]["id"])}
    assert store.text_of(nodes["b"]["id"]) == "Once upon a time there was a fox"
    assert nodes["r"]["source"] == "prompt" and nodes["a"]["source"] == "model"
    assert nodes["a"]["meta"]["loomsidian"]["bookmarked"] is True and nodes["c"]["parent_id"] == nodes["r"]["id"]
    assert store.tree(trees[0]["id"])["meta"]["loomsidian"]["current"] == "c"
    # bad input names where it is, and nothing is written
    before = len(store.trees())
    broken = {"nodes": {"r": {"text": "x", "parentId": None}, "a": {"text": 3, "parentId": "r"}}}
    with pytest.raises(Invalid, match=r"nodes\['a'\]\.text"):
        import_loomsidian(store, broken, "ann")
    with pytest.raises(Invalid, match="is not a node"):
        import_loomsidian(store, {"nodes": {"a": {"text": "x", "parentId": "zz"}}}, "ann")
    with pytest.raises(Invalid, match="no root"):
        import_loomsidian(store, {"nodes": {"a": {"text": "x", "parentId": "b"}, "b": {"text": "y", "parentId": "a"}}},
                          "ann")
    assert len(store.trees()) == before


EXOLOOM = {
    "loomType": "Exoloom", "version": "2.4.1", "schemaVersion": 1,
    "tree": {"title": "The fox", "description": "a test tree", "createdAt": "2025-03-01T10:00:00Z", "rootNodeId": 100,
             "nodes": {
                 "100": {"content": "Once upon a time", "authorType": "USER", "authorName": "ann", "parentId": None,
                         "childrenIds": [101, 102], "createdAt": "2025-03-01T10:00:00Z"},
                 "101": {"content": " there was", "authorType": "LLM", "authorName": "deepseek-v3-base",
                         "parentId": 100, "childrenIds": [103], "createdAt": "2025-03-01T10:00:05Z"},
                 "102": {"content": " the sea", "authorType": "LLM", "authorName": "llama-405b-base", "parentId": 100,
                         "childrenIds": []},
                 "103": {"content": " a fox I wrote", "authorType": "USER", "authorName": "ann", "parentId": 101,
                         "childrenIds": []},
                 "999": {"content": "left over", "authorType": "LLM", "parentId": None, "childrenIds": []}}},
    "lens": {"bookmarks": [{"nodeId": 103}], "prunedNodes": [{"nodeId": 102}]},
}


def test_an_exoloom_export_imports_with_authors_bookmarks_and_pruning(store):
    import copy

    from alignlab.loom.events import Invalid
    from alignlab.loom.loomjson import import_any

    (tree,) = import_any(store, copy.deepcopy(EXOLOOM), "importer")
    assert tree["title"] == "The fox"
    assert tree["meta"]["exoloom"] == {"version": "2.4.1", "schemaVersion": 1, "description": "a test tree",
                                       "createdAt": "2025-03-01T10:00:00Z", "unreached_nodes": 1}
    nodes = {n["meta"]["exoloom"]["id"]: n for n in store.tree_nodes(tree["id"])}
    assert set(nodes) == {100, 101, 102, 103}  # the node the root does not reach is left out (and counted)
    assert store.text_of(nodes[103]["id"]) == "Once upon a time there was a fox I wrote"
    assert nodes[100]["source"] == "prompt" and nodes[100]["parent_id"] is None
    assert nodes[101]["source"] == "model" and nodes[101]["model"] == "deepseek-v3-base"
    assert nodes[103]["source"] == "human" and nodes[103]["model"] is None and nodes[103]["bookmarked"]
    assert nodes[102]["archived"] and not nodes[101]["archived"]  # pruned: hidden, never deleted
    assert [c["id"] for c in store.children(nodes[100]["id"])] == [nodes[101]["id"]]
    assert nodes[101]["meta"]["exoloom"]["createdAt"] == "2025-03-01T10:00:05Z"
    # bad input names where it is, and nothing is written
    before = len(store.trees())
    for change, says in [(lambda d: d.update(schemaVersion=2), "schemaVersion"),
                         (lambda d: d["tree"].update(rootNodeId=7), "rootNodeId"),
                         (lambda d: d["tree"]["nodes"]["101"].update(content=5), r"nodes\['101'\]\.content"),
                         (lambda d: d["tree"]["nodes"]["101"].update(authorType="BOT"), "authorType"),
                         (lambda d: d["tree"]["nodes"]["101"]["childrenIds"].append(55), "not among"),
                         (lambda d: d["tree"]["nodes"]["102"]["childrenIds"].append(103), "reached twice"),
                         (lambda d: d["lens"].update(bookmarks=[5]), "lens.bookmarks")]:
        broken = copy.deepcopy(EXOLOOM)
        change(broken)
        with pytest.raises(Invalid, match=says):
            import_any(store, broken, "importer")
    assert len(store.trees()) == before
