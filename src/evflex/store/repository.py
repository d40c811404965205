"""Repository: the awaited, low-volume side of storage (registrations, tokens, queries).

High-volume writes go through `evflex.store.writer.EventRecorder`, never here.
All timestamps returned are timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    cast,
    delete,
    desc,
    func,
    insert,
    not_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from evflex.store import sampled
from evflex.store import tables as t
from evflex.store.upsert import insert_for

# Bound parameters per statement stay well under SQLite's (32766) and asyncpg's
# (32767) limits.
_CHUNK = 2000
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StationRecord:
    station_id: str
    password_hash: str | None
    protocol: str | None
    vendor: str | None
    model: str | None
    firmware: str | None
    serial: str | None
    booted_at: datetime | None
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class EvseRecord:
    station_id: str
    evse_id: int
    status: str | None  # an EvseStatus value, None if never reported
    status_at: datetime | None
    power_w: float | None
    power_measured_at: datetime | None
    energy_wh: float | None
    soc_pct: float | None


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """An open transaction (stopped_at is NULL), as needed to rebuild fleet state."""

    station_id: str
    transaction_id: str
    evse_id: int
    started_at: datetime
    id_token: str | None
    meter_start_wh: float | None
    last_seq_no: int
    seq_gaps: int
    offline_events: int


class StationExists(Exception):
    """Raised by add_station/add_stations; `station_ids` lists the duplicates."""

    def __init__(self, station_ids: Sequence[str]) -> None:
        self.station_ids = list(station_ids)
        shown = ", ".join(self.station_ids[:10])
        more = f" and {len(self.station_ids) - 10} more" if len(self.station_ids) > 10 else ""
        super().__init__(f"station(s) already registered: {shown}{more}")


class Repository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # -- stations ---------------------------------------------------------------
    async def load_stations(self) -> list[StationRecord]:
        """Registered stations (placeholders created by the recorder are not registrations)."""
        s = t.stations
        query = select(
            s.c.station_id,
            s.c.password_hash,
            s.c.protocol,
            s.c.vendor,
            s.c.model,
            s.c.firmware,
            s.c.serial,
            s.c.booted_at,
            s.c.last_seen,
        ).where(s.c.registered_at.is_not(None))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(s.c.station_id))).all()
        return [StationRecord(*row) for row in rows]

    async def add_station(self, station_id: str, password_hash: str | None) -> None:
        """Register a station; raises StationExists if it is registered already."""
        await self.add_stations([(station_id, password_hash)])

    async def add_stations(self, items: list[tuple[str, str | None]]) -> int:
        """Register many stations in one transaction: all of them or none.

        Raises StationExists listing every id that is registered already or appears
        twice in `items`. A recorder placeholder for an id is claimed, not a duplicate.
        """
        ids = [station_id for station_id, _ in items]
        repeated = _repeated(ids)
        if repeated:
            raise StationExists(repeated)
        if not items:
            return 0
        now = datetime.now(UTC)
        rows = [
            {"station_id": sid, "password_hash": digest, "registered_at": now}
            for sid, digest in items
        ]
        async with self._engine.begin() as conn:
            existing = await self._registered_among(conn, ids)
            if existing:
                raise StationExists(sorted(existing))
            claimed: set[str] = set()
            for chunk in _chunks(rows, _CHUNK):
                claimed.update(await self._claim(conn, chunk))
            if len(claimed) != len(rows):
                # Registered concurrently between our check and our insert; leaving
                # the block with the exception rolls all of ours back.
                raise StationExists(sorted(set(ids) - claimed))
        return len(claimed)

    async def _claim(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert registrations, taking over placeholders; return the ids written."""
        s = t.stations
        ins = insert_for(conn.dialect.name, s)
        stmt = ins.on_conflict_do_update(
            index_elements=[s.c.station_id],
            set_={
                "password_hash": ins.excluded.password_hash,
                "registered_at": ins.excluded.registered_at,
            },
            where=s.c.registered_at.is_(None),
        )
        # RETURNING, not rowcount: drivers do not agree on the rowcount of an
        # executemany; a row comes back only if it was inserted or claimed.
        result = await conn.execute(stmt.returning(s.c.station_id), rows)
        return set(result.scalars())

    async def _registered_among(self, conn: AsyncConnection, ids: list[str]) -> set[str]:
        s = t.stations
        found: set[str] = set()
        for chunk in _chunks(ids, _CHUNK):
            cond = and_(s.c.station_id.in_(chunk), s.c.registered_at.is_not(None))
            found.update((await conn.execute(select(s.c.station_id).where(cond))).scalars())
        return found

    async def set_password(self, station_id: str, password_hash: str | None) -> None:
        s = t.stations
        async with self._engine.begin() as conn:
            await conn.execute(
                update(s).where(s.c.station_id == station_id).values(password_hash=password_hash)
            )

    async def delete_station(self, station_id: str) -> bool:
        """Remove a registration and its live EVSE rows; history is kept.

        Returns whether the station was registered.
        """
        s = t.stations
        async with self._engine.begin() as conn:
            registered = (
                await conn.execute(
                    select(s.c.registered_at.is_not(None)).where(s.c.station_id == station_id)
                )
            ).scalar()
            await conn.execute(delete(s).where(s.c.station_id == station_id))
            await conn.execute(delete(t.evses).where(t.evses.c.station_id == station_id))
        return bool(registered)

    # -- fleet state at start-up ----------------------------------------------------
    async def load_evses(self) -> list[EvseRecord]:
        """EVSEs of registered stations."""
        e = t.evses
        query = (
            select(
                e.c.station_id,
                e.c.evse_id,
                e.c.status,
                e.c.status_at,
                e.c.power_w,
                e.c.power_measured_at,
                e.c.energy_wh,
                e.c.soc_pct,
            )
            .where(e.c.station_id.in_(_registered_ids()))
            .order_by(e.c.station_id, e.c.evse_id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [EvseRecord(*row) for row in rows]

    async def open_transactions(self) -> list[TransactionRecord]:
        """Transactions not stopped yet, of registered stations."""
        x = t.transactions
        query = (
            select(
                x.c.station_id,
                x.c.transaction_id,
                x.c.evse_id,
                x.c.started_at,
                x.c.id_token,
                x.c.meter_start_wh,
                x.c.last_seq_no,
                x.c.seq_gaps,
                x.c.offline_events,
            )
            .where(
                x.c.stopped_at.is_(None),
                x.c.started_at.is_not(None),
                x.c.evse_id.is_not(None),
                x.c.station_id.in_(_registered_ids()),
            )
            .order_by(x.c.station_id, x.c.started_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [TransactionRecord(*row) for row in rows]

    async def max_numeric_transaction_id(self) -> int:
        """The highest all-digit transaction id (OCPP 1.6 ids we allocated), 0 if none.

        Looks at every transaction: a 2.0.1 station that happens to use numeric ids
        only moves the 1.6 counter forward, which is harmless; reusing an id is not.
        """
        x = t.transactions
        async with self._engine.connect() as conn:
            numeric = _all_digits(conn.dialect.name, x.c.transaction_id)
            value = (
                await conn.execute(
                    select(func.max(cast(x.c.transaction_id, BigInteger))).where(numeric)
                )
            ).scalar()
        return int(value or 0)

    # -- history queries ------------------------------------------------------------
    async def meter_values(
        self,
        station_id: str,
        start: datetime | None,
        end: datetime | None,
        limit: int = 10000,
        evse_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Sampled values of one station with start <= ts < end, oldest first, at
        most `limit`; one dict per value, its MeterValue's fields repeated."""
        m = t.meter_values
        query = select(m.c.evse_id, m.c.transaction_id, m.c.ts, m.c.received_at, m.c.sampled).where(
            m.c.station_id == station_id
        )
        if start is not None:
            query = query.where(m.c.ts >= start)
        if end is not None:
            query = query.where(m.c.ts < end)
        if evse_id is not None:
            query = query.where(m.c.evse_id == evse_id)
        # a row holds at least one value: `limit` rows hold enough
        rows = await self._dicts(query.order_by(m.c.ts).limit(max(0, limit)))
        out: list[dict[str, Any]] = []
        for row in rows:
            document = row.pop("sampled")
            out.extend({**row, **value} for value in sampled.decode(document))
            if len(out) >= limit:
                break
        return out[: max(0, limit)]

    async def transactions(self, station_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """A station's transactions, most recently started first."""
        x = t.transactions
        query = (
            select(*(c for c in x.c if c.name != "station_id"))
            .where(x.c.station_id == station_id)
            .order_by(desc(func.coalesce(x.c.started_at, x.c.stopped_at)), x.c.transaction_id)
            .limit(max(0, limit))
        )
        return await self._dicts(query)

    async def command_log(self, station_id: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """CSMS→station calls, newest first; all stations when `station_id` is None."""
        c = t.command_log
        query = select(c)
        if station_id is not None:
            query = query.where(c.c.station_id == station_id)
        return await self._dicts(
            query.order_by(c.c.sent_at.desc(), c.c.id.desc()).limit(max(0, limit))
        )

    async def station_events(self, station_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Security events, firmware status, reports, data transfers; newest first."""
        ev = t.station_events
        query = (
            select(ev)
            .where(ev.c.station_id == station_id)
            .order_by(ev.c.at.desc(), ev.c.id.desc())
            .limit(max(0, limit))
        )
        return await self._dicts(query)

    async def _dicts(self, query: Select[Any]) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [dict(row) for row in result.mappings()]

    # -- API tokens -------------------------------------------------------------------
    async def create_token(self, role: str, name: str = "") -> str:
        """A new bearer token; only its SHA-256 is stored, so it is shown once."""
        token = secrets.token_urlsafe(32)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(t.api_tokens).values(
                    name=name,
                    role=role,
                    token_hash=_token_hash(token),
                    created_at=datetime.now(UTC),
                    revoked=False,
                )
            )
        return token

    async def verify_token(self, token: str) -> str | None:
        """The token's role, or None if it is unknown or revoked.

        A fast hash is right here: tokens are 256-bit random, so there is nothing
        to brute-force, and the lookup by digest leaks nothing about the token.
        """
        a = t.api_tokens
        async with self._engine.connect() as conn:
            role = (
                await conn.execute(
                    select(a.c.role).where(
                        a.c.token_hash == _token_hash(token), a.c.revoked.is_(False)
                    )
                )
            ).scalar()
        return None if role is None else str(role)

    async def revoke_token(self, token_id: int) -> bool:
        """Revoke by id; False if there is no such token or it was revoked already."""
        a = t.api_tokens
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(a).where(a.c.id == token_id, a.c.revoked.is_(False)).values(revoked=True)
            )
        return result.rowcount > 0

    async def tokens(self) -> list[dict[str, Any]]:
        """All tokens without their hashes (for listing and choosing one to revoke)."""
        a = t.api_tokens
        return await self._dicts(
            select(a.c.id, a.c.name, a.c.role, a.c.created_at, a.c.revoked).order_by(a.c.id)
        )


def _registered_ids() -> Select[tuple[str]]:
    s = t.stations
    return select(s.c.station_id).where(s.c.registered_at.is_not(None))


def _all_digits(dialect: str, column: ColumnElement[str]) -> ColumnElement[bool]:
    """1 to 18 digits: every such string fits a BIGINT cast."""
    if dialect == "postgresql":
        return column.regexp_match("^[0-9]{1,18}$")
    # SQLite has no built-in regex operator; GLOB does character classes.
    return and_(
        func.length(column).between(1, 18), not_(column.op("GLOB", is_comparison=True)("*[^0-9]*"))
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _repeated(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for sid in ids:
        if sid in seen:
            repeated.append(sid)
        seen.add(sid)
    return repeated


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
