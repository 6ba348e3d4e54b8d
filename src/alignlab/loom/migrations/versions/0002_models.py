"""Models added while the loom runs (trained from the page or added as a folder) are kept.

Revision ID: 0002_models
Revises: 0001_initial
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_models"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_models"),
        sa.CheckConstraint("kind IN ('base', 'policy', 'adapter', 'reward')", name="ck_models_kind"),
    )


def downgrade() -> None:
    op.drop_table("models")
