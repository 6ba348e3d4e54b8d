"""Presets: named generation settings saved from the settings bar.

Revision ID: 0004_presets
Revises: 0003_process_models
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_presets"
down_revision = "0003_process_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "presets",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_presets")),
    )


def downgrade() -> None:
    op.drop_table("presets")
