"""Alembic's entry point: runs the revisions on the connection ``migrations.upgrade`` holds.

``upgrade`` has already serialized the upgrade against other processes and begun the one
transaction it runs in, so this only hands Alembic that connection and the schema the version
table lives in (the monitoring tables' own).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the monitoring database's migrations run through `bank-marketing db upgrade` "
        "(bank_marketing.monitoring.migrations.upgrade), which takes the lock and recognizes "
        "databases made before migrations; not through the alembic command"
    )
context.configure(
    connection=connection, version_table_schema=context.config.attributes.get("schema")
)
with context.begin_transaction():
    context.run_migrations()
