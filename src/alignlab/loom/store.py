"""The loom's store: trees of nodes and the feedback log, in SQLite (default) or PostgreSQL.

Every write is one transaction that also appends the event describing it, so the tree and the
log never disagree, and a process killed mid-write leaves the database as it was before that
write (SQLite in WAL mode; PostgreSQL by its nature). On SQLite, writes take the lock when they
begin (``BEGIN IMMEDIATE``) and wait up to 30 s for it, so concurrent writers queue instead of
failing. Opening a store brings its schema to the newest migration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from alignlab.loom import schema as t
from alignlab.loom.events import FEEDBACK, Conflict, Invalid, NotFound, place_step, validate
from alignlab.loom.ids import new_id

MIGRATIONS = Path(__file__).parent / "migrations"


def now() -> datetime:
    return datetime.now(UTC)


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'loom.sqlite'}"


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and writers that queue for the lock."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection, record):
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(engine: sa.Engine) -> None:
    """Bring the database to the newest schema (Alembic migrations in loom/migrations)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _row(row: sa.Row | None, what: str, key: str) -> dict:
    if row is None:
        raise NotFound(f"no {what} with id {key!r}", field="id")
    return dict(row._mapping)


class Store:
    """Trees, nodes, tags, revisions and the append-only event log. Methods return plain dicts."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    @classmethod
    def open(cls, url: str | None = None, data_dir: Path | None = None) -> Store:
        """Open (creating and migrating as needed) the store at ``url`` or in ``data_dir``."""
        if url is None:
            if data_dir is None:
                raise ValueError("give a database URL or a data directory")
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            url = default_url(data_dir)
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- trees -------------------------------------------------------------------------------

    def create_tree(self, prompt: str, author: str, title: str = "", settings: dict | None = None,
                    meta: dict | None = None) -> dict:
        """A new tree whose root node holds ``prompt``; returns the tree with ``root_id``."""
        if not isinstance(prompt, str):
            raise Invalid("'prompt' must be a string", field="prompt")
        tree_id, root_id, at = new_id(), new_id(), now()
        title = title or (prompt.strip().splitlines() or ["Untitled"])[0][:80] or "Untitled"
        with self.engine.begin() as c:
            c.execute(t.trees.insert().values(id=tree_id, title=title, author=author, settings=settings or {},
                                              archived=False, meta=meta or {}, created_at=at, updated_at=at))
            self._insert_node(c, tree_id, None, prompt, "prompt", author, at=at, node_id=root_id)
            self._event(c, tree_id, root_id, "create_tree", author, {"title": title})
        return {**self.tree(tree_id), "root_id": root_id}

    def insert_tree(self, root: dict, nodes: Sequence[dict], author: str, title: str = "",
                    meta: dict | None = None, kind: str = "import") -> dict:
        """A whole tree in one transaction (an import): ``root`` and each of ``nodes`` hold
        ``text`` and optional ``source``/``tags``/``meta``/``bookmarked`` (and, below the root,
        ``model``/``archived``); ``key`` names a node and ``parent`` the key of its parent
        (nodes come after their parents)."""
        tree_id, at = new_id(), now()
        text = root.get("text", "")
        title = title or (text.strip().splitlines() or ["Untitled"])[0][:80] or "Untitled"
        ids: dict[Any, str] = {}
        with self.engine.begin() as c:
            c.execute(t.trees.insert().values(id=tree_id, title=title, author=author, settings={}, archived=False,
                                              meta=meta or {}, created_at=at, updated_at=at))
            ids[root.get("key")] = self._insert_node(
                c, tree_id, None, text, root.get("source", "prompt"), author, at=at, tags=root.get("tags"),
                meta=root.get("meta"), bookmarked=root.get("bookmarked", False))
            for node in nodes:
                if node.get("parent") not in ids:
                    raise Invalid(f"node {node.get('key')!r} comes before its parent {node.get('parent')!r}",
                                  field="parent")
                ids[node["key"]] = self._insert_node(
                    c, tree_id, ids[node["parent"]], node.get("text", ""), node.get("source", "model"), author, at=at,
                    tags=node.get("tags"), meta=node.get("meta"), model=node.get("model"),
                    archived=node.get("archived", False), bookmarked=node.get("bookmarked", False))
            self._event(c, tree_id, ids[root.get("key")], kind, author, {"nodes": len(nodes) + 1})
        return self.tree(tree_id)

    def trees(self, include_archived: bool = False) -> list[dict]:
        """Every tree, newest first, with its root id and node count."""
        counts = (sa.select(t.nodes.c.tree_id, sa.func.count().label("nodes"))
                  .group_by(t.nodes.c.tree_id).subquery())
        roots = sa.select(t.nodes.c.tree_id, t.nodes.c.id.label("root_id")).where(t.nodes.c.parent_id.is_(None)).subquery()
        query = (sa.select(t.trees, counts.c.nodes, roots.c.root_id)
                 .join(counts, counts.c.tree_id == t.trees.c.id).join(roots, roots.c.tree_id == t.trees.c.id)
                 .order_by(t.trees.c.id.desc()))
        if not include_archived:
            query = query.where(t.trees.c.archived.is_(False))
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(query)]

    def tree(self, tree_id: str) -> dict:
        with self.engine.connect() as c:
            tree = _row(c.execute(sa.select(t.trees).where(t.trees.c.id == tree_id)).first(), "tree", tree_id)
            root = c.execute(sa.select(t.nodes.c.id).where(t.nodes.c.tree_id == tree_id,
                                                           t.nodes.c.parent_id.is_(None))).scalar()
        return {**tree, "root_id": root}

    def update_tree(self, tree_id: str, author: str, title: str | None = None, settings: dict | None = None,
                    archived: bool | None = None) -> dict:
        values: dict[str, Any] = {"updated_at": now()}
        if title is not None:
            if not title.strip():
                raise Invalid("'title' is empty; give the tree a name", field="title")
            values["title"] = title
        if settings is not None:
            values["settings"] = settings
        if archived is not None:
            values["archived"] = archived
        with self.engine.begin() as c:
            if c.execute(t.trees.update().where(t.trees.c.id == tree_id).values(**values)).rowcount == 0:
                raise NotFound(f"no tree with id {tree_id!r}", field="tree_id")
        return self.tree(tree_id)

    # --- nodes -------------------------------------------------------------------------------

    def _insert_node(self, c, tree_id: str, parent_id: str | None, text: str, source: str, author: str,
                     at: datetime, node_id: str | None = None, **fields) -> str:
        if source not in t.SOURCES:
            raise Invalid(f"'source' is {source!r}; use one of {', '.join(t.SOURCES)}", field="source")
        node_id = node_id or new_id()
        c.execute(t.nodes.insert().values(
            id=node_id, tree_id=tree_id, parent_id=parent_id, text=text, source=source, author=author,
            model=fields.get("model"), settings=fields.get("settings"), seed=fields.get("seed"),
            steering=fields.get("steering"), tokens=fields.get("tokens"), finish_reason=fields.get("finish_reason"),
            intervention_bits=fields.get("intervention_bits"), archived=bool(fields.get("archived", False)),
            bookmarked=bool(fields.get("bookmarked", False)), note="",
            meta=fields.get("meta") or {}, created_at=at, updated_at=at))
        for tag in fields.get("tags") or ():
            c.execute(t.tags.insert().values(node_id=node_id, tag=tag))
        return node_id

    def _event(self, c, tree_id: str, node_id: str | None, kind: str, author: str, payload: dict) -> str:
        event_id = new_id()
        c.execute(t.events.insert().values(id=event_id, tree_id=tree_id, node_id=node_id, kind=kind, author=author,
                                           payload=payload, created_at=now()))
        return event_id

    def _node_row(self, c, node_id: str) -> dict:
        return _row(c.execute(sa.select(t.nodes).where(t.nodes.c.id == node_id)).first(), "node", node_id)

    def add_nodes(self, parent_id: str, children: Sequence[dict], author: str, kind: str = "generate",
                  payload: dict | None = None) -> list[dict]:
        """Add children under ``parent_id`` in one transaction, logging one ``kind`` event
        (``generate`` for model continuations, ``write`` for text a person typed)."""
        at = now()
        with self.engine.begin() as c:
            parent = self._node_row(c, parent_id)
            ids = []
            for child in children:
                child = dict(child)
                text, source = child.pop("text"), child.pop("source", "model")
                if not isinstance(text, str):
                    raise Invalid("'text' must be a string", field="text")
                ids.append(self._insert_node(c, parent["tree_id"], parent_id, text, source, author, at=at, **child))
            self._event(c, parent["tree_id"], parent_id, kind, author, {**(payload or {}), "children": ids})
            c.execute(t.trees.update().where(t.trees.c.id == parent["tree_id"]).values(updated_at=at))
        return [self.node(i) for i in ids]

    def reroll(self, node_id: str, child: dict, author: str, payload: dict | None = None) -> dict:
        """Replace a continuation with a fresh one in one transaction: the new node goes under the
        same parent (a ``generate`` event, as any continuation), the old one is archived (hidden,
        never deleted; unarchive brings it back) and a ``reroll`` event on it names its successor."""
        at = now()
        child = dict(child)
        with self.engine.begin() as c:
            old = self._node_row(c, node_id)
            if old["parent_id"] is None:
                raise Conflict("the root is the prompt; reroll one of its continuations", field="id")
            text, source = child.pop("text"), child.pop("source", "model")
            new = self._insert_node(c, old["tree_id"], old["parent_id"], text, source, author, at=at, **child)
            self._event(c, old["tree_id"], old["parent_id"], "generate", author, {**(payload or {}), "children": [new]})
            c.execute(t.nodes.update().where(t.nodes.c.id == node_id).values(archived=True, updated_at=at))
            self._event(c, old["tree_id"], node_id, "reroll", author, {"replaced_by": new})
            c.execute(t.trees.update().where(t.trees.c.id == old["tree_id"]).values(updated_at=at))
        return self.node(new)

    def node(self, node_id: str) -> dict:
        """One node with its tags and child count."""
        with self.engine.connect() as c:
            node = self._node_row(c, node_id)
            node["tags"] = sorted(c.execute(sa.select(t.tags.c.tag).where(t.tags.c.node_id == node_id)).scalars())
            node["children_count"] = c.execute(sa.select(sa.func.count()).select_from(t.nodes)
                                               .where(t.nodes.c.parent_id == node_id)).scalar()
        return node

    def tree_nodes(self, tree_id: str, include_archived: bool = True) -> list[dict]:
        """All nodes of a tree in creation order, each with its tags (for the tree view and exports)."""
        with self.engine.connect() as c:
            self._tree_exists(c, tree_id)
            query = sa.select(t.nodes).where(t.nodes.c.tree_id == tree_id).order_by(t.nodes.c.id)
            if not include_archived:
                query = query.where(t.nodes.c.archived.is_(False))
            rows = [dict(r._mapping) for r in c.execute(query)]
            tag_rows = c.execute(sa.select(t.tags).join(t.nodes, t.nodes.c.id == t.tags.c.node_id)
                                 .where(t.nodes.c.tree_id == tree_id)).all()
        by_node: dict[str, list[str]] = {}
        for node_id, tag in tag_rows:
            by_node.setdefault(node_id, []).append(tag)
        for row in rows:
            row["tags"] = sorted(by_node.get(row["id"], []))
        return rows

    def _tree_exists(self, c, tree_id: str) -> None:
        if c.execute(sa.select(t.trees.c.id).where(t.trees.c.id == tree_id)).first() is None:
            raise NotFound(f"no tree with id {tree_id!r}", field="tree_id")

    def children(self, node_id: str, include_archived: bool = False) -> list[dict]:
        with self.engine.connect() as c:
            self._node_row(c, node_id)
            query = sa.select(t.nodes).where(t.nodes.c.parent_id == node_id).order_by(t.nodes.c.id)
            if not include_archived:
                query = query.where(t.nodes.c.archived.is_(False))
            return [dict(r._mapping) for r in c.execute(query)]

    def ancestry(self, node_id: str) -> list[dict]:
        """The nodes from the root down to ``node_id`` (inclusive)."""
        with self.engine.connect() as c:
            return self._ancestry(c, node_id)

    def _ancestry(self, c, node_id: str) -> list[dict]:
        path = []
        current: str | None = node_id
        while current is not None:
            row = self._node_row(c, current)
            path.append(row)
            current = row["parent_id"]
        return path[::-1]

    def text_of(self, node_id: str) -> str:
        """The whole text from the root to ``node_id``: what a model continues from there."""
        return "".join(n["text"] for n in self.ancestry(node_id))

    def edit(self, node_id: str, text: str, author: str, tokens: list | None = None,
             intervention_bits: float | None = None) -> dict:
        """Replace a node's text, keeping the old text as a revision. Model text a person edits
        becomes 'mixed'; its tokens no longer match the text, so they are dropped unless given."""
        if not isinstance(text, str):
            raise Invalid("'text' must be a string", field="text")
        at = now()
        with self.engine.begin() as c:
            node = self._node_row(c, node_id)
            # Saving the same text records nothing. (The node is read back below, after this
            # transaction: a second connection opened inside it would wait for its write lock.)
            if node["text"] != text:
                c.execute(t.revisions.insert().values(id=new_id(), node_id=node_id, text=node["text"],
                                                      source=node["source"], tokens=node["tokens"], author=author,
                                                      created_at=at))
                source = "mixed" if node["source"] == "model" else node["source"]
                c.execute(t.nodes.update().where(t.nodes.c.id == node_id).values(
                    text=text, source=source, tokens=tokens, intervention_bits=intervention_bits, updated_at=at))
                self._event(c, node["tree_id"], node_id, "edit", author,
                            {"before": node["text"], "after": text, "source_before": node["source"]})
        return self.node(node_id)

    def set_intervention_bits(self, node_id: str, text: str, bits: float) -> bool:
        """Store intervention bits computed after a write, if the node still holds ``text`` (an
        edit in between makes them another text's bits). Returns whether they were stored."""
        with self.engine.begin() as c:
            result = c.execute(t.nodes.update().where(t.nodes.c.id == node_id, t.nodes.c.text == text)
                               .values(intervention_bits=float(bits)))
        return result.rowcount == 1

    def revisions(self, node_id: str) -> list[dict]:
        with self.engine.connect() as c:
            self._node_row(c, node_id)
            return [dict(r._mapping) for r in c.execute(
                sa.select(t.revisions).where(t.revisions.c.node_id == node_id).order_by(t.revisions.c.id))]

    def split(self, node_id: str, at_char: int, author: str) -> dict:
        """Cut a node in two at a character: the node keeps the head, a new child takes the tail
        and the node's children. Tokens are split too where the cut falls between tokens."""
        with self.engine.begin() as c:
            node = self._node_row(c, node_id)
            if not isinstance(at_char, int) or not 0 < at_char < len(node["text"]):
                raise Invalid(f"'at' must cut inside the text (1..{len(node['text']) - 1}), got {at_char!r}", field="at")
            head_tokens, tail_tokens = _split_tokens(node["tokens"], at_char)
            at = now()
            tail_id = new_id()
            c.execute(t.nodes.insert().values(
                id=tail_id, tree_id=node["tree_id"], parent_id=None, text=node["text"][at_char:], source=node["source"],
                author=node["author"], model=node["model"], settings=node["settings"], seed=node["seed"],
                steering=node["steering"], tokens=tail_tokens, finish_reason=node["finish_reason"],
                intervention_bits=None, archived=False, bookmarked=False, note="", meta={"split_from": node_id},
                created_at=at, updated_at=at))
            c.execute(t.nodes.update().where(t.nodes.c.parent_id == node_id).values(parent_id=tail_id))
            c.execute(t.nodes.update().where(t.nodes.c.id == tail_id).values(parent_id=node_id))
            c.execute(t.nodes.update().where(t.nodes.c.id == node_id).values(
                text=node["text"][:at_char], tokens=head_tokens, finish_reason=None, updated_at=at))
            self._event(c, node["tree_id"], node_id, "split", author, {"at": at_char, "tail": tail_id})
        return self.node(tail_id)

    def move(self, node_id: str, parent_id: str, author: str) -> dict:
        """Give a node, with its subtree, another parent in the same tree (logged with where it
        was, so it can be moved back). Judgements already given keep the text they were made on
        (events store it); intervention bits stay those of the context they were computed in."""
        with self.engine.begin() as c:
            node = self._node_row(c, node_id)
            if node["parent_id"] is None:
                raise Conflict("the root cannot move; start a new tree from its text instead", field="id")
            if not isinstance(parent_id, str):
                raise Invalid("'parent_id' must be a node id", field="parent_id")
            target = _row(c.execute(sa.select(t.nodes).where(t.nodes.c.id == parent_id)).first(), "node", parent_id)
            if target["tree_id"] != node["tree_id"]:
                raise Invalid(f"node {parent_id} is in another tree; a node moves within its tree", field="parent_id")
            if any(a["id"] == node_id for a in self._ancestry(c, parent_id)):
                raise Invalid(f"node {parent_id} is {node_id} itself or below it: a node cannot move under its own "
                              "subtree", field="parent_id")
            if node["parent_id"] != parent_id:
                c.execute(t.nodes.update().where(t.nodes.c.id == node_id).values(parent_id=parent_id, updated_at=now()))
                self._event(c, node["tree_id"], node_id, "move", author, {"from": node["parent_id"], "to": parent_id})
        return self.node(node_id)

    def merge(self, node_id: str, author: str) -> dict:
        """Join a node with its only child: the node takes the child's text and children; the
        child is archived (never deleted: events may name it)."""
        with self.engine.begin() as c:
            node = self._node_row(c, node_id)
            kids = c.execute(sa.select(t.nodes).where(t.nodes.c.parent_id == node_id,
                                                      t.nodes.c.archived.is_(False))).all()
            if len(kids) != 1:
                raise Conflict(f"node {node_id} has {len(kids)} visible children; merge needs exactly one", field="id")
            child = dict(kids[0]._mapping)
            at = now()
            tokens = (node["tokens"] or []) + (child["tokens"] or []) if node["tokens"] and child["tokens"] else None
            source = node["source"] if node["source"] == child["source"] else "mixed"
            if node["source"] == "prompt":
                source = "prompt"
            c.execute(t.nodes.update().where(t.nodes.c.parent_id == child["id"]).values(parent_id=node_id))
            c.execute(t.nodes.update().where(t.nodes.c.id == node_id).values(
                text=node["text"] + child["text"], tokens=tokens, source=source,
                finish_reason=child["finish_reason"], updated_at=at))
            c.execute(t.nodes.update().where(t.nodes.c.id == child["id"]).values(
                archived=True, meta={**child["meta"], "merged_into": node_id}, updated_at=at))
            self._event(c, node["tree_id"], node_id, "merge", author, {"child": child["id"]})
        return self.node(node_id)

    def set_flag(self, node_id: str, flag: str, value: bool, author: str) -> dict:
        """Archive/unarchive or bookmark/unbookmark a node (logged as an event)."""
        names = {"archived": ("archive", "unarchive"), "bookmarked": ("bookmark", "unbookmark")}
        if flag not in names:
            raise Invalid(f"unknown flag {flag!r}; use 'archived' or 'bookmarked'", field="flag")
        with self.engine.begin() as c:
            node = self._node_row(c, node_id)
            if node["parent_id"] is None and flag == "archived" and value:
                raise Conflict("the root node cannot be archived; archive the tree instead", field="id")
            c.execute(t.nodes.update().where(t.nodes.c.id == node_id).values(**{flag: bool(value)}, updated_at=now()))
            self._event(c, node["tree_id"], node_id, names[flag][0 if value else 1], author, {})
        return self.node(node_id)

    def set_branch_settings(self, node_id: str, settings: dict, author: str) -> dict:
        """Generation settings every generation below this node inherits (nearest wins)."""
        if not isinstance(settings, dict):
            raise Invalid("settings must be an object", field="settings")
        return self._update_node(node_id, author, "settings", {"settings": settings},
                                 lambda node: {"meta": {**node["meta"], "branch_settings": settings}})

    def set_note(self, node_id: str, note: str, author: str) -> dict:
        if not isinstance(note, str):
            raise Invalid("'note' must be a string", field="note")
        return self._update_node(node_id, author, "note", {"note": note}, lambda node: {"note": note})

    def _update_node(self, node_id: str, author: str, kind: str, payload: dict, values) -> dict:
        """Set ``values(node)`` on a node and log a ``kind`` event, in one transaction."""
        with self.engine.begin() as c:
            node = self._node_row(c, node_id)
            c.execute(t.nodes.update().where(t.nodes.c.id == node_id).values(**values(node), updated_at=now()))
            self._event(c, node["tree_id"], node_id, kind, author, payload)
        return self.node(node_id)

    def tag(self, node_id: str, tag: str, author: str, remove: bool = False) -> dict:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > 200:
            raise Invalid("'tag' must be a non-empty string of at most 200 characters", field="tag")
        with self.engine.begin() as c:
            node = self._node_row(c, node_id)
            exists = c.execute(sa.select(t.tags).where(t.tags.c.node_id == node_id, t.tags.c.tag == tag)).first()
            if remove and exists:
                c.execute(t.tags.delete().where(t.tags.c.node_id == node_id, t.tags.c.tag == tag))
            elif not remove and not exists:
                c.execute(t.tags.insert().values(node_id=node_id, tag=tag))
            self._event(c, node["tree_id"], node_id, "untag" if remove else "tag", author, {"tag": tag})
        return self.node(node_id)

    def search(self, tree_id: str, query: str, limit: int = 100) -> list[dict]:
        """Nodes of a tree whose text contains ``query`` (case-insensitive), oldest first."""
        if not isinstance(query, str) or not query:
            raise Invalid("'q' is empty; give the text to look for", field="q")
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self.engine.connect() as c:
            self._tree_exists(c, tree_id)
            rows = c.execute(sa.select(t.nodes).where(t.nodes.c.tree_id == tree_id,
                                                      t.nodes.c.text.ilike(pattern, escape="\\"))
                             .order_by(t.nodes.c.id).limit(limit))
            return [dict(r._mapping) for r in rows]

    # --- models ------------------------------------------------------------------------------

    def keep_model(self, name: str, kind: str, author: str) -> None:
        """Remember a model added while the loom ran (once; adding it again changes nothing)."""
        with self.engine.begin() as c:
            if c.execute(sa.select(t.models.c.name).where(t.models.c.name == name)).first() is None:
                c.execute(t.models.insert().values(name=name, kind=kind, author=author, created_at=now()))

    def models(self) -> list[dict]:
        """The models kept, oldest first."""
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(t.models).order_by(t.models.c.created_at))]

    # --- presets -----------------------------------------------------------------------------

    def save_preset(self, name: str, settings: dict, author: str) -> dict:
        """Save (or replace) the preset ``name``: the generation settings it sets."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise Invalid("a preset's name must be 1 to 200 characters", field="name")
        if not isinstance(settings, dict) or not settings:
            raise Invalid("a preset must set at least one generation setting", field="settings")
        at = now()
        with self.engine.begin() as c:
            done = c.execute(t.presets.update().where(t.presets.c.name == name).values(
                settings=settings, author=author, updated_at=at)).rowcount
            if not done:
                c.execute(t.presets.insert().values(name=name, settings=settings, author=author, created_at=at,
                                                    updated_at=at))
        return self.preset(name)

    def preset(self, name: str) -> dict:
        with self.engine.connect() as c:
            return _row(c.execute(sa.select(t.presets).where(t.presets.c.name == name)).first(), "preset", name)

    def presets(self) -> list[dict]:
        """The saved presets, by name."""
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(t.presets).order_by(t.presets.c.name))]

    def delete_preset(self, name: str) -> None:
        with self.engine.begin() as c:
            if c.execute(t.presets.delete().where(t.presets.c.name == name)).rowcount == 0:
                raise NotFound(f"no saved preset {name!r}", field="name")

    # --- events ------------------------------------------------------------------------------

    def record(self, tree_id: str, kind: str, payload: dict, author: str, node_id: str | None = None,
               explicit_only: bool = True) -> dict:
        """Append one feedback event after checking its payload (nodes it names must be in the tree)."""
        if not isinstance(author, str) or not author.strip():
            raise Invalid("'author' is empty; every event names who gave it", field="author")
        with self.engine.begin() as c:
            self._tree_exists(c, tree_id)
            known = lambda nid: c.execute(sa.select(t.nodes.c.id).where(  # noqa: E731
                t.nodes.c.id == nid, t.nodes.c.tree_id == tree_id)).first() is not None
            if node_id is not None and not known(node_id):
                raise Invalid(f"'node_id' {node_id!r} is not a node of tree {tree_id}", field="node_id")
            stored = validate(kind, payload, known, explicit_only)
            seen = self._seen(c, kind, stored, node_id)
            if kind == "step":  # which step is judged depends on the text, read in this transaction
                stored = place_step(stored, seen)
            if seen is not None:
                stored = {**stored, "seen": seen}
            event_id = self._event(c, tree_id, node_id, kind, author, stored)
            row = c.execute(sa.select(t.events).where(t.events.c.id == event_id)).first()
        return dict(row._mapping)

    def _seen(self, c, kind: str, payload: dict, node_id: str | None) -> dict | None:
        """The texts a judgement was made on, read in its own transaction: nodes are edited, split
        and merged afterwards, and an export must hold what the annotator saw, not today's text.

        compare and rank: ``{"prompt", "texts"}``, the text the judged nodes share and each one's
        text from there (in the payload's order: a, b or best first); a judgement of one node:
        ``{"prompt", "text"}``, the text before it and its own."""
        if kind not in FEEDBACK:
            return None
        judged = {"compare": lambda p: [p["a"], p["b"]], "rank": lambda p: p["order"]}.get(kind)
        if judged is not None:
            prompt, texts = fork([self._ancestry(c, i) for i in judged(payload)])
            return {"prompt": prompt, "texts": texts}
        if node_id is None:
            return None
        path = self._ancestry(c, node_id)
        return {"prompt": "".join(n["text"] for n in path[:-1]), "text": path[-1]["text"]}

    def events(self, tree_id: str | None = None, kinds: Iterable[str] | None = None,
               author: str | None = None, after: str | None = None, limit: int | None = None) -> list[dict]:
        """The log in the order it was written, optionally for one tree, some kinds, one author,
        only those written after the event ``after`` (ids sort by time), at most ``limit``."""
        query = sa.select(t.events).order_by(t.events.c.id)
        if after is not None:
            query = query.where(t.events.c.id > after)
        if limit is not None:
            query = query.limit(limit)
        if tree_id is not None:
            query = query.where(t.events.c.tree_id == tree_id)
        if kinds is not None:
            query = query.where(t.events.c.kind.in_(list(kinds)))
        if author is not None:
            query = query.where(t.events.c.author == author)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(query)]

    def count_events(self) -> int:
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(t.events)).scalar()

    # --- optimisation pressure ---------------------------------------------------------------

    def pressure(self, node_id: str) -> list[dict]:
        """Selection and intervention bits of each node from the root to ``node_id``, with the
        running sums along the path (see ``node_bits``)."""
        path = self.ancestry(node_id)
        out, selection, intervention = [], 0.0, 0.0
        with self.engine.connect() as c:
            for node in path:
                siblings = [] if node["parent_id"] is None else [
                    dict(r._mapping) for r in c.execute(sa.select(t.nodes.c.source).where(
                        t.nodes.c.parent_id == node["parent_id"]))]
                s_bits, i_bits = node_bits(node, siblings)
                selection += s_bits
                intervention += i_bits
                out.append({"id": node["id"], "selection_bits": s_bits, "intervention_bits": i_bits,
                            "selection_total": selection, "intervention_total": intervention})
        return out


def fork(paths: Sequence[Sequence[dict]]) -> tuple[str, list[str]]:
    """The text some nodes all continue (their ancestry down to the deepest common ancestor)
    and each node's own text from there; ``paths`` are the nodes' ancestries, root first."""
    common = 0
    while all(len(p) > common + 1 for p in paths) and len({p[common]["id"] for p in paths}) == 1:
        common += 1
    prompt = "".join(n["text"] for n in paths[0][:common])
    return prompt, ["".join(n["text"] for n in p[common:]) for p in paths]


def node_bits(node: dict, siblings: Sequence[dict]) -> tuple[float, float]:
    """(selection bits, intervention bits) of one node.

    Selection: a model-written node that a person kept out of k model-written siblings (itself
    included) carries log2 k bits of their choice. Intervention: text a person wrote or
    substituted carries -log2 of its probability under the model (stored when it was written).
    """
    selection = 0.0
    if node["source"] in ("model", "mixed"):
        k = sum(1 for s in siblings if s["source"] in ("model", "mixed"))
        selection = math.log2(k) if k > 1 else 0.0
    intervention = float(node["intervention_bits"] or 0.0)
    return selection, intervention


def _split_tokens(tokens: list | None, at_char: int) -> tuple[list | None, list | None]:
    """Tokens of the head and tail when the text is cut at ``at_char``; None where the cut falls
    inside a token (the probabilities of a cut token are not those of either half)."""
    if not tokens:
        return None, None
    offset = 0
    for i, token in enumerate(tokens):
        if offset == at_char:
            return tokens[:i], tokens[i:]
        offset += len(token.get("text", ""))
    return None, None
