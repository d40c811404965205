"""Engine creation and schema migrations for SQLite (default) and PostgreSQL.

SQLite durability (WAL + synchronous=NORMAL): a committed transaction survives a
crash of the evflex *process* — the WAL is written before COMMIT returns — but the
last transactions before an OS crash or power loss may be rolled back, because
the WAL is fsynced at checkpoints rather than at each commit. The database is
never corrupted either way. That is the usual trade for telemetry; whoever needs
power-loss durability per commit runs PostgreSQL (synchronous_commit=on) or sets
synchronous=FULL at roughly 2x the commit cost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DEFAULT_URL = "sqlite+aiosqlite:///./evflex.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# How long an SQLite writer waits for another one (the recorder's flush vs. an API
# write) before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000

# Set on every SQLite connection (journal_mode is persistent, the rest are not).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA temp_store=MEMORY",
)


def create_engine(url: str, *, search_path: str | None = None) -> AsyncEngine:
    """An async engine with evflex's settings for the backend in `url`.

    `search_path` (PostgreSQL only) puts every table — and alembic's version
    table — in that schema; tests use it to isolate runs in one database.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, kwargs)
    connect_args: dict[str, Any] = {}
    if search_path is not None:
        connect_args["server_settings"] = {"search_path": search_path}
    return create_async_engine(
        parsed,
        connect_args=connect_args,
        pool_size=10,
        max_overflow=10,
        # A restarted PostgreSQL leaves dead pooled connections; the ping on
        # checkout costs one round trip and turns them into fresh ones instead of
        # a failed flush.
        pool_pre_ping=True,
        pool_recycle=3600,
        **kwargs,
    )


def _sqlite_engine(url: URL, kwargs: dict[str, Any]) -> AsyncEngine:
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets API reads run while the recorder writes; NORMAL skips the fsync
        # per commit (see the module docstring for what that means for durability).
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    return engine


def _json_dumps(value: Any) -> str:
    # orjson: ~10x faster than json.dumps; `default=str` so an unexpected type in a
    # station-supplied document is stored as text instead of failing the batch.
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def upgrade(url: str, *, search_path: str | None = None, revision: str = "head") -> None:
    """Apply the migrations up to `revision` (alembic upgrade). Synchronous and idempotent.

    Alembic's env.py drives the async engine with its own event loop, so call
    this before the server's loop starts or via `asyncio.to_thread`. If it is
    called on a thread that runs a loop anyway, it runs in a helper thread (and
    blocks that loop for the duration) rather than failing.
    """
    _migrate(url, search_path, "upgrade", revision)


def downgrade(url: str, revision: str, *, search_path: str | None = None) -> None:
    """Undo the migrations after `revision` (alembic downgrade); like `upgrade`."""
    _migrate(url, search_path, "downgrade", revision)


def _migrate(url: str, search_path: str | None, direction: str, revision: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _run_alembic(url, search_path, direction, revision)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="evflex-migrate") as pool:
        pool.submit(_run_alembic, url, search_path, direction, revision).result()


def _run_alembic(url: str, search_path: str | None, direction: str, revision: str) -> None:
    # Imported here: alembic is only needed when migrating, not on every import.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as attributes, not main options: ConfigParser would interpret a '%'
    # in a URL-encoded password.
    config.attributes["url"] = url
    config.attributes["search_path"] = search_path
    if direction == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)
