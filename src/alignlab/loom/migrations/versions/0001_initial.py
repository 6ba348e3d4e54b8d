"""The loom's first schema: trees, nodes, revisions, tags, the append-only event log, jobs.

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _id(name: str = "id", *args, **kw) -> sa.Column:
    return sa.Column(name, sa.String(26), *args, **kw)


def _time(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "trees",
        _id(nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_trees"),
    )
    op.create_table(
        "nodes",
        _id(nullable=False),
        _id("tree_id", nullable=False),
        _id("parent_id", nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("model", sa.String(500), nullable=True),
        sa.Column("settings", sa.JSON, nullable=True),
        sa.Column("seed", sa.BigInteger, nullable=True),
        sa.Column("steering", sa.JSON, nullable=True),
        sa.Column("tokens", sa.JSON, nullable=True),
        sa.Column("finish_reason", sa.String(16), nullable=True),
        sa.Column("intervention_bits", sa.Float, nullable=True),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("bookmarked", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.ForeignKeyConstraint(["tree_id"], ["trees.id"], name="fk_nodes_tree_id_trees"),
        sa.ForeignKeyConstraint(["parent_id"], ["nodes.id"], name="fk_nodes_parent_id_nodes"),
        sa.CheckConstraint("source IN ('prompt', 'human', 'model', 'mixed')", name="ck_nodes_source"),
    )
    op.create_index("ix_nodes_tree_id", "nodes", ["tree_id"])
    op.create_index("ix_nodes_parent_id", "nodes", ["parent_id"])
    op.create_table(
        "revisions",
        _id(nullable=False),
        _id("node_id", nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("tokens", sa.JSON, nullable=True),
        sa.Column("author", sa.String(200), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_revisions"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_revisions_node_id_nodes"),
    )
    op.create_index("ix_revisions_node_id", "revisions", ["node_id"])
    op.create_table(
        "tags",
        _id("node_id", nullable=False),
        sa.Column("tag", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "tag", name="pk_tags"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_tags_node_id_nodes"),
    )
    op.create_index("ix_tags_tag", "tags", ["tag"])
    op.create_table(
        "events",
        _id(nullable=False),
        _id("tree_id", nullable=False),
        _id("node_id", nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["tree_id"], ["trees.id"], name="fk_events_tree_id_trees"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_events_node_id_nodes"),
    )
    op.create_index("ix_events_tree_id_kind", "events", ["tree_id", "kind"])
    op.create_index("ix_events_node_id", "events", ["node_id"])
    op.create_table(
        "jobs",
        _id(nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("author", sa.String(200), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="ck_jobs_state"),
    )
    # The feedback log is append-only in the database itself, not only by convention in the code.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION alignlab_events_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'events are append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events "
                   "FOR EACH ROW EXECUTE FUNCTION alignlab_events_append_only()")
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER events_no_{action.lower()} BEFORE {action} ON events "
                       "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_append_only ON events")
        op.execute("DROP FUNCTION alignlab_events_append_only()")
    for table in ("jobs", "events", "tags", "revisions", "nodes", "trees"):
        op.drop_table(table)
