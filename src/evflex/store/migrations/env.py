"""Alembic environment: runs migrations through evflex's async engine.

Configured programmatically by `evflex.store.db.upgrade` (URL and optional
PostgreSQL search_path in `config.attributes`). The async engine is driven with
`run_sync` so the same engine settings (SQLite pragmas, asyncpg) apply to
migrations as to the server. Also usable from the alembic CLI with a
`sqlalchemy.url` main option, for writing new revisions.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from evflex.store.db import create_engine
from evflex.store.tables import metadata

config = context.config


def _do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str, search_path: str | None) -> None:
    engine = create_engine(url, search_path=search_path)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def _run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("evflex migrations run online only (no SQL script generation)")
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: use evflex.store.db.upgrade(url)")
    asyncio.run(_run_async(url, config.attributes.get("search_path")))


_run()
