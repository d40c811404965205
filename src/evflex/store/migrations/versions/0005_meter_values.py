"""Meter history: one row per MeterValue (`meter_values`) instead of one per sampled value.

Why: see evflex.store.tables (`meter_values`). Existing samples are carried over,
grouped by the MeterValue they came from (station, EVSE, transaction, station
time, receive time); the document keeps all six fields of each value (the
writer leaves trailing nulls out; readers accept both). Downgrade expands the
rows again. Hand-written to match evflex.store.tables (a test compares them).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
_KEY = "station_id, evse_id, transaction_id, ts, received_at"
_MV_KEY = ", ".join(f"mv.{c}" for c in _KEY.split(", "))
_FIELDS = "measurand, {value}, unit, phase, context, location"
# JSON has no infinity: stored as the strings evflex.store.sampled uses (NaN is
# already NULL in SQLite; PostgreSQL's json renders NaN and infinities as strings)
_SQLITE_VALUE = (
    "CASE WHEN value > 1e308 THEN 'Infinity' WHEN value < -1e308 THEN '-Infinity' ELSE value END"
)
_GROUP = {
    "sqlite": f"json_group_array(json_array({_FIELDS.format(value=_SQLITE_VALUE)}))",
    "postgresql": f"json_agg(json_build_array({_FIELDS.format(value='value')}))",
}
_EXPAND = {  # one sampled value's six fields, from `j` (json_each) or `v` (an element)
    "sqlite": (
        "json_each(mv.sampled) AS j",
        "json_extract(j.value, '$[0]'),"
        " CASE json_extract(j.value, '$[1]') WHEN 'Infinity' THEN 9e999"
        " WHEN '-Infinity' THEN -9e999 WHEN 'NaN' THEN NULL"
        " ELSE json_extract(j.value, '$[1]') END,"
        " json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),"
        " json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]')",
    ),
    "postgresql": (
        "json_array_elements(mv.sampled) AS j(v)",
        "v->>0, CAST(v->>1 AS double precision), v->>2, v->>3, v->>4, v->>5",
    ),
}


def upgrade() -> None:
    op.create_table(
        "meter_values",
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("sampled", sa.JSON(none_as_null=True), nullable=False),
    )
    op.execute(
        f"INSERT INTO meter_values ({_KEY}, sampled)"
        f" SELECT {_KEY}, {_GROUP[op.get_bind().dialect.name]} FROM meter_samples"
        f" GROUP BY {_KEY}"
    )
    op.drop_index("ix_meter_samples_station_id_ts", table_name="meter_samples")
    op.drop_table("meter_samples")
    op.create_index("ix_meter_values_station_id_ts", "meter_values", ["station_id", "ts"])


def downgrade() -> None:
    op.create_table(
        "meter_samples",
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("measurand", sa.String(64), nullable=False),
        sa.Column("phase", sa.String(8), nullable=True),
        sa.Column("unit", sa.String(16), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("context", sa.String(32), nullable=True),
        sa.Column("location", sa.String(16), nullable=True),
    )
    source, fields = _EXPAND[op.get_bind().dialect.name]
    op.execute(
        f"INSERT INTO meter_samples ({_KEY}, {_FIELDS.format(value='value')})"
        f" SELECT {_MV_KEY}, {fields} FROM meter_values AS mv, {source}"
    )
    op.drop_index("ix_meter_values_station_id_ts", table_name="meter_values")
    op.drop_table("meter_values")
    op.create_index("ix_meter_samples_station_id_ts", "meter_samples", ["station_id", "ts"])
