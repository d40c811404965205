"""The whole server on PostgreSQL: telemetry reaches the database through the
recorder's writer thread (its own event loop and connection pool)."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from ocpp.v16 import call as call16

from tests.api.conftest import running_server
from tests.api.test_rest import Station16, _boot16, _now

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh, empty database on the local PostgreSQL server (dropped afterwards)."""
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL at {PG_DSN} unreachable: {exc!r}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    name = f"evflex_app_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_meter_values_are_stored_from_the_writer_thread(pg_database: str) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_database}"
    async with running_server(url) as server:
        await server.register("CP-PG")
        async with server.connect("CP-PG") as ws:
            station = Station16("CP-PG", ws)
            task = asyncio.create_task(station.start())
            await _boot16(station)
            tx = await station.call(
                call16.StartTransaction(
                    connector_id=1, id_tag="TAG", meter_start=0, timestamp=_now()
                )
            )
            for i in range(20):
                await station.call(
                    call16.MeterValues(
                        connector_id=1,
                        transaction_id=tx.transaction_id,
                        meter_value=[
                            {
                                "timestamp": _now(),
                                "sampledValue": [
                                    {"value": str(1000 + i), "measurand": "Power.Active.Import"}
                                ],
                            }
                        ],
                    )
                )
            task.cancel()
        await server.app.recorder.flush()
        threads = {t.name for t in threading.enumerate()}
        rows = (await server.http.get("/api/v1/stations/CP-PG/meter-values")).json()
        assert sorted(r["value"] for r in rows) == [float(1000 + i) for i in range(20)]
        assert server.app.recorder.stats.buffered_rows == 0
        # written by the recorder's thread, not on the serving loop
        assert any(name.startswith("evflex-store-writer") for name in threads)
    conn = await asyncpg.connect(PG_DSN.replace("/test", f"/{pg_database}"), timeout=5)
    try:
        assert await conn.fetchval("SELECT count(*) FROM meter_values") == 20
        assert await conn.fetchval("SELECT count(*) FROM transactions") == 1
    finally:
        await conn.close()
