"""EventRecorder: persists fleet events in batches, off the message hot path.

Cost model (the server's target is 25,000 MeterValues/s on one core):

* `__call__` runs inline in the OCPP handler. It appends the event object to a
  list and bumps a counter — no awaits, no row building, no SQLAlchemy
  (~0.3 µs per event, benchmarks/store_write.py).
* Every `flush_interval_s` (and on SQLite also as soon as `eager_rows` rows came
  in) the list is handed over to the writer, which turns the events into rows,
  a chunk of at most `max_batch_rows` rows at a time, one database transaction
  per chunk (see evflex.store.batch for the statements). State tables
  (stations, evses, transactions) get one coalesced row per key per chunk,
  however many events touched it.
* SQLite is written by one writer thread of ours, through a sync SQLAlchemy
  engine (stdlib sqlite3) on the same file. Why a thread, and why it keeps up:
  - On the event loop's thread (tried: d65a3a4..81cbc4c) every chunk paused all
    stations: 5,000 stations at 1 Hz stalled ~50 ms every ~0.3 s, ack p99 went
    from 10 to 40-50 ms (measured, issue 2's 1 Hz benchmark).
  - In a thread, the loop thread waits for the GIL at most one switch interval
    (5 ms) while the writer runs Python, and not at all while SQLite runs.
  - sqlite3 releases the GIL around each statement it steps, and a thread that
    gives the GIL up waits up to that 5 ms switch interval to get it back when
    the loop thread is busy. With one statement per row (executemany, and
    aiosqlite before d65a3a4) a saturated server therefore wrote almost nothing
    (measured: 0 rows during a 15 s saturation run, 11 s to catch up). The bulk
    tables are written with multi-row INSERTs instead (evflex.store.batch,
    `insert_values`): a few statements per chunk, a few GIL hand-overs.
  The writer thread also checkpoints the WAL, every 2 s (`_checkpoint`).
* PostgreSQL goes through the async driver (COPY for the meter values), from the same
  kind of writer thread, on an event loop of its own (`writer_engine`, as the app
  runs it): on the serving loop each of a chunk's dozen awaits waited for the
  loop's next turn, ~2.3 s under saturation, so it wrote nothing while the load
  lasted (measured) and its row encoding paused the stations. Without
  `writer_engine` it runs on the caller's loop (tests, tools).

Failure handling ("bad input loses nothing"):

* Database unreachable, locked, missing tables...: the chunk stays buffered and
  is retried with exponential backoff (0.5 s → 30 s); new events keep queueing
  behind it, so order is preserved. The buffer is capped at `max_buffer_rows`;
  beyond it meter samples and heartbeats are dropped and counted. State and audit
  events (starts, stops, status, commands, notices) are a small fraction of the
  volume and get 10% extra room: losing one costs more than losing a sample.
* A chunk the database *rejects* (constraint or data error, e.g. a NUL byte that
  PostgreSQL will not store) would block everything behind it forever. It is
  bisected — halves are retried — until the offending event is isolated; that
  one event is logged with its content, counted in `stats.rejected_rows` and
  skipped. Everything else is written.
* Delivery is at-least-once: if a COMMIT succeeds but its acknowledgement is
  lost (connection dropped at that instant), the retried chunk writes its meter
  values again and counts its offline transaction events twice.

Durability: with the default 0.25 s interval a sample acknowledged to the
station is committed within ~0.3 s while the database keeps up (the issue asks
for 1 s). At overload the writer, normally at a lower CPU priority than the
loop, runs at the loop's priority while the rows it takes have waited > 0.5 s
(`WriterPriority`): the server then acknowledges fewer messages per second and
keeps the promise (measured at saturation: 0.3-0.6 s to catch up instead of
1.9-2.4 s). What "committed" survives depends on the backend: see evflex.store.db.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from evflex.fleet.events import Event, MeterSampled, StationSeen
from evflex.store import db
from evflex.store.batch import Batch, Codec, TxKey, TxRow

log = logging.getLogger(__name__)

_MIN_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_LOG_EVERY_S = 10.0  # while failing or dropping, repeat the alarm at most this often
# Committed rows of open transactions kept in memory, so progress updates need no
# read; beyond this many (stops never seen) it is emptied and refilled on demand.
_TX_CACHE_MAX = 100_000
_SQLITE_CACHE_KIB = 32 * 1024  # page cache of the SQLite writer connection
_SQLITE_CHUNK_ROWS = 20_000  # rows per transaction on SQLite (in the writer thread)
_CHECKPOINT_EVERY_S = 2.0  # SQLite WAL checkpoints by the writer thread
_ASYNC_CHUNK_ROWS = 20_000  # on PostgreSQL (each chunk costs round trips, not pauses)


@dataclass(slots=True)
class RecorderStats:
    """Counters for /metrics. Plain attributes, updated in place."""

    rows_written: int = 0  # rows inserted or updated, all tables
    flushes: int = 0  # committed chunks
    flush_failures: int = 0  # chunks that failed (each retry counts)
    rows_in: int = 0  # rows buffered so far (the event loop's thread counts these...)
    rows_out: int = 0  # ...and the writer these: written or rejected; two counters, no lock
    dropped_rows: int = 0  # rows refused because the buffer was full
    rejected_rows: int = 0  # rows of events the database refused (logged, skipped)
    last_flush_s: float = 0.0  # duration of the last committed chunk
    boosts: int = 0  # times the writer was put back to the loop's priority (behind)
    writer_cpu_s: float = 0.0  # CPU time the writer thread spent writing
    boosted: bool = False  # running at the loop's priority now

    @property
    def buffered_rows(self) -> int:
        """Rows waiting to be written."""
        return self.rows_in - self.rows_out


class EventRecorder:
    """EventSink that turns fleet events into rows and writes them in batches."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        flush_interval_s: float = 0.25,
        max_batch_rows: int | None = None,
        max_buffer_rows: int = 2_000_000,
        live_values_interval_s: float = 0.0,
        eager_rows: int = 10_000,
        writer_engine: Callable[[], AsyncEngine] | None = None,
    ) -> None:
        """`live_values_interval_s`: write an EVSE's latest power/energy/SoC to the
        `evses` table at most this often (0 = every flush). Every sample still goes to
        `meter_values`; the throttle only spares the per-flush upsert of thousands of
        EVSE rows, which at 5,000 stations x 1 Hz stalled the loop ~100 ms per flush
        on PostgreSQL (measured). Live power is served from fleet state, not the table.

        `eager_rows`: once this many rows came in since the last hand-over, the
        writer thread gets them at once, without waiting for the interval. Each
        hand-over is one transaction, and at 5,000 stations a transaction dirties
        about one (station_id, ts) index page per station whatever its size: 10,000
        rows (0.4 s at 25,000 msg/s) write each such page for two rows instead of one
        (writer CPU at 25,000 msg/s offered: 11.2 → 9.8-10.1 µs per message).

        `writer_engine` (PostgreSQL): makes an engine like `engine` (same URL and
        settings); with it the recorder writes from its own thread, on an event loop
        of its own (asyncpg connections belong to the loop that opened them). Without
        it, PostgreSQL is written on the caller's event loop.
        """
        if max_batch_rows is None:
            sqlite = engine.dialect.name == "sqlite"
            max_batch_rows = _SQLITE_CHUNK_ROWS if sqlite else _ASYNC_CHUNK_ROWS
        if flush_interval_s <= 0 or max_batch_rows < 1 or max_buffer_rows < 1:
            raise ValueError("flush interval and row limits must be positive")
        self.stats = RecorderStats()
        self.rejected: deque[tuple[Event, str]] = deque(maxlen=100)  # for inspection
        self._engine = engine
        self._codec = Codec(engine.dialect.name)
        self._sync_engine = sync_sqlite_engine(engine) if self._codec.dialect == "sqlite" else None
        # The writer thread (see the module doc); None: PostgreSQL on the caller's loop.
        self._writer_engine_factory = writer_engine
        self._writer_engine: AsyncEngine | None = None  # made in the thread, on _writer_loop
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        threaded = self._sync_engine is not None or writer_engine is not None
        self._priority = WriterPriority(self.stats)
        self._executor = (
            ThreadPoolExecutor(
                1, thread_name_prefix="evflex-store-writer", initializer=self._priority.lower
            )
            if threaded
            else None
        )
        self._tx_cache: dict[TxKey, TxRow] = {}
        self._live_due: dict[tuple[str, int], float] = {}
        self._live_interval_s = live_values_interval_s
        self._interval = flush_interval_s
        self._max_batch_rows = max_batch_rows
        self._max_buffer_rows = max_buffer_rows
        self._hard_cap = max_buffer_rows + max(1, max_buffer_rows // 10)
        # Unwritten events, oldest first: _backlog[_pos:], then the lists in _queue,
        # then _incoming. The hot path appends to _incoming (event loop thread only);
        # _handover moves it, whole, to _queue (a deque: appended on the loop thread,
        # popped by the writer); _backlog and _pos belong to the writer.
        self._incoming: list[Event] = []
        self._incoming_rows = 0
        self._queue: deque[tuple[float, list[Event]]] = deque()  # (handed over at, events)
        self._backlog: list[Event] = []
        self._pos = 0
        # Bisection state after a rejected chunk (see _after_rejection).
        self._suspect_end = 0
        self._event_limit = 0
        self._lock = asyncio.Lock()
        self._started = False
        self._eager_rows = eager_rows
        self._eager_pending = False
        self._checkpoint_due = 0.0
        self._cpu_mark: float | None = None  # thread CPU time counted up to (thread drains)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._backoff_s = 0.0
        self._last_alarm = 0.0
        self._dropped_reported = 0

    # -- the hot path --------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Buffer one event. Synchronous, O(1), never raises."""
        try:
            stats = self.stats
            kind = type(event)  # every event is one row (a MeterValue with its values)
            shed = kind is MeterSampled or kind is StationSeen
            cap = self._max_buffer_rows if shed else self._hard_cap
            if stats.rows_in - stats.rows_out >= cap:
                stats.dropped_rows += 1
                return
            self._incoming.append(event)
            stats.rows_in += 1
            self._incoming_rows += 1
            if self._incoming_rows >= self._eager_rows and self._executor is not None:
                self._eager()
        except Exception:  # pragma: no cover - storage must never break message handling
            log.exception("store: could not buffer %r", type(event).__name__)

    def _eager(self) -> None:
        """Under heavy load, hand the rows to the writer thread now (SQLite).

        Called inline by the message handler that filled the buffer. Not left to
        the periodic flusher: a saturated loop runs timers and tasks only between
        I/O polls, and libuv (uvloop) polls up to 48 x 1,024 ready sockets before
        it returns — at 5,000 stations ~2.3 s during which the flusher could not
        run (measured). The hand-over is a list swap and, when the writer is idle,
        one job for it; the writing itself runs in the writer's thread.
        """
        if not self._started or self._backoff_s or self._stopping.is_set():
            return  # not started, or failing: the flusher retries with backoff
        self._handover()
        if not self._eager_pending:
            assert self._executor is not None
            self._eager_pending = True
            self._executor.submit(self._eager_job)

    def _eager_job(self) -> None:
        self._eager_pending = False  # rows handed over from now on need another job
        try:
            self._drain_in_thread()
        except Exception:  # pragma: no cover - the drains handle database errors
            log.exception("store: eager write failed")

    def _handover(self) -> None:
        if self._incoming:
            self._queue.append((time.monotonic(), self._incoming))
            self._incoming = []
            self._incoming_rows = 0

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the periodic flusher."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._started = True
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="evflex-store-flusher"
            )

    async def flush(self) -> None:
        """Write everything buffered now. Failures are counted and logged, not raised."""
        await self._drain()

    async def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the flusher, then write what is left, retrying for up to `timeout_s`."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        deadline = time.monotonic() + timeout_s
        try:
            while not await self._drain():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.error(
                        "STORE: shutting down with %d rows not written (database unavailable)",
                        self.stats.buffered_rows,
                    )
                    return
                await asyncio.sleep(min(self._backoff_s or _MIN_BACKOFF_S, remaining))
        finally:
            if self._executor is not None:
                # the pooled connections belong to the writer thread (and its loop)
                await asyncio.get_running_loop().run_in_executor(self._executor, self._close_thread)
                self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            delay = self._backoff_s or self._interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            try:
                await self._drain()
            except Exception:  # pragma: no cover - _drain handles its own errors
                log.exception("store: flusher error")
            self._report_drops()

    # -- draining ---------------------------------------------------------------------
    async def _drain(self) -> bool:
        """Write chunks until the buffer is empty (True) or the database fails (False)."""
        async with self._lock:
            self._handover()
            if self._executor is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, self._drain_in_thread)
            return await self._drain_async(self._engine)

    async def _drain_async(self, engine: AsyncEngine) -> bool:
        while True:
            if not self._take_backlog():
                return True
            if not await self._write_next_chunk(engine):
                return False

    def _drain_in_thread(self) -> bool:
        """In the writer thread: SQLite directly, PostgreSQL on the thread's own loop.

        Counts the thread's CPU time: on the server's one core, what persistence
        costs the stations (`evflex_store_writer_cpu_seconds_total`). Counted after
        every chunk, not per drain: under saturation one drain lasts as long as the
        load, and the counter would not move while it does.
        """
        self._cpu_mark = time.thread_time()
        try:
            return self._drain_in_thread_timed()
        finally:
            self._count_cpu()
            self._cpu_mark = None

    def _count_cpu(self) -> None:
        """Add the writer thread's CPU time since the last count (in a thread drain)."""
        if self._cpu_mark is not None:
            now = time.thread_time()
            self.stats.writer_cpu_s += now - self._cpu_mark
            self._cpu_mark = now

    def _drain_in_thread_timed(self) -> bool:
        if self._sync_engine is not None:
            return self._drain_sync()
        if self._writer_loop is None:
            self._writer_loop = asyncio.new_event_loop()
        if self._writer_engine is None:
            assert self._writer_engine_factory is not None
            self._writer_engine = self._writer_engine_factory()
        return self._writer_loop.run_until_complete(self._drain_async(self._writer_engine))

    def _checkpoint(self) -> None:
        """SQLite: copy the WAL into the database file, every `_CHECKPOINT_EVERY_S`.

        Not SQLite's automatic checkpoint every 1,000 pages: a chunk at 5,000
        stations dirties ~5,000 index pages, so that ran several times a second and
        wrote the same hot pages again each time (the commits held ~19 % of the
        server's samples at saturation; A/B: 3-6 % less CPU per message, 1 Hz p99
        9.2 vs 18.9 ms). PASSIVE: never waits for readers; what it cannot copy now
        is copied next time.
        """
        assert self._sync_engine is not None
        self._checkpoint_due = time.monotonic() + _CHECKPOINT_EVERY_S
        try:
            with self._sync_engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # the next one copies what this one could not
            log.debug("store: checkpoint failed: %s", exc)

    def _close_thread(self) -> None:
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._writer_loop is not None:
            if self._writer_engine is not None:
                self._writer_loop.run_until_complete(self._writer_engine.dispose())
            self._writer_loop.close()

    def _take_backlog(self) -> bool:
        """Events left to write? Takes the next handed-over list when the backlog is done."""
        if self._pos >= len(self._backlog):
            if not self._queue:
                self._backlog, self._pos = [], 0
                self._priority.behind(0.0)
                return False
            handed_at, self._backlog = self._queue.popleft()
            self._pos = 0
            self._suspect_end = self._event_limit = 0
            self._priority.behind(time.monotonic() - handed_at)
        return True

    def _drain_sync(self) -> bool:
        """SQLite, in the writer thread: write chunks; True when empty, False on failure."""
        assert self._sync_engine is not None
        while True:
            if time.monotonic() >= self._checkpoint_due:
                self._checkpoint()
            if not self._take_backlog():
                return True
            batch, end = self._next_batch()
            try:
                with self._sync_engine.begin() as conn:
                    written = batch.write_sync(conn, self._tx_cache)
            except Exception as exc:
                if not self._chunk_failed(exc, batch, end):
                    return False
            else:
                self._chunk_written(batch, end, written)

    def _next_batch(self) -> tuple[Batch, int]:
        max_events = self._event_limit or len(self._backlog)
        batch = Batch(self._codec, self._live_due, time.monotonic(), self._live_interval_s)
        end = batch.add(self._backlog, self._pos, self._max_batch_rows, max_events)
        return batch, end

    async def _write_next_chunk(self, engine: AsyncEngine) -> bool:
        batch, end = self._next_batch()
        try:
            async with engine.begin() as conn:
                written = await batch.write(conn, self._tx_cache)
        except Exception as exc:
            return self._chunk_failed(exc, batch, end)
        self._chunk_written(batch, end, written)
        return True

    def _chunk_failed(self, exc: Exception, batch: Batch, end: int) -> bool:
        """Count and handle a failed chunk; True if writing can go on (a rejection)."""
        self.stats.flush_failures += 1
        if _is_rejection(exc):
            self._after_rejection(end, batch.buffered_rows, exc)
            return True
        self._after_failure(exc)
        return False

    def _chunk_written(self, batch: Batch, end: int, written: int) -> None:
        self._pos = end
        self._remember_transactions(batch.tx_states)
        stats = self.stats
        stats.rows_written += written
        stats.rows_out += batch.buffered_rows
        stats.flushes += 1
        stats.last_flush_s = time.perf_counter() - batch.started
        self._count_cpu()
        if self._suspect_end and end >= self._suspect_end:
            self._suspect_end = self._event_limit = 0  # the rejection did not repeat
        self._recovered()

    def _remember_transactions(self, states: dict[TxKey, TxRow]) -> None:
        cache = self._tx_cache
        if len(cache) + len(states) > _TX_CACHE_MAX:
            cache.clear()
        for key, row in states.items():
            if row["stopped_at"] is None:
                cache[key] = row
            else:
                cache.pop(key, None)

    def _after_rejection(self, end: int, rows: int, exc: Exception) -> None:
        """Bisect a rejected chunk: halve it until the one bad event is isolated."""
        count = end - self._pos
        if count > 1:
            self._suspect_end = end
            self._event_limit = max(1, count // 2)
            log.warning("store: database rejected a chunk of %d events, bisecting: %s", count, exc)
            return
        event = self._backlog[self._pos]
        self._pos = end
        self.stats.rows_out += rows
        self.stats.rejected_rows += rows
        self.rejected.append((event, repr(exc)))
        log.error("STORE: database rejected an event, skipped it: %r: %s", event, exc)
        if end >= self._suspect_end:
            self._suspect_end = self._event_limit = 0
        else:
            self._event_limit = self._suspect_end - end

    def _after_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        self._backoff_s = min(_MAX_BACKOFF_S, max(_MIN_BACKOFF_S, self._backoff_s * 2))
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_alarm >= _LOG_EVERY_S or self._backoff_s == _MIN_BACKOFF_S:
            self._last_alarm = now
            log.error(
                "STORE WRITE FAILING for %.0f s, %d rows buffered (cap %d), retry in %.1f s: %s",
                now - self._failing_since,
                self.stats.buffered_rows,
                self._max_buffer_rows,
                self._backoff_s,
                exc,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "store: writes recovered after %.1f s", time.monotonic() - self._failing_since
            )
        self._failing_since = None
        self._backoff_s = 0.0

    def _report_drops(self) -> None:
        dropped = self.stats.dropped_rows
        now = time.monotonic()
        if dropped > self._dropped_reported and now - self._last_alarm >= _LOG_EVERY_S:
            self._last_alarm = now
            log.error(
                "STORE BUFFER FULL: %d rows dropped so far (cap %d rows)",
                dropped,
                self._max_buffer_rows,
            )
            self._dropped_reported = dropped


# How much lower (nice) the writer thread runs than the serving loop's thread.
_WRITER_NICE = 5


# The writer is put back to the loop's priority when the rows it takes waited longer
# than this (half the 1 s the issue allows from acknowledgement to commit)...
_BOOST_AFTER_S = 0.5
# ...and lowered again once what it takes waited less than this.
_RELAX_BELOW_S = 0.1


class WriterPriority:
    """The writer thread's CPU priority: lowered, and raised back while it is behind.

    Lowered (`lower_priority`), the loop's acks wait less for it; but a saturated
    loop then leaves it ~25 % of the core, and the rows it takes waited 1.7-3 s
    (measured at 17 k MeterValues/s): acknowledged samples were not durable within
    1 s. So while the rows it takes have waited more than `_BOOST_AFTER_S` it runs
    at the loop's priority (the loop then answers fewer messages per second, the
    store keeps its promise), and drops back below `_RELAX_BELOW_S`. Raising a
    priority needs CAP_SYS_NICE or RLIMIT_NICE (systemd: LimitNICE=+0); without
    either the writer stays lowered, and says so once.
    """

    def __init__(self, stats: RecorderStats) -> None:
        self.stats = stats
        self._tid: int | None = None
        self._base = 0
        self._can_raise = True

    def lower(self) -> None:
        """Thread initializer: remember the thread, then lower it."""
        if not sys.platform.startswith("linux"):
            return
        self._tid = threading.get_native_id()
        self._base = os.getpriority(os.PRIO_PROCESS, self._tid)
        lower_priority()
        # already at the bottom (nice 19): there is no lower priority to come back from
        self._can_raise = os.getpriority(os.PRIO_PROCESS, self._tid) > self._base

    def behind(self, waited_s: float) -> None:
        """The rows the writer takes now waited `waited_s`; adjust (writer thread)."""
        boosted = self.stats.boosted
        if self._tid is None or self._tid != threading.get_native_id():
            return  # not the writer thread (no thread, or a drain on the caller's loop)
        if not boosted and waited_s > _BOOST_AFTER_S and self._can_raise:
            if self._set(self._base):
                self.stats.boosted = True
                self.stats.boosts += 1
        elif (
            boosted and waited_s < _RELAX_BELOW_S and self._set(min(19, self._base + _WRITER_NICE))
        ):
            self.stats.boosted = False

    def _set(self, nice: int) -> bool:
        assert self._tid is not None
        try:
            os.setpriority(os.PRIO_PROCESS, self._tid, nice)
        except OSError as exc:
            self._can_raise = False
            log.warning(
                "store: the writer is behind and cannot run at the server's priority (%s);"
                " under overload samples may take longer than 1 s to be committed",
                exc,
            )
            return False
        return True


def lower_priority() -> None:
    """Writer thread: yield the core to the serving loop (Linux; elsewhere a no-op).

    On the server's one core the writer's SQLite work competes with the loop that
    answers the stations. Measured at 5,000 stations x 1 Hz (ack p99, runs of 30 s)
    and at saturation (telemetry-max, rows left unwritten after 15 s):
    nice 0 — p99 13.9-33 ms, 5 k rows behind; nice 10 — p99 10.2-13.3 ms but the
    writer gets ~10 % of a saturated core: 286 k rows behind, 5.4 s to catch up
    (durability > 1 s); nice 5 — the writer gets ~25 %, 32 k rows behind, 0.9 s.
    Linux keeps a nice value per thread; elsewhere PRIO_PROCESS would renice the
    whole process, so nothing is done there.
    """
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + _WRITER_NICE)
    except OSError as exc:  # pragma: no cover - e.g. a seccomp profile forbids it
        log.debug("store: writer thread keeps the process's priority: %s", exc)


def sync_sqlite_engine(engine: AsyncEngine) -> Engine:
    """A synchronous engine (stdlib sqlite3) on the async engine's SQLite file."""
    url = engine.url.set(drivername="sqlite")
    sync = create_engine(url, json_serializer=db._json_dumps)

    @event.listens_for(sync, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # as evflex.store.db sets them for the async engine; in the writer thread a
        # wait for another writer's lock (grid records, the API) stalls no station
        cursor = dbapi_connection.cursor()
        for pragma in (
            *db.SQLITE_PRAGMAS,
            f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}",
            "PRAGMA wal_autocheckpoint=0",  # see EventRecorder._checkpoint
        ):
            # Each chunk touches one leaf of the (station_id, ts) index per station
            # (5,000 pages at 5,000 stations); SQLite's default 2 MB page cache makes
            # every chunk read them back (measured: ~15% less CPU per row at 500k rows).
            cursor.execute(pragma)
        cursor.close()

    return sync


def _is_rejection(exc: BaseException) -> bool:
    """The database refuses this data (retrying cannot help) vs. it is unavailable.

    Drivers wrap each other's exceptions (SQLAlchemy's asyncpg adapter raises a
    generic Error caused by asyncpg.DataError), so the whole cause chain is read.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if _refuses_value(current):
            return True
        seen += 1
        nxt = getattr(current, "orig", None)
        current = nxt if isinstance(nxt, BaseException) else current.__cause__
    return False


# SQLSTATE classes 22 (data exception: bad encoding, out of range) and 23
# (integrity: NOT NULL, unique) mean the row itself is refused.
_REJECTING_SQLSTATE_CLASSES = ("22", "23")


def _refuses_value(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
        return True
    if isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError):
        return True  # a bind processor failed on a value
    # Encoders raise ValueError/TypeError/OverflowError for a value they cannot
    # convert (sqlite3: a huge int, a lone surrogate; asyncpg: a wrong type).
    if isinstance(exc, ValueError | TypeError | OverflowError):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_REJECTING_SQLSTATE_CLASSES)
