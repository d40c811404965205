"""Migrations: alembic creates exactly the schema tables.py describes, idempotently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from store_helpers import Target, rows, scalar

from evflex.store import db
from evflex.store.repository import Repository
from evflex.store.tables import metadata

EXPECTED_TABLES = {
    "alembic_version",
    "stations",
    "evses",
    "transactions",
    "meter_samples",
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
                    i["name"]: i["column_names"] for i in inspect(c).get_indexes("meter_samples")
                }
            )
        assert indexes == {"ix_meter_samples_station_id_ts": ["station_id", "ts"]}
        assert await scalar(engine, "SELECT version_num FROM alembic_version") == "0004"
    finally:
        await engine.dispose()


async def test_upgrade_twice_is_idempotent_and_keeps_data(target: Target) -> None:
    await target.upgrade()
    engine = target.engine()
    try:
        await Repository(engine).add_station("CS-1", None)
        await target.upgrade()
        assert await rows(engine, "SELECT version_num FROM alembic_version") == [
            {"version_num": "0004"}
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
        assert await scalar(engine, "SELECT version_num FROM alembic_version") == "0004"
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
