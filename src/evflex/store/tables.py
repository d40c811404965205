"""The schema: SQLAlchemy Core tables on one MetaData (Core, not ORM, for write speed).

The migrations in `migrations/versions/` create exactly these tables; a test compares
the two with alembic's autogenerate so they cannot drift apart.

Design decisions:

* **No foreign keys.** The recorder writes evses, transactions and history for
  whatever station the gateway reports, in batches it cannot order against a
  concurrent `add_station`/`delete_station`; an FK would turn such a race into a
  failed batch. History (samples, transactions, command log, events) must also
  outlive a station's registration for audit and billing, and on the hot table an
  FK costs an index probe per inserted row.
* **`stations.registered_at IS NULL` marks a placeholder**: a row the recorder
  created because a station booted before (or after) its registration was
  committed. Placeholders are not registrations: `load_stations` skips them (a
  station deleted while its events were still buffered does not come back as
  "known, no password") and `add_station` claims them.
* **`meter_values` holds one row per OCPP MeterValue**, its sampled values
  together in one JSON column (format: `evflex.store.sampled`), not one row per
  sampled value. Every row costs an insert into the table and into the
  (station_id, ts) index, whose pages are scattered over the fleet's stations;
  at 5,000 stations a row per sampled value (two per MeterValues in the common
  power + energy report) was ~40 % of the writer's CPU, and the writer shares the
  server's core (migration 0005; `evflex bench telemetry-max`: 42 → 37 µs per
  message). Queries read a station's time range, never a single value.
* **`meter_values` has no primary key**, only the (station_id, ts) index: a
  surrogate key would add a sequence call and a second B-tree update to every
  inserted row of the largest table, and nothing refers to a single row.
* **Timestamps are UTC.** `UtcDateTime` is timestamptz on PostgreSQL and integer
  microseconds since the epoch on SQLite (which has no date type); either way
  Python sees timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

# Stable constraint/index names so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")

STATION_ID_LEN = 48  # OCPP 2.0.1 identity is at most 48 characters
TX_ID_LEN = 64  # 2.0.1 transactionId is at most 36; leave room for vendor quirks


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(value: datetime) -> int:
    """Microseconds since 1970 UTC, exactly (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _MICROSECOND


def from_epoch_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (naive input is taken as UTC).

    PostgreSQL: `timestamptz`. SQLite, which has no date type: an INTEGER of
    microseconds since 1970 — 8 bytes instead of 26 characters of text in the
    biggest table and its index, compared as integers, and ~5x cheaper to encode
    than SQLAlchemy's text format on the bulk insert path. (In the sqlite3 shell:
    `datetime(ts / 1e6, 'unixepoch')`.)
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return epoch_us(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, int):
            return from_epoch_us(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> JSON:
    # Plain JSON, not JSONB: we never query inside these documents, `json` skips the
    # binary conversion on insert, and it accepts "\u0000", which jsonb rejects.
    # none_as_null: a missing response is SQL NULL, not the JSON text 'null'.
    return JSON(none_as_null=True)


stations = Table(
    "stations",
    metadata,
    Column("station_id", String(STATION_ID_LEN), primary_key=True),
    Column("password_hash", String(200), nullable=True),
    Column("protocol", String(16), nullable=True),
    Column("vendor", String(100), nullable=True),
    Column("model", String(100), nullable=True),
    Column("firmware", String(100), nullable=True),
    Column("serial", String(100), nullable=True),
    Column("registered_at", UtcDateTime(), nullable=True),  # NULL = placeholder, see above
    Column("booted_at", UtcDateTime(), nullable=True),
    Column("last_seen", UtcDateTime(), nullable=True),
)

evses = Table(
    "evses",
    metadata,
    Column("station_id", String(STATION_ID_LEN), primary_key=True),
    Column("evse_id", Integer, primary_key=True),
    Column("status", String(32), nullable=True),  # NULL until a status was reported
    Column("status_at", UtcDateTime(), nullable=True),
    Column("energy_wh", Float, nullable=True),
    Column("soc_pct", Float, nullable=True),
    Column("power_w", Float, nullable=True),
    Column("power_measured_at", UtcDateTime(), nullable=True),
    # Station time of the latest sample that set energy_wh/soc_pct: an offline
    # backlog that arrives late must not overwrite newer values (the fleet state
    # applies the same rule).
    Column("meter_at", UtcDateTime(), nullable=True),
)

transactions = Table(
    "transactions",
    metadata,
    Column("station_id", String(STATION_ID_LEN), primary_key=True),
    Column("transaction_id", String(TX_ID_LEN), primary_key=True),
    # Both NULL only for a stop we never saw start (the row keeps what we know).
    Column("evse_id", Integer, nullable=True),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("id_token", String(255), nullable=True),
    Column("meter_start_wh", Float, nullable=True),
    Column("stopped_at", UtcDateTime(), nullable=True),
    Column("meter_stop_wh", Float, nullable=True),
    Column("stop_reason", String(64), nullable=True),
    Column("last_seq_no", Integer, nullable=False, server_default="-1"),
    Column("seq_gaps", Integer, nullable=False, server_default="0"),
    Column("offline_events", Integer, nullable=False, server_default="0"),
    Index(None, "station_id", "started_at"),
)

meter_values = Table(
    "meter_values",
    metadata,
    Column("station_id", String(STATION_ID_LEN), nullable=False),
    Column("evse_id", Integer, nullable=False),
    Column("transaction_id", String(TX_ID_LEN), nullable=True),
    Column("ts", UtcDateTime(), nullable=False),  # the station's clock
    Column("received_at", UtcDateTime(), nullable=False),  # ours
    Column("sampled", _json(), nullable=False),  # evflex.store.sampled
    Index(None, "station_id", "ts"),
)

# Column order of the bulk insert path in batch.py (multi-row INSERT / COPY).
METER_VALUE_COLUMNS: tuple[str, ...] = tuple(c.name for c in meter_values.columns)

command_log = Table(
    "command_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(STATION_ID_LEN), nullable=False),
    Column("action", String(64), nullable=False),
    Column("request", _json(), nullable=False),
    Column("response", _json(), nullable=True),
    Column("error", Text, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=False),
    Column("duration_ms", Float, nullable=False),
    Index(None, "station_id", "sent_at"),
    Index(None, "sent_at"),
)

station_events = Table(
    "station_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("station_id", String(STATION_ID_LEN), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("data", _json(), nullable=False),
    Index(None, "station_id", "at"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, server_default=""),
    Column("role", String(32), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked", Boolean, nullable=False, server_default=false()),
)

# -- grid services (migration 0002) ---------------------------------------------------
SERVICE_ID_LEN = 32

grid_records = Table(
    "grid_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("service_id", String(SERVICE_ID_LEN), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("freq_hz", Float, nullable=True),
    Column("feed", String(16), nullable=False),
    Column("delta_w", Float, nullable=False),
    Column("target_w", Float, nullable=False),
    Column("measured_w", Float, nullable=False),
    Column("baseline_w", Float, nullable=False),
    Index(None, "service_id", "ts"),
)

grid_unit_records = Table(
    "grid_unit_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", UtcDateTime(), nullable=False),
    Column("station_id", String(STATION_ID_LEN), nullable=False),
    Column("evse_id", Integer, nullable=False),
    Column("baseline_w", Float, nullable=False),
    Column("target_w", Float, nullable=True),  # evflex's limit; empty while recovering
    Column("measured_w", Float, nullable=True),
    Index(None, "ts"),
)

grid_services = Table(
    "grid_services",
    metadata,
    Column("id", String(SERVICE_ID_LEN), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("request", Text, nullable=False),  # the API body that starts it (JSON)
    Column("started_at", UtcDateTime(), nullable=False),
    Column("stopped_at", UtcDateTime(), nullable=True),
)

grid_engine_state = Table(
    "grid_engine_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # a single row, id 1
    Column("saved_at", UtcDateTime(), nullable=False),
    Column("data", Text, nullable=False),  # limits in force, per-unit baselines (JSON)
)

grid_audit = Table(
    "grid_audit",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("services", String(200), nullable=False),  # service ids, comma-separated
    Column("station_id", String(STATION_ID_LEN), nullable=False),
    Column("evse_id", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("limit_w", Float, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=True),
    Index(None, "at"),
)
