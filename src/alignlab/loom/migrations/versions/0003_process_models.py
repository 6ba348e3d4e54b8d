"""Process reward models (`alignlab prm train`) can be kept among the loom's models.

Revision ID: 0003_process_models
Revises: 0002_models
"""

from alembic import op

revision = "0003_process_models"
down_revision = "0002_models"
branch_labels = None
depends_on = None

# 0002 named its constraint "ck_models_kind", which the naming convention (schema.py) prefixed
# again: that is the name every database made by 0002 holds. The new one gets schema.py's name.
OLD_NAME, NEW_NAME = "ck_models_ck_models_kind", "ck_models_kind"


def upgrade() -> None:
    # SQLite cannot alter a CHECK constraint: batch mode copies the table into a new one there
    # (PostgreSQL alters it in place).
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint(op.f(OLD_NAME), type_="check")
        batch.create_check_constraint(op.f(NEW_NAME), "kind IN ('base', 'policy', 'adapter', 'reward', 'process')")


def downgrade() -> None:
    op.execute("DELETE FROM models WHERE kind = 'process'")
    with op.batch_alter_table("models") as batch:
        batch.drop_constraint(op.f(NEW_NAME), type_="check")
        batch.create_check_constraint(op.f(OLD_NAME), "kind IN ('base', 'policy', 'adapter', 'reward')")
