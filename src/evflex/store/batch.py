"""Turning a chunk of fleet events into rows, and writing them in one transaction.

Used by evflex.store.writer.EventRecorder. The high-volume statements — meter
values, EVSE live values, transaction progress, the command log — are plain SQL
executed with driver-native tuples (`exec_driver_sql` executemany, or binary COPY
for meter values on PostgreSQL): inserting the samples through Core `insert()` with
a dict per row measured 2.5-4.5x the CPU per message (benchmarks/store_write.py,
"core" rows). Low-volume tables (stations, notices) use Core, which also handles
their JSON.

The writing itself is synchronous (`Batch.write_sync` on a sync `Connection`):
SQLite runs it in the recorder's writer thread (see EventRecorder), with the bulk
tables in multi-row INSERTs (`insert_values`); PostgreSQL runs it through
`AsyncConnection.run_sync` plus an awaited COPY.

SQLite: no NULL is bound on the meter-value and command-log inserts. Python's sqlite3
module looks for an adapter for every parameter that is not an int, float, str or
bytes — `None` included — and that lookup costs ~0.8 µs per NULL (measured: an
11-column sample row with 4 NULLs 4.2 µs, the same row without them 1.9 µs). Rows
are therefore inserted with only their non-NULL columns, one executemany per set
of columns (`_insert_sparse`); the omitted columns have no default and read NULL.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import Connection, case, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from evflex.fleet.events import (
    ChargingNeedsReported,
    CommandCompleted,
    Event,
    MeterSampled,
    StationBooted,
    StationConnected,
    StationDisconnected,
    StationNotice,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
    TransactionUpdated,
)
from evflex.fleet.model import EvseStatus
from evflex.fleet.state import ENERGY_MEASURAND, EXPORT_MEASURAND, POWER_MEASURAND, SOC_MEASURAND
from evflex.store import sampled
from evflex.store import tables as t
from evflex.store.upsert import insert_for

log = logging.getLogger(__name__)

TxKey = tuple[str, str]
TxRow = dict[str, Any]
TxEvent = TransactionStarted | TransactionUpdated | TransactionStopped

_KEY_CHUNK = 2000  # keys per `IN` list (bound-parameter limits of both drivers)

# TransactionEvent chargingState → EVSE status, as evflex.fleet.state applies it.
_CHARGING_STATE_STATUS = {
    "Charging": EvseStatus.CHARGING.value,
    "SuspendedEV": EvseStatus.SUSPENDED_EV.value,
    "SuspendedEVSE": EvseStatus.SUSPENDED_EVSE.value,
    "EVConnected": EvseStatus.OCCUPIED.value,
    "Idle": EvseStatus.OCCUPIED.value,
}


# -- SQL ------------------------------------------------------------------------------------

_EVSE_COLUMNS = (
    "station_id",
    "evse_id",
    "status",
    "status_at",
    "power_w",
    "power_measured_at",
    "energy_wh",
    "soc_pct",
    "meter_at",
)
_NEWER_POWER = (
    "excluded.power_measured_at IS NOT NULL AND (evses.power_measured_at IS NULL"
    " OR excluded.power_measured_at >= evses.power_measured_at)"
)
_NEWER_METER = (
    "excluded.meter_at IS NOT NULL AND (evses.meter_at IS NULL"
    " OR excluded.meter_at >= evses.meter_at)"
)
# One upsert for every EVSE patch: NULL leaves a column alone, and live meter values
# only move forward in station time, like the fleet state: an offline backlog that
# arrives late is history (meter_values), not the current value.
_EVSE_INSERT_HEAD = f"INSERT INTO evses ({', '.join(_EVSE_COLUMNS)}) VALUES"
_EVSE_CONFLICT = f"""
ON CONFLICT (station_id, evse_id) DO UPDATE SET
  status = COALESCE(excluded.status, evses.status),
  status_at = CASE WHEN excluded.status IS NULL THEN evses.status_at ELSE excluded.status_at END,
  power_w = CASE WHEN {_NEWER_POWER} THEN excluded.power_w ELSE evses.power_w END,
  power_measured_at = CASE WHEN {_NEWER_POWER}
    THEN excluded.power_measured_at ELSE evses.power_measured_at END,
  energy_wh = CASE WHEN excluded.energy_wh IS NOT NULL AND {_NEWER_METER}
    THEN excluded.energy_wh ELSE evses.energy_wh END,
  soc_pct = CASE WHEN excluded.soc_pct IS NOT NULL AND {_NEWER_METER}
    THEN excluded.soc_pct ELSE evses.soc_pct END,
  meter_at = CASE WHEN {_NEWER_METER} THEN excluded.meter_at ELSE evses.meter_at END
"""
_EVSE_UPSERT = f"{_EVSE_INSERT_HEAD} ({', '.join('?' for _ in _EVSE_COLUMNS)}){_EVSE_CONFLICT}"

_TX_COLUMNS = tuple(c.name for c in t.transactions.columns)
_TX_INSERT = (
    f"INSERT INTO transactions ({', '.join(_TX_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _TX_COLUMNS)})"
    " ON CONFLICT (station_id, transaction_id) DO NOTHING"
)
_TX_UPDATE_SET = (
    "last_seq_no",
    "seq_gaps",
    "offline_events",
    "stopped_at",
    "meter_stop_wh",
    "stop_reason",
)
_TX_UPDATE = (
    f"UPDATE transactions SET {', '.join(f'{c} = ?' for c in _TX_UPDATE_SET)}"
    " WHERE station_id = ? AND transaction_id = ?"
)
_TX_TIMESTAMPS = frozenset({"started_at", "stopped_at"})

_VALUE_INSERT = (
    f"INSERT INTO meter_values ({', '.join(t.METER_VALUE_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in t.METER_VALUE_COLUMNS)})"
)
_VALUE_INSERT_HEAD = f"INSERT INTO meter_values ({', '.join(t.METER_VALUE_COLUMNS)}) VALUES"


_COMMAND_COLUMNS = (
    "station_id",
    "action",
    "request",
    "response",
    "error",
    "outcome",
    "sent_at",
    "duration_ms",
)
_COMMAND_INSERT = (
    f"INSERT INTO command_log ({', '.join(_COMMAND_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _COMMAND_COLUMNS)})"
)
# An answered call (SQLite): no error. Built without that NULL column.
_COMMAND_ANSWERED = tuple(i for i, c in enumerate(_COMMAND_COLUMNS) if c != "error")


def _numbered(sql: str) -> str:
    """qmark placeholders → asyncpg's $1, $2, ... (the SQL above has no literal '?')."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        out.append(f"${i}{part}")
    return "".join(out)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Codec:
    """Per-backend SQL text, timestamp encoding and bulk write strategy."""

    def __init__(self, dialect: str) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"evflex stores data in SQLite or PostgreSQL, not {dialect}")
        self.dialect = dialect
        sqlite = dialect == "sqlite"
        # How a datetime travels on the raw path: what UtcDateTime would bind.
        self.ts: Callable[[datetime], Any] = t.epoch_us if sqlite else _aware
        fix: Callable[[str], str] = (lambda sql: sql) if sqlite else _numbered
        self.value_insert = fix(_VALUE_INSERT)
        self.evse_upsert = fix(_EVSE_UPSERT)
        self.tx_insert = fix(_TX_INSERT)
        self.tx_update = fix(_TX_UPDATE)
        self.command_insert = fix(_COMMAND_INSERT)
        # Binary COPY on PostgreSQL: 1.4-2.4x the rows/s of executemany, at about 2/3
        # of its CPU per row (benchmarks/store_write.py).
        self.use_copy = not sqlite
        # SQLite: insert rows without their NULL columns (see the module doc)
        self.sparse = sqlite


def _insert_sparse(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    short: tuple[int, ...] = (),
) -> None:
    """INSERT `rows` binding only their non-NULL values, in their order.

    Consecutive rows with the same NULL pattern share one executemany. A row of
    `len(short)` values (when `short` is given) is already compact: its values are
    those of the `short` columns. Only for tables whose omitted columns have no
    default (they must read NULL).
    """
    runs: list[tuple[tuple[int, ...], list[tuple[Any, ...]]]] = []
    key: tuple[int, ...] | None = None
    params: list[tuple[Any, ...]] = []
    width = len(short) if short else -1
    for row in rows:
        if len(row) == width:
            present, values = short, row
        else:
            present = tuple(i for i, value in enumerate(row) if value is not None)
            values = tuple(row[i] for i in present)
        if present != key:
            key, params = present, []
            runs.append((present, params))
        params.append(values)
    for present, group in runs:
        names = ", ".join(columns[i] for i in present)
        insert_values(conn, f"INSERT INTO {table} ({names}) VALUES", len(present), group)


# SQLite's bound-parameter limit per statement (SQLITE_MAX_VARIABLE_NUMBER: 32,766
# since 3.32.0, 999 before).
_SQLITE_MAX_PARAMS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def insert_values(
    conn: Connection, head: str, width: int, rows: list[tuple[Any, ...]], tail: str = ""
) -> None:
    """SQLite: INSERT `rows` (each `width` values) with multi-row VALUES statements.

    Why not executemany: sqlite3 releases the GIL around every statement it steps,
    and the writer thread then waits up to the 5 ms switch interval to get it back
    while the event loop's thread is busy — per row, that starved the writer under
    load (see evflex.store.writer). Here a chunk is a few statements. Their sizes
    are powers of two (at most the parameter limit allows), so a handful of
    statement texts cover every chunk and stay in sqlite3's statement cache.
    """
    cap = 1 << ((_SQLITE_MAX_PARAMS // width).bit_length() - 1)
    flat = chain.from_iterable
    i, n = 0, len(rows)
    while i < n:
        size = min(cap, 1 << ((n - i).bit_length() - 1))
        conn.exec_driver_sql(_values_sql(head, width, size, tail), tuple(flat(rows[i : i + size])))
        i += size


@functools.lru_cache(maxsize=256)
def _values_sql(head: str, width: int, count: int, tail: str) -> str:
    row = f"({', '.join('?' for _ in range(width))})"
    return f"{head} {', '.join(row for _ in range(count))}{tail}"


async def _copy_samples(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    await copy_records(conn, "meter_values", t.METER_VALUE_COLUMNS, rows)


async def copy_records(
    conn: AsyncConnection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """PostgreSQL (asyncpg): COPY `rows` into `table`, inside `conn`'s transaction.

    Rows go to the driver as they are, with no per-row parameter processing by
    SQLAlchemy (for 10,000 rows that took ~50 ms of the caller's event loop at a time).
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter opens the transaction lazily, on the first
        # statement; COPY through the raw connection must run inside it, so the
        # rows commit or roll back together with the rest of the transaction.
        await conn.exec_driver_sql("SELECT 1")
    await driver.copy_records_to_table(table, records=rows, columns=list(columns))


# -- building rows ------------------------------------------------------------------------------


class EvsePatch:
    """The latest values for one EVSE within a chunk (None = not reported)."""

    __slots__ = ("energy_wh", "meter_at", "power_at", "power_w", "soc_pct", "status", "status_at")

    def __init__(self) -> None:
        self.status: str | None = None
        self.status_at: datetime | None = None
        self.power_w: float | None = None
        self.power_at: datetime | None = None
        self.energy_wh: float | None = None
        self.soc_pct: float | None = None
        self.meter_at: datetime | None = None


_STATION_PATCH_KEYS = (
    "station_id",
    "protocol",
    "vendor",
    "model",
    "firmware",
    "serial",
    "booted_at",
    "last_seen",
)


class Batch:
    """Rows for one chunk of events, built without touching the database."""

    def __init__(
        self,
        codec: Codec,
        live_due: dict[tuple[str, int], float] | None = None,
        now: float = 0.0,
        live_interval_s: float = 0.0,
    ) -> None:
        self.codec = codec
        self.started = time.perf_counter()
        # Throttle of the EVSE "latest values" upsert (see EventRecorder): per EVSE, the
        # monotonic time before which meter readings skip the evses table. The samples
        # themselves are always written.
        self._live_due = live_due if live_due is not None else {}
        self._now = now
        self._live_interval_s = live_interval_s
        # meter_values rows (METER_VALUE_COLUMNS)
        self.samples: list[tuple[Any, ...]] = []
        self.untransacted = 0  # how many of them have no transaction id (a NULL)
        self.stations: dict[str, dict[str, Any]] = {}
        self.evses: dict[tuple[str, int], EvsePatch] = {}
        self.tx_events: list[TxEvent] = []
        self.notices: list[dict[str, Any]] = []
        self.commands: list[tuple[Any, ...]] = []
        self._last_request: Any = None  # the command-log request last serialised...
        self._last_request_text = ""  # ...and its JSON
        self.buffered_rows = 0  # what these events counted for in stats.buffered_rows
        self.tx_states: dict[TxKey, TxRow] = {}  # transaction rows as this chunk leaves them

    def add(self, events: Sequence[Event], start: int, max_rows: int, max_events: int) -> int:
        """Take events from `start` until `max_rows` rows or `max_events` events; return end.

        The meter branch is the hot loop (one iteration per MeterValue), hence the
        locals: one row per MeterValue, its sampled values in one document.
        """
        stop = min(len(events), start + max_events)
        ts = self.codec.ts
        append = self.samples.append
        encode = sampled.encode
        untransacted = 0
        last_at: datetime | None = None
        at: Any = None
        rows = 0
        i = start
        while i < stop and (rows < max_rows or i == start):
            event = events[i]
            i += 1
            if type(event) is MeterSampled:
                sid, eid, tx = event.station_id, event.evse_id, event.transaction_id
                if event.at is not last_at:  # a fleet reporting at once shares timestamps
                    last_at = event.at
                    at = ts(last_at)
                append((sid, eid, tx, at, ts(event.received_at), encode(event.values)))
                if tx is None:
                    untransacted += 1
                rows += 1
                # 1.6 connector 0 is the station's own meter, not an EVSE
                if eid != 0 and self._live_due.get((sid, eid), 0.0) <= self._now:
                    if self._live_interval_s:
                        self._live_due[(sid, eid)] = self._now + self._live_interval_s
                    self._meter_patch(event)
            else:
                rows += 1
                self._other(event)
        self.buffered_rows = rows
        self.untransacted += untransacted
        return i

    def _meter_patch(self, ev: MeterSampled) -> None:
        patch = self._evse(ev.station_id, ev.evse_id)
        power, energy, soc = live_values(ev)
        at = ev.at
        if power is not None and (patch.power_at is None or at >= patch.power_at):
            patch.power_w, patch.power_at = power, at
        if (energy is not None or soc is not None) and (
            patch.meter_at is None or at >= patch.meter_at
        ):
            # Energy and SoC travel with the time of the sample they come from, so
            # the database can refuse them if it holds newer ones. A newer sample
            # replaces both (None = keep the stored value): mixing the energy of an
            # older sample with the time of a newer one could move energy back.
            patch.meter_at, patch.energy_wh, patch.soc_pct = at, energy, soc

    def _evse(self, station_id: str, evse_id: int) -> EvsePatch:
        key = (station_id, evse_id)
        patch = self.evses.get(key)
        if patch is None:
            patch = self.evses[key] = EvsePatch()
        return patch

    def _station(self, station_id: str) -> dict[str, Any]:
        patch = self.stations.get(station_id)
        if patch is None:
            patch = self.stations[station_id] = dict.fromkeys(_STATION_PATCH_KEYS)
            patch["station_id"] = station_id
        return patch

    def _other(self, ev: Event) -> None:
        if type(ev) is CommandCompleted:  # thousands at once after a broadcast
            self.commands.append(self._command_row(ev))
            return
        if isinstance(ev, StatusChanged):
            if ev.evse_id != 0:  # connector 0 is the whole station (as in fleet state)
                patch = self._evse(ev.station_id, ev.evse_id)
                patch.status, patch.status_at = str(ev.status), ev.at
        elif isinstance(ev, TransactionUpdated):
            self.tx_events.append(ev)
            status = _CHARGING_STATE_STATUS.get(ev.charging_state or "")
            if status is not None and not ev.offline:
                patch = self._evse(ev.station_id, ev.evse_id)
                patch.status, patch.status_at = status, ev.at
        elif isinstance(ev, TransactionStarted | TransactionStopped):
            self.tx_events.append(ev)
        elif isinstance(ev, StationNotice):
            self.notices.append(
                {"station_id": ev.station_id, "kind": ev.kind, "at": ev.at, "data": ev.data}
            )
        elif isinstance(ev, CommandCompleted):
            self.commands.append(self._command_row(ev))
        elif isinstance(ev, StationSeen):
            _seen(self._station(ev.station_id), ev.at)
        elif isinstance(ev, StationConnected):
            station = self._station(ev.station_id)
            station["protocol"] = str(ev.protocol)
            _seen(station, ev.at)
        elif isinstance(ev, StationBooted):
            station = self._station(ev.station_id)
            station.update(
                vendor=ev.vendor,
                model=ev.model,
                firmware=ev.firmware,
                serial=ev.serial,
                booted_at=ev.at,
            )
            _seen(station, ev.at)
        elif isinstance(ev, ChargingNeedsReported):
            # kept as a station notice: what the EV (or driver) said, for the audit trail
            n = ev.needs
            data = {
                "evse_id": ev.evse_id,
                "source": n.source,
                "departure_at": n.departure_at.isoformat() if n.departure_at else None,
                "energy_wh": n.energy_wh,
                "ev_max_power_w": n.ev_max_power_w,
                "battery_wh": n.battery_wh,
                "v2g": n.v2g,
                "opt_out": n.opt_out,
            }
            self.notices.append(
                {"station_id": ev.station_id, "kind": "charging_needs", "at": n.at, "data": data}
            )
        elif not isinstance(ev, StationDisconnected):
            log.warning("store: ignoring unknown event type %s", type(ev).__name__)

    def _command_row(self, ev: CommandCompleted) -> tuple[Any, ...]:
        # A broadcast logs thousands of calls that share one request object:
        # serialise it once per run of them.
        request = ev.request
        if request is not self._last_request:
            self._last_request, self._last_request_text = request, _json_text(request)
        if self.codec.sparse and ev.error is None and ev.response is not None:
            return (  # _COMMAND_ANSWERED
                ev.station_id,
                ev.action,
                self._last_request_text,
                _json_text(ev.response),
                ev.outcome,
                self.codec.ts(ev.sent_at),
                ev.duration_ms,
            )
        return (
            ev.station_id,
            ev.action,
            self._last_request_text,
            None if ev.response is None else _json_text(ev.response),
            ev.error,
            ev.outcome,
            self.codec.ts(ev.sent_at),
            ev.duration_ms,
        )

    # -- writing ---------------------------------------------------------------------
    async def write(self, conn: AsyncConnection, tx_cache: dict[TxKey, TxRow]) -> int:
        """Write the chunk on an async `conn` (inside its transaction); return the row count.

        Everything but the samples runs through `write_sync` under `run_sync`; the
        samples then go in with binary COPY (PostgreSQL) in the same transaction.
        """
        written: int = await conn.run_sync(self.write_sync, tx_cache, not self.codec.use_copy)
        if self.codec.use_copy and self.samples:
            await _copy_samples(conn, self.samples)
            written += len(self.samples)
        return written

    def write_sync(
        self, conn: Connection, tx_cache: dict[TxKey, TxRow], samples: bool = True
    ) -> int:
        """Write the chunk on `conn` (inside its transaction); return the row count.

        `tx_cache` holds committed transaction rows; it is only read here. After the
        commit the caller stores `self.tx_states` into it (a failed chunk must not
        leave its uncommitted state behind). `samples=False` leaves the meter samples
        to the caller (COPY).
        """
        written = 0
        if self.stations:
            written += _write_stations(conn, list(self.stations.values()))
        if self.evses:
            written += self._write_evses(conn)
        if self.tx_events:
            written += self._write_transactions(conn, tx_cache)
        if samples and self.samples:
            if not self.codec.sparse:
                conn.exec_driver_sql(self.codec.value_insert, self.samples)
            elif not self.untransacted:  # the common case: no NULL to leave out
                insert_values(conn, _VALUE_INSERT_HEAD, len(t.METER_VALUE_COLUMNS), self.samples)
            else:
                _insert_sparse(conn, "meter_values", t.METER_VALUE_COLUMNS, self.samples)
            written += len(self.samples)
        if self.notices:
            conn.execute(t.station_events.insert(), self.notices)
            written += len(self.notices)
        if self.commands:
            # the raw path, like samples: a fleet-wide command logs thousands of rows and
            # Core's per-row parameter processing ran on the event loop (profiled)
            if self.codec.sparse:
                _insert_sparse(
                    conn, "command_log", _COMMAND_COLUMNS, self.commands, _COMMAND_ANSWERED
                )
            else:
                conn.exec_driver_sql(self.codec.command_insert, self.commands)
            written += len(self.commands)
        return written

    def _write_evses(self, conn: Connection) -> int:
        ts = self.codec.ts

        def enc(value: datetime | None) -> Any:
            return None if value is None else ts(value)

        params = [
            (
                sid,
                eid,
                p.status,
                enc(p.status_at),
                p.power_w,
                enc(p.power_at),
                p.energy_wh,
                p.soc_pct,
                enc(p.meter_at),
            )
            for (sid, eid), p in self.evses.items()
        ]
        if self.codec.sparse:  # SQLite: multi-row statements (see insert_values)
            insert_values(conn, _EVSE_INSERT_HEAD, len(_EVSE_COLUMNS), params, _EVSE_CONFLICT)
        else:
            conn.exec_driver_sql(self.codec.evse_upsert, params)
        return len(params)

    def _write_transactions(self, conn: Connection, tx_cache: dict[TxKey, TxRow]) -> int:
        """Apply start/update/stop events in order on top of the stored rows.

        Gap counting needs the stored last_seq_no. Rows come from the cache of
        committed rows, else from one query per 2,000 unknown keys; only the
        recorder writes these columns, so the read-modify-write cannot race.
        """
        keys = {(ev.station_id, ev.transaction_id) for ev in self.tx_events}
        states = self.tx_states
        for key in keys:
            cached = tx_cache.get(key)
            if cached is not None:
                states[key] = dict(cached)  # a copy: the cache only changes after commit
        stored = _load_tx_rows(conn, [k for k in keys if k not in states])
        new: set[TxKey] = set()
        changed: set[TxKey] = set()
        states.update(stored)
        for ev in self.tx_events:
            _apply_tx_event(states, new, changed, ev)
        ts = self.codec.ts

        def enc(name: str, value: Any) -> Any:
            return ts(value) if value is not None and name in _TX_TIMESTAMPS else value

        inserts = [tuple(enc(c, states[k][c]) for c in _TX_COLUMNS) for k in new]
        updates = [tuple(enc(c, states[k][c]) for c in _TX_UPDATE_SET) + k for k in changed - new]
        if inserts:
            conn.exec_driver_sql(self.codec.tx_insert, inserts)
        if updates:
            conn.exec_driver_sql(self.codec.tx_update, updates)
        return len(inserts) + len(updates)


def live_values(ev: MeterSampled) -> tuple[float | None, float | None, float | None]:
    """(net power W, energy register Wh, SoC %) of a sample, None where absent.

    Same rules as evflex.fleet.state: power is Power.Active.Import minus
    Power.Active.Export, the total preferred over the sum of phases, kW → W;
    energy is the phase-less Energy.Active.Import.Register, kWh → Wh.
    """
    imp = exp = energy = soc = None
    phase_sum = 0.0
    phases = 0
    for sv in ev.values:
        measurand = sv.measurand
        if measurand == POWER_MEASURAND:
            watts = sv.value * 1000.0 if sv.unit == "kW" else sv.value
            if sv.phase is None or sv.phase == "N":
                imp = watts
            else:
                phase_sum += watts
                phases += 1
        elif measurand == ENERGY_MEASURAND:
            if sv.phase is None:
                energy = sv.value * 1000.0 if sv.unit == "kWh" else sv.value
        elif measurand == SOC_MEASURAND:
            soc = sv.value
        elif measurand == EXPORT_MEASURAND and sv.phase is None:
            exp = sv.value * 1000.0 if sv.unit == "kW" else sv.value
    if imp is None and phases:
        imp = phase_sum
    if imp is None and exp is None:
        return None, energy, soc
    return (imp or 0.0) - (exp or 0.0), energy, soc


def _seen(patch: dict[str, Any], at: datetime) -> None:
    last = patch["last_seen"]
    if last is None or at > last:
        patch["last_seen"] = at


def _json_text(value: Any) -> str:
    # what the JSON column would bind: text; the driver stores it as json as is
    return orjson.dumps(value, default=str).decode()


def _write_stations(conn: Connection, patches: list[dict[str, Any]]) -> int:
    """Upsert: a placeholder row for a station not registered (yet); see tables.py."""
    s = t.stations
    ins = insert_for(conn.dialect.name, s)
    x = ins.excluded
    booted = x.booted_at.is_not(None)
    stmt = ins.on_conflict_do_update(
        index_elements=[s.c.station_id],
        set_={
            "protocol": func.coalesce(x.protocol, s.c.protocol),
            # a boot replaces all four (firmware/serial may legitimately become NULL)
            "vendor": case((booted, x.vendor), else_=s.c.vendor),
            "model": case((booted, x.model), else_=s.c.model),
            "firmware": case((booted, x.firmware), else_=s.c.firmware),
            "serial": case((booted, x.serial), else_=s.c.serial),
            "booted_at": func.coalesce(x.booted_at, s.c.booted_at),
            "last_seen": func.coalesce(x.last_seen, s.c.last_seen),
        },
    )
    conn.execute(stmt, patches)
    return len(patches)


def _load_tx_rows(conn: Connection, keys: list[TxKey]) -> dict[TxKey, TxRow]:
    x = t.transactions
    found: dict[TxKey, TxRow] = {}
    for i in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[i : i + _KEY_CHUNK]
        query = select(x).where(tuple_(x.c.station_id, x.c.transaction_id).in_(chunk))
        for row in conn.execute(query).mappings():
            found[(row["station_id"], row["transaction_id"])] = dict(row)
    return found


def _apply_tx_event(
    states: dict[TxKey, TxRow], new: set[TxKey], changed: set[TxKey], ev: TxEvent
) -> None:
    key = (ev.station_id, ev.transaction_id)
    row = states.get(key)
    if isinstance(ev, TransactionStarted):
        if row is None:  # a repeated start is ignored: the first one is the record
            row = states[key] = _new_tx_row(ev.station_id, ev.transaction_id, ev.evse_id, ev.at)
            row["id_token"], row["meter_start_wh"] = ev.id_token, ev.meter_start_wh
            row["last_seq_no"] = ev.seq_no if ev.seq_no is not None else -1
            row["offline_events"] = int(ev.offline)
            new.add(key)
        return
    if row is None:
        # 2.0.1 may update or end a transaction whose start we never saw (lost frame,
        # database restored from a backup): keep what we know rather than nothing.
        started = ev.at if isinstance(ev, TransactionUpdated) else None
        row = states[key] = _new_tx_row(ev.station_id, ev.transaction_id, ev.evse_id, started)
        new.add(key)
    _track_seq(row, ev.seq_no, ev.offline)
    if isinstance(ev, TransactionStopped):
        row["stopped_at"], row["meter_stop_wh"], row["stop_reason"] = (
            ev.at,
            ev.meter_stop_wh,
            ev.reason,
        )
    changed.add(key)


def _new_tx_row(
    station_id: str, transaction_id: str, evse_id: int | None, started_at: datetime | None
) -> TxRow:
    row: TxRow = dict.fromkeys(_TX_COLUMNS)
    row.update(
        station_id=station_id,
        transaction_id=transaction_id,
        evse_id=evse_id,
        started_at=started_at,
        last_seq_no=-1,
        seq_gaps=0,
        offline_events=0,
    )
    return row


def _track_seq(row: TxRow, seq_no: int | None, offline: bool) -> None:
    """Count gaps in 2.0.1 TransactionEvent seqNo (it increments by 1 per event)."""
    if seq_no is not None:
        last = row["last_seq_no"]
        if last >= 0 and seq_no > last + 1:
            row["seq_gaps"] += seq_no - last - 1
        row["last_seq_no"] = max(last, seq_no)
    row["offline_events"] += int(offline)
