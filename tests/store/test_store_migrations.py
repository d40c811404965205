"""Migrations: alembic creates exactly the schema tables.py describes, idempotently."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from store_helpers import Target, at, meter, power, rows, scalar

from evflex.store import db
from evflex.store.repository import Repository
from evflex.store.tables import UtcDateTime, metadata
from evflex.store.writer import EventRecorder

EXPECTED_TABLES = {
    "alembic_version",
    "stations",
    "evses",
    "transactions",
    "meter_values",
    "command_log",
    "station_events",
    "api_tokens",
    "grid_records",
    "grid_audit",
    "grid_unit_records",
    "grid_services",
    "grid_engine_state",
}


def _table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_upgrade_creates_the_schema(target: Target) -> None:
    await target.upgrade()
    engine = target.engine()
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_table_names) == EXPECTED_TABLES
            indexes = await conn.run_sync(
                lambda c: {
                    i["name"]: i["column_names"] for i in inspect(c).get_indexes("meter_values")
                }
            )
        assert indexes == {"ix_meter_values_station_id_ts": ["station_id", "ts"]}
        assert await scalar(engine, "SELECT version_num FROM alembic_version") == "0005"
    finally:
        await engine.dispose()


async def test_upgrade_twice_is_idempotent_and_keeps_data(target: Target) -> None:
    await target.upgrade()
    engine = target.engine()
    try:
        await Repository(engine).add_station("CS-1", None)
        await target.upgrade()
        assert await rows(engine, "SELECT version_num FROM alembic_version") == [
            {"version_num": "0005"}
        ]
        assert [s.station_id for s in await Repository(engine).load_stations()] == ["CS-1"]
    finally:
        await engine.dispose()


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migration_matches_tables_py(target: Target) -> None:
    """The hand-written revision and the Core tables describe the same schema."""
    await target.upgrade()
    engine = target.engine()
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_upgrade_called_on_a_running_loop_still_works(target: Target) -> None:
    # The CLI calls upgrade() inside asyncio.run(); env.py needs its own loop.
    db.upgrade(target.url, search_path=target.search_path)
    engine = target.engine()
    try:
        assert await scalar(engine, "SELECT version_num FROM alembic_version") == "0005"
    finally:
        await engine.dispose()


async def test_sqlite_connections_use_wal_and_normal_sync(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
    try:
        assert await scalar(engine, "PRAGMA journal_mode") == "wal"
        assert await scalar(engine, "PRAGMA synchronous") == 1  # NORMAL
        assert await scalar(engine, "PRAGMA busy_timeout") == db.SQLITE_BUSY_TIMEOUT_MS
    finally:
        await engine.dispose()


# -- 0005: meter history from one row per sampled value to one row per MeterValue ------

_OLD_SAMPLES = [  # station, evse, tx, ts (s), received (s), measurand, phase, unit, value
    ("CS-1", 1, "T1", 0, 1, "Power.Active.Import", None, "W", 7000.0),
    ("CS-1", 1, "T1", 0, 1, "Energy.Active.Import.Register", None, "Wh", 1234.5),
    ("CS-1", 1, "T1", 10, 11, "Current.Import", "L1", "A", 16.0),
    ("CS-1", 1, "T1", 10, 11, "Voltage", None, "V", math.inf),
    ("CS-1", 0, None, 10, 12, "Energy.Active.Import.Register", None, "Wh", 99.0),
    ("CS-2", 1, None, 5, 6, "SoC", None, "Percent", 41.0),
]


def _by_station(station_id: str) -> list[dict[str, Any]]:
    # what the API answers: the old row's fields but the station's, none of them dropped
    found = [
        {k: v for k, v in _old_row(s).items() if k != "station_id"}
        | {"context": None, "location": None}
        for s in _OLD_SAMPLES
        if s[0] == station_id
    ]
    return sorted(found, key=lambda d: (d["ts"], d["evse_id"], d["measurand"]))


_OLD = Table(  # meter_samples as revision 0004 left it
    "meter_samples",
    MetaData(),
    Column("station_id", String),
    Column("evse_id", Integer),
    Column("transaction_id", String),
    Column("ts", UtcDateTime()),
    Column("received_at", UtcDateTime()),
    Column("measurand", String),
    Column("phase", String),
    Column("unit", String),
    Column("value", Float),
)


def _old_row(sample: tuple[Any, ...]) -> dict[str, Any]:
    sid, evse, tx, ts, received, measurand, phase, unit, value = sample
    return {
        "station_id": sid,
        "evse_id": evse,
        "transaction_id": tx,
        "ts": at(ts),
        "received_at": at(received),
        "measurand": measurand,
        "phase": phase,
        "unit": unit,
        "value": value,
    }


def _key(d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["ts"], d["evse_id"], d["measurand"])


async def test_0005_carries_samples_over_grouped_by_meter_value_and_back(target: Target) -> None:
    await asyncio.to_thread(db.upgrade, target.url, search_path=target.search_path, revision="0004")
    engine = target.engine()
    try:
        async with engine.begin() as conn:
            await conn.execute(_OLD.insert(), [_old_row(s) for s in _OLD_SAMPLES])
        await target.upgrade()
        # CS-1 sent three MeterValues (station time + receive time), CS-2 one
        assert await scalar(engine, "SELECT count(*) FROM meter_values") == 4
        repo = Repository(engine)
        for station_id in ("CS-1", "CS-2"):
            got = await repo.meter_values(station_id, None, None)
            assert sorted(got, key=_key) == _by_station(station_id)
        # rows the writer adds after the migration read back the same way
        rec = EventRecorder(engine)
        rec(meter("CS-2", 1, 20, power(5.0)))
        await rec.flush()
        assert [v["value"] for v in await repo.meter_values("CS-2", at(20), None)] == [5.0]
    finally:
        await engine.dispose()
    await asyncio.to_thread(db.downgrade, target.url, "0004", search_path=target.search_path)
    engine = target.engine()
    try:
        async with engine.connect() as conn:
            back = [dict(r._mapping) for r in await conn.execute(select(_OLD))]
        expected = [_old_row(s) for s in _OLD_SAMPLES]
        expected.append(
            _old_row(("CS-2", 1, None, 20, 20.5, "Power.Active.Import", None, "W", 5.0))
        )
        assert sorted(back, key=repr) == sorted(expected, key=repr)
        assert "meter_values" not in await conn_tables(engine)
    finally:
        await engine.dispose()


async def conn_tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(_table_names)
