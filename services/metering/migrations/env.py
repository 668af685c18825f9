"""Alembic environment of the metering service.

Migrations run inside the service at start (``SqlLedgerStore.open``), on the connection it passes in
``config.attributes["connection"]`` and within its transaction, which on PostgreSQL already holds
the migration lock. There is no ``alembic.ini`` and no offline mode on purpose: the service is the
only thing that migrates its ledger. A new revision is a hand-written file in ``versions/``
(``script.py.mako`` is its template) whose ``down_revision`` is the previous head.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from services.metering.storage.sql import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("metering migrations run inside the service: services.metering.storage.sql.SqlLedgerStore.open")

context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
