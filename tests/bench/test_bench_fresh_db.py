"""`evflex bench --db postgresql…` runs each time on a new, empty database.

Without it a second run found the first one's rows: the server resumed that run's
FCR service (services are saved to survive restarts) next to the new one, and the
first step of every later run waited seconds for it (`fcr`, session 6)."""

from __future__ import annotations

import os

import asyncpg
import pytest

from evflex.bench.server import fresh_database

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def _databases() -> set[str]:
    conn = await asyncpg.connect(PG_DSN, timeout=3)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


async def test_sqlite_urls_are_left_to_the_caller() -> None:
    url = "sqlite+aiosqlite:////tmp/x/bench.db"
    async with fresh_database(url) as fresh:
        assert fresh == url


@pytest.mark.postgres
async def test_each_postgres_run_gets_an_empty_database_that_is_dropped_after() -> None:
    try:
        await _databases()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL at {PG_DSN} unreachable: {exc!r}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    names = []
    for _ in range(2):
        async with fresh_database(PG_URL) as url:
            assert url.startswith("postgresql+asyncpg://postgres@127.0.0.1:5432/test_bench_")
            name = url.rsplit("/", 1)[1]
            names.append(name)
            conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)
            try:  # empty: no table of an earlier run
                tables = await conn.fetchval(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
                assert tables == 0
                await conn.execute("CREATE TABLE left_behind (id int)")  # gone with its run
            finally:
                await conn.close()
            assert name in await _databases()
        assert name not in await _databases()
    assert names[0] != names[1]
