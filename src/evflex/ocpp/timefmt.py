"""OCPP timestamps: RFC 3339 on the wire, timezone-aware UTC datetimes inside."""

from __future__ import annotations

from datetime import UTC, datetime

from evflex.ocpp.errors import PROPERTY_CONSTRAINT, OcppError


def parse_ts(value: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise OcppError(PROPERTY_CONSTRAINT, f"invalid timestamp {value!r}") from None
    # Some 1.6 firmwares send local time without offset; OCPP says UTC, so assume it.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)
