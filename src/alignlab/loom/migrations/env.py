"""Alembic's environment for the loom's database. alignlab runs it itself (loom/store.py calls
``upgrade`` on open) with the connection to migrate in ``config.attributes["connection"]``."""

from alembic import context

from alignlab.loom.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  version_table="alembic_version")
with context.begin_transaction():
    context.run_migrations()
