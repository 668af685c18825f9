"""Batches of every size write the ledger with a handful of SQL texts. Each driver connection keeps
every statement text it prepared (sqlite3 128, asyncpg 100): one text per batch size made
metering's memory grow by 38 MB over 100k requests (`make bench BENCH_ARGS=--scenarios soak`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from services.metering.storage.sql import SqlLedgerStore, create_engine
from tests.metering.databases import ledger_url
from tests.metering.test_quarantine import RECORD


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_batches_of_every_size_use_a_bounded_set_of_statements(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = await ledger_url(backend, tmp_path, request, "metering_statements")
    engine = create_engine(url)
    texts: set[str] = set()

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "INSERT INTO usage_events" in statement:
            texts.add(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    store = SqlLedgerStore(engine)
    try:
        await store.open()
        sent = 0
        for size in range(1, 151):
            batch = [replace(RECORD, event_id=f"e{sent + i}", request_id=f"r{sent + i}") for i in range(size)]
            # Each batch also repeats the previous batch's last event: it is counted once.
            repeat = [replace(RECORD, event_id=f"e{sent - 1}", request_id=f"r{sent - 1}")] if sent else []
            result = await store.record([*repeat, *batch])
            assert result.recorded == size
            assert result.new_event_ids == {f"e{sent + i}" for i in range(size)}
            sent += size
        # 150 batch sizes (2 to 151 rows with the repeat), written with one text per power of two up to
        # 64, and the one-row form.
        assert len(texts) <= 8, "\n".join(sorted(t[:60] + " … " + t[-120:] for t in texts))
    finally:
        await store.close()
