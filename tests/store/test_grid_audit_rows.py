"""The app turns each engine audit entry into a grid_audit row: every column, nothing lost."""

from __future__ import annotations

import dataclasses
import types
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from evflex.app import App
from evflex.control.loop import AuditEntry
from evflex.store.grid import GridStore
from evflex.store.tables import grid_audit


def test_every_audit_field_becomes_its_column() -> None:
    rows: list[dict[str, Any]] = []
    fake = types.SimpleNamespace(grid_store=types.SimpleNamespace(audit=rows.append))
    entry = AuditEntry(
        datetime(2030, 1, 1, tzinfo=UTC),
        ("fcr-1", "ffr-2"),
        "CP-1",
        2,
        "fallback",
        "rejected W: trying A",
        4140.0,
        "Accepted",
        "TxProfile/A",
    )
    App._store_audit(fake, entry)  # type: ignore[arg-type]
    (row,) = rows
    assert set(row) == {c.name for c in grid_audit.columns} - {"id"}
    fields = {f.name for f in dataclasses.fields(AuditEntry)}
    assert set(row) == fields  # a new AuditEntry field must get a column (and a row value)
    assert row["services"] == "fcr-1,ffr-2"
    assert {k: v for k, v in row.items() if k != "services"} == {
        k: getattr(entry, k) for k in fields - {"services"}
    }


async def test_grid_rows_round_trip_through_the_database(engine: AsyncEngine) -> None:
    """Unit rows (the engine's tuples) and audit rows are written — multi-row INSERTs
    from the writer thread on SQLite, the async engine on PostgreSQL — and read back
    with every value, None included, and the timestamps exact."""
    store = GridStore(engine)
    try:
        t0 = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
        t1 = t0 + timedelta(seconds=1)
        ticks = [
            [(t, f"CP-{i}", 1 + i % 2, 7400.0, 0.0 if i else None, 7380.5 - i) for i in range(700)]
            for t in (t0, t1)
        ]
        for rows in ticks:
            store.unit_records(rows)
        entries = [
            {
                "at": t0 + timedelta(microseconds=i),
                "services": "fcr-1",
                "station_id": f"CP-{i}",
                "evse_id": 1,
                "action": "set",
                "reason": "frequency",
                "limit_w": None if i % 3 else 0.0,
                "outcome": "Accepted",
                "detail": None if i % 2 else f'it\'s "{i}"',
            }
            for i in range(1500)
        ]
        for entry in entries:
            store.audit(entry)
        assert await store.flush()
        stored = await store.unit_rows(t0, None)
        columns = ("ts", "station_id", "evse_id", "baseline_w", "target_w", "measured_w")
        assert [tuple(r[c] for c in columns) for r in stored] == ticks[0] + ticks[1]
        assert [r["ts"] for r in await store.unit_rows(t1, t1)] == [t1] * 700
        audit = await store.audit_rows(limit=2000)
        assert sorted((dict(r) for r in audit), key=lambda r: r["at"]) == [
            {"id": a["id"], **e}
            for a, e in zip(sorted(audit, key=lambda r: r["at"]), entries, strict=True)
        ]
    finally:
        await store.stop()


async def test_grid_rows_beyond_the_cap_drop_the_oldest(engine: AsyncEngine) -> None:
    store = GridStore(engine, max_rows=1000)
    try:
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        for k in range(3):  # 3 ticks of 400 units: the first 200 rows go
            store.unit_records(
                [(t0 + timedelta(seconds=k), f"CP-{i}", 1, 1.0, None, None) for i in range(400)]
            )
        assert store.dropped == 200
        assert await store.flush()
        stored = await store.unit_rows(t0, None)
        assert len(stored) == 1000
        assert (stored[0]["ts"], stored[0]["station_id"]) == (t0, "CP-200")
    finally:
        await store.stop()


async def test_naive_grid_timestamps_are_stored_as_utc(engine: AsyncEngine) -> None:
    """As `UtcDateTime` takes them on every path (SQLite's integers, PostgreSQL's COPY)."""
    store = GridStore(engine)
    try:
        naive = datetime(2030, 6, 1, 8, 30, 0, 500)
        store.unit_records([(naive, "CP-1", 1, 100.0, None, 90.0)])
        assert await store.flush()
        (row,) = await store.unit_rows(naive.replace(tzinfo=UTC), None)
        assert row["ts"] == naive.replace(tzinfo=UTC) and row["ts"].utcoffset() == timedelta(0)
    finally:
        await store.stop()
