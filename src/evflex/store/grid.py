"""Grid-service rows (1 s activation records, control audit) written in batches.

The engine produces a few rows per second per service, one row per controlled unit
per second, and one audit row per command, so a plain buffer flushed every
`flush_interval_s` is enough. Rows are kept when a write fails and retried at the
next flush; beyond `max_rows` the oldest are dropped and counted (the in-memory
record still serves the API).

At 10,000 units a flush holds ~20,000 rows. On SQLite they are written from a
thread of their own (as the telemetry recorder does, see evflex.store.writer):
through the async engine, SQLAlchemy's per-row parameter work ran on the serving
loop — 280-550 ms per flush with the loop stalled up to 140 ms at a time
(measured, 10,000 audit + 10,000 unit rows).

In that thread the unit and audit rows go out as multi-row INSERTs
(`evflex.store.batch.insert_values`), not `executemany`: sqlite3 lets go of the GIL
around every statement, so one statement per row took the GIL back from the
serving loop 10,000 times a second while a service was active — and a fleet-wide
dispatch pass that met a flush ran up to 1.6x longer (a 200 ms release step
instead of 120 ms, `evflex bench run fcr -n 10000`). Unit rows come in as the
engine's tuples: no dict per row on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from evflex.store.batch import copy_records, insert_values
from evflex.store.tables import (
    epoch_us,
    grid_audit,
    grid_engine_state,
    grid_records,
    grid_services,
    grid_unit_records,
)
from evflex.store.writer import lower_priority, sync_sqlite_engine

log = logging.getLogger(__name__)


class GridStore:
    def __init__(
        self, engine: AsyncEngine, *, flush_interval_s: float = 1.0, max_rows: int = 100_000
    ) -> None:
        self._engine = engine
        self._interval = flush_interval_s
        self._max_rows = max_rows
        # per table: dicts (records, audit) or, for the unit rows, the engine's tuples
        # in `UNIT_COLUMNS` order
        self._pending: dict[Table, list[Any]] = {
            grid_records: [],
            grid_unit_records: [],
            grid_audit: [],
        }
        self._services: dict[str, dict[str, Any]] = {}  # latest row per service, unsaved
        self._state: dict[str, Any] | None = None  # the engine's latest snapshot, unsaved
        self.state_source: Callable[[], dict[str, Any] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.failures = 0
        self._sync: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._sync = sync_sqlite_engine(engine)
            self._executor = ThreadPoolExecutor(
                1, thread_name_prefix="evflex-grid-writer", initializer=lower_priority
            )

    def record(self, row: dict[str, Any]) -> None:
        self._add(grid_records, [row])

    def audit(self, row: dict[str, Any]) -> None:
        self._add(grid_audit, [row])

    def service(self, row: dict[str, Any]) -> None:
        """A service started or stopped: {id, kind, request (JSON text), started_at, stopped_at}."""
        self._services[row["id"]] = row

    def unit_records(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """One tick's per-unit rows, each `(ts, station_id, evse_id, baseline_w,
        target_w, measured_w)` (`UNIT_COLUMNS`)."""
        self._add(grid_unit_records, rows)

    def _add(self, table: Table, rows: Sequence[Any]) -> None:
        pending = self._pending[table]
        pending += rows
        excess = len(pending) - self._max_rows
        if excess > 0:  # the oldest go first
            del pending[:excess]
            self.dropped += excess

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._executor is not None and self._sync is not None:
            # the pooled sqlite3 connection belongs to the writer thread
            await asyncio.get_running_loop().run_in_executor(self._executor, self._sync.dispose)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> bool:
        """Write what is buffered; False (rows kept) when the database fails."""
        if self.state_source is not None:
            state = self.state_source()
            if state is not None:
                self._state = state
        if not await self._save_services_and_state():
            return False
        for table in self._pending:
            batch, self._pending[table] = self._pending[table], []
            if not batch:
                continue
            try:
                await self._insert(table, batch)
            except Exception:
                self.failures += 1
                log.exception("store: could not write %d %s rows; kept", len(batch), table.name)
                kept = batch + self._pending[table]
                self.dropped += max(0, len(kept) - self._max_rows)
                self._pending[table] = kept[-self._max_rows :]
                return False
        return True

    async def _insert(self, table: Table, rows: list[Any]) -> None:
        """SQLite: in the writer thread. PostgreSQL: COPY for the unit and audit rows,
        on the caller's loop (asyncpg encodes the rows; a 10,000-row flush through
        SQLAlchemy's INSERT took ~100 ms of it, stalling it up to 55 ms at a time)."""
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._insert_sync, table, rows)
            return
        copy = self._engine.dialect.driver == "asyncpg"
        async with self._engine.begin() as conn:
            if copy and table is grid_unit_records:
                await copy_records(conn, table.name, UNIT_COLUMNS, _aware_units(rows))
            elif copy and table is grid_audit:
                await copy_records(conn, table.name, AUDIT_COLUMNS, _audit_records(rows))
            else:
                if table is grid_unit_records:
                    rows = [dict(zip(UNIT_COLUMNS, r, strict=True)) for r in rows]
                await conn.execute(insert(table), rows)

    def _insert_sync(self, table: Table, rows: list[Any]) -> None:
        """SQLite, in the writer thread: unit and audit rows as multi-row INSERTs."""
        assert self._sync is not None
        with self._sync.begin() as conn:
            if table is grid_unit_records:
                insert_values(conn, _UNIT_HEAD, len(UNIT_COLUMNS), _unit_params(rows))
            elif table is grid_audit:
                insert_values(conn, _AUDIT_HEAD, len(AUDIT_COLUMNS), _audit_params(rows))
            else:
                conn.execute(insert(table), rows)

    async def _save_services_and_state(self) -> bool:
        services, self._services = self._services, {}
        state, self._state = self._state, None
        if not services and state is None:
            return True
        try:
            async with self._engine.begin() as conn:
                if services:
                    ids = list(services)
                    await conn.execute(delete(grid_services).where(grid_services.c.id.in_(ids)))
                    await conn.execute(insert(grid_services), list(services.values()))
                if state is not None:
                    await conn.execute(delete(grid_engine_state))
                    data = orjson.dumps(state).decode()
                    row = {"id": 1, "saved_at": datetime.now(UTC), "data": data}
                    await conn.execute(insert(grid_engine_state), [row])
        except Exception:
            self.failures += 1
            log.exception("store: could not save grid services/state; kept")
            self._services = {**services, **self._services}
            self._state = self._state if self._state is not None else state
            return False
        return True

    async def load(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The services that were active when evflex stopped, and the engine's snapshot."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(grid_services).where(grid_services.c.stopped_at.is_(None))
            )
            services = [dict(r._mapping) for r in rows]
            state = (await conn.execute(select(grid_engine_state.c.data))).scalar()
        return services, (orjson.loads(state) if state else None)

    async def records(self, service_id: str) -> list[dict[str, Any]]:
        query = (
            select(grid_records)
            .where(grid_records.c.service_id == service_id)
            .order_by(grid_records.c.ts)
        )
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def unit_rows(self, start: datetime, end: datetime | None) -> list[dict[str, Any]]:
        """Per-unit rows between `start` and `end` (open: until now), pending ones included."""
        await self.flush()
        query = select(grid_unit_records).where(grid_unit_records.c.ts >= start)
        if end is not None:
            query = query.where(grid_unit_records.c.ts <= end)
        query = query.order_by(grid_unit_records.c.ts, grid_unit_records.c.id)
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def audit_rows(self, limit: int = 1000) -> list[dict[str, Any]]:
        query = select(grid_audit).order_by(grid_audit.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]


UNIT_COLUMNS = ("ts", "station_id", "evse_id", "baseline_w", "target_w", "measured_w")
AUDIT_COLUMNS = (
    "at",
    "services",
    "station_id",
    "evse_id",
    "action",
    "reason",
    "limit_w",
    "outcome",
    "detail",
)
_UNIT_HEAD = f"INSERT INTO grid_unit_records ({', '.join(UNIT_COLUMNS)}) VALUES"
_AUDIT_HEAD = f"INSERT INTO grid_audit ({', '.join(AUDIT_COLUMNS)}) VALUES"


def _unit_params(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Unit rows as SQLite stores them (`UtcDateTime`: µs since 1970); a tick's rows
    share one timestamp, converted once."""
    out: list[tuple[Any, ...]] = []
    last: datetime | None = None
    us = 0
    for ts, sid, eid, base, target, measured in rows:
        if ts is not last:
            last, us = ts, epoch_us(ts)
        out.append((us, sid, eid, base, target, measured))
    return out


def _audit_params(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(epoch_us(r["at"]), *(r[c] for c in AUDIT_COLUMNS[1:])) for r in rows]


def _aware(ts: datetime) -> datetime:
    """What `UtcDateTime` binds on PostgreSQL: naive datetimes are UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _aware_units(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Unit rows for COPY: as they are, unless a timestamp is naive (COPY does not go
    through `UtcDateTime`)."""
    if all(row[0].tzinfo is not None for row in rows):
        return rows
    return [(_aware(row[0]), *row[1:]) for row in rows]


def _audit_records(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(_aware(r["at"]), *(r[c] for c in AUDIT_COLUMNS[1:])) for r in rows]
