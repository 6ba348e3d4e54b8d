"""The loom's tables (SQLAlchemy Core). Alembic migrations in loom/migrations/ create them; a
test checks that a fresh database's schema, on SQLite and on PostgreSQL, is exactly this.

Everything a person makes lives here: trees of nodes, the earlier texts of edited nodes, tags,
the append-only log of feedback events, and background jobs (training runs started from the
loom). Ids are time-sortable strings (loom/ids.py); JSON columns keep the raw structures
(settings, tokens with their alternatives, event payloads) beside the extracted columns that
queries need.
"""

from __future__ import annotations

import sqlalchemy as sa

SOURCES = ("prompt", "human", "model", "mixed")
"""Who wrote a node: the opening prompt, a person, a model, or model text a person edited."""

JOB_STATES = ("queued", "running", "done", "failed")

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


def _id(name: str = "id", *args, **kw) -> sa.Column:
    return sa.Column(name, sa.String(26), *args, **kw)


def _time(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


trees = sa.Table(
    "trees", metadata,
    _id(primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),  # the tree's default generation settings
    sa.Column("archived", sa.Boolean, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),  # anything an import carried that has no column
    _time("created_at"),
    _time("updated_at"),
)

nodes = sa.Table(
    "nodes", metadata,
    _id(primary_key=True),
    _id("tree_id", sa.ForeignKey("trees.id"), nullable=False),
    _id("parent_id", sa.ForeignKey("nodes.id"), nullable=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("model", sa.String(500), nullable=True),  # the model that wrote it (None: a person)
    sa.Column("settings", sa.JSON, nullable=True),  # sampling settings this node was made with
    sa.Column("seed", sa.BigInteger, nullable=True),
    sa.Column("steering", sa.JSON, nullable=True),  # the steering vector recipe, if any
    sa.Column("tokens", sa.JSON, nullable=True),  # [{id, text, logprob, alternatives: [...]}]
    sa.Column("finish_reason", sa.String(16), nullable=True),
    sa.Column("intervention_bits", sa.Float, nullable=True),  # -log2 P(text a person wrote)
    sa.Column("archived", sa.Boolean, nullable=False),
    sa.Column("bookmarked", sa.Boolean, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
    _time("created_at"),
    _time("updated_at"),
    sa.CheckConstraint("source IN ('prompt', 'human', 'model', 'mixed')", name="source"),
    sa.Index(None, "tree_id"),
    sa.Index(None, "parent_id"),
)

revisions = sa.Table(
    "revisions", metadata,
    _id(primary_key=True),
    _id("node_id", sa.ForeignKey("nodes.id"), nullable=False),
    sa.Column("text", sa.Text, nullable=False),  # the text before the edit that made this revision
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("tokens", sa.JSON, nullable=True),
    sa.Column("author", sa.String(200), nullable=False),  # who made the edit
    _time("created_at"),
    sa.Index(None, "node_id"),
)

tags = sa.Table(
    "tags", metadata,
    _id("node_id", sa.ForeignKey("nodes.id"), primary_key=True),
    sa.Column("tag", sa.String(200), primary_key=True),
    sa.Index(None, "tag"),
)

events = sa.Table(
    "events", metadata,
    _id(primary_key=True),
    _id("tree_id", sa.ForeignKey("trees.id"), nullable=False),
    _id("node_id", sa.ForeignKey("nodes.id"), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    _time("created_at"),
    sa.Index(None, "tree_id", "kind"),
    sa.Index(None, "node_id"),
)

jobs = sa.Table(
    "jobs", metadata,
    _id(primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("progress", sa.Float, nullable=False),  # 0..1
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("author", sa.String(200), nullable=False),
    _time("created_at"),
    _time("updated_at"),
    sa.CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="state"),
)

models = sa.Table(
    "models", metadata,
    sa.Column("name", sa.String(1000), primary_key=True),  # a model name or a folder's absolute path
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    _time("created_at"),
    sa.CheckConstraint("kind IN ('base', 'policy', 'adapter', 'reward', 'process')", name="kind"),
)
"""Models added while the loom ran (trained from the page, or a folder the person added): kept so
that a restart lists them again. Models named on the command line are not stored."""

presets = sa.Table(
    "presets", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("settings", sa.JSON, nullable=False),  # generation settings; only the fields it sets
    sa.Column("author", sa.String(200), nullable=False),
    _time("created_at"),
    _time("updated_at"),
)
"""Named generation settings a person saved from the settings bar (the built-in ones are in
loom/settings.py), shared by everyone using this store."""
