"""The app turns each engine audit entry into a grid_audit row: every column, nothing lost."""

from __future__ import annotations

import dataclasses
import types
from datetime import UTC, datetime
from typing import Any

from evflex.app import App
from evflex.control.loop import AuditEntry
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
