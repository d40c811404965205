"""Fixtures: every storage test runs on SQLite and, when reachable, on PostgreSQL.

PostgreSQL runs are isolated in a fresh schema per test (search_path), migrated
with alembic like production. When the server is unreachable the PostgreSQL
variants are skipped — unless CI=true, where a missing database is a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from store_helpers import Target

from evflex.store.repository import Repository
from evflex.store.writer import EventRecorder

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"

_pg_error: str | None = None
_pg_checked = False


async def _pg_unreachable() -> str | None:
    global _pg_checked, _pg_error
    if not _pg_checked:
        _pg_checked = True
        try:
            conn = await asyncpg.connect(PG_DSN, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            _pg_error = f"PostgreSQL at {PG_DSN} unreachable: {exc!r}"
        else:
            await conn.close()
    return _pg_error


async def _pg_exec(sql: str) -> None:
    conn = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _database(backend: str, tmp_path: Path) -> AsyncIterator[Target]:
    if backend == "sqlite":
        yield Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'evflex.db'}")
        return
    error = await _pg_unreachable()
    if error is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{error} (CI=true: PostgreSQL tests must run)")
        pytest.skip(error)
    schema = f"evflex_test_{uuid.uuid4().hex[:12]}"
    await _pg_exec(f'CREATE SCHEMA "{schema}"')
    try:
        yield Target("postgres", PG_URL, schema)
    finally:
        await _pg_exec(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    """An empty database (not migrated), once per backend."""
    async with _database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
async def pg_target(tmp_path: Path) -> AsyncIterator[Target]:
    """An empty PostgreSQL schema, for tests about PostgreSQL itself."""
    async with _database("postgres", tmp_path) as database:
        yield database


@pytest.fixture
async def engine(target: Target) -> AsyncIterator[AsyncEngine]:
    """A migrated database."""
    await target.upgrade()
    eng = target.engine()
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def repo(engine: AsyncEngine) -> Repository:
    return Repository(engine)


@pytest.fixture
async def recorder(target: Target, engine: AsyncEngine) -> AsyncIterator[EventRecorder]:
    # PostgreSQL as the app runs it: written from the recorder's own thread and loop
    rec = EventRecorder(engine, flush_interval_s=0.05, writer_engine=target.engine)
    try:
        yield rec
    finally:
        await rec.stop(timeout_s=1.0)
