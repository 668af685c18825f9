"""The ledger's identity becomes the router's event id; a quarantine for events it cannot record.

Until now the client's ``x-request-id`` was the key, so requests that reused one were merged. Rows
already kept get their request id as event id (the best identity they have); from now on
``request_id`` is a plain, indexed column for correlation. Both tables are rebuilt rather than
altered in place because SQLite cannot change a primary key, and one path for both databases is
easier to trust than two.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVENT_COLUMNS = (
    "tenant_id",
    "key_id",
    "model",
    "provider",
    "upstream_model",
    "operation",
    "prompt_tokens",
    "completion_tokens",
    "cost_micro_usd",
    "latency_ms",
    "time_to_first_chunk_ms",
    "outcome",
    "error_code",
    "streamed",
    "attempts",
    "usage_estimated",
    "time",
    "recorded_at",
)
_LOG_COLUMNS = ("tenant_id", "key_id", "recorded_at", "request_json", "response_text")
_EVENT_INDEXES = {
    "ix_usage_events_time": ["time"],
    "ix_usage_events_tenant_id_time": ["tenant_id", "time"],
    "ix_usage_events_key_id_time": ["key_id", "time"],
}


def _event_columns(key: str) -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [sa.Column(key, sa.String(), primary_key=True)]
    if key == "event_id":
        columns.append(sa.Column("request_id", sa.String(), nullable=False))
    columns += [
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("upstream_model", sa.String(), nullable=False),
        sa.Column("operation", sa.String(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("time_to_first_chunk_ms", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("error_code", sa.String(), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    ]
    return columns


def _log_columns(key: str) -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [sa.Column(key, sa.String(), primary_key=True)]
    if key == "event_id":
        columns.append(sa.Column("request_id", sa.String(), nullable=False))
    columns += [
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("response_text", sa.Text(), nullable=False),
    ]
    return columns


def _rebuild(table: str, columns: list[sa.Column[object]], copy: str, where: str = "") -> None:
    """Replace ``table`` by one with ``columns``, its rows copied by the ``copy`` SELECT list."""
    names = [column.name for column in columns]
    op.create_table(f"{table}_new", *columns)
    op.execute(f"INSERT INTO {table}_new ({', '.join(names)}) SELECT {copy} FROM {table} {where}")
    op.drop_table(table)
    op.rename_table(f"{table}_new", table)


def upgrade() -> None:
    """Key both tables by event id (existing rows: their request id), and create the quarantine."""
    for name in _EVENT_INDEXES:
        op.drop_index(name, table_name="usage_events")
    _rebuild("usage_events", _event_columns("event_id"), f"request_id, request_id, {', '.join(_EVENT_COLUMNS)}")
    for name, indexed in _EVENT_INDEXES.items():
        op.create_index(name, "usage_events", indexed)
    op.create_index("ix_usage_events_request_id", "usage_events", ["request_id"])
    _rebuild("prompt_logs", _log_columns("event_id"), f"request_id, request_id, {', '.join(_LOG_COLUMNS)}")
    op.create_table(
        "quarantined_events",
        sa.Column("digest", sa.String(), primary_key=True),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.LargeBinary(), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_quarantined_events_quarantined_at", "quarantined_events", ["quarantined_at"])


def downgrade() -> None:
    """Key both tables by request id again; of events sharing a request id, one is kept."""
    op.drop_table("quarantined_events")
    op.drop_index("ix_usage_events_request_id", table_name="usage_events")
    for name in _EVENT_INDEXES:
        op.drop_index(name, table_name="usage_events")
    # Rows that share a request id cannot all survive a key on it: the smallest event id stays.
    keep = "WHERE event_id IN (SELECT MIN(event_id) FROM {table} GROUP BY request_id)"
    for table, columns, names in (
        ("usage_events", _event_columns("request_id"), _EVENT_COLUMNS),
        ("prompt_logs", _log_columns("request_id"), _LOG_COLUMNS),
    ):
        _rebuild(table, columns, f"request_id, {', '.join(names)}", keep.format(table=table))
    for name, indexed in _EVENT_INDEXES.items():
        op.create_index(name, "usage_events", indexed)
