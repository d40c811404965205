"""Initial schema: stations, evses, transactions, meter_samples, command_log,
station_events, api_tokens.

Hand-written to match evflex.store.tables (a test compares them). Written out in
full rather than by `metadata.create_all` so that later changes to tables.py
never silently change what this revision creates.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not BIGINT.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# tables.UtcDateTime: timestamptz on PostgreSQL, integer microseconds on SQLite.
_TS = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stations",
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("protocol", sa.String(16), nullable=True),
        sa.Column("vendor", sa.String(100), nullable=True),
        sa.Column("model", sa.String(100), nullable=True),
        sa.Column("firmware", sa.String(100), nullable=True),
        sa.Column("serial", sa.String(100), nullable=True),
        sa.Column("registered_at", _TS, nullable=True),
        sa.Column("booted_at", _TS, nullable=True),
        sa.Column("last_seen", _TS, nullable=True),
        sa.PrimaryKeyConstraint("station_id", name="pk_stations"),
    )
    op.create_table(
        "evses",
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("status_at", _TS, nullable=True),
        sa.Column("energy_wh", sa.Float(), nullable=True),
        sa.Column("soc_pct", sa.Float(), nullable=True),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.Column("power_measured_at", _TS, nullable=True),
        sa.Column("meter_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("station_id", "evse_id", name="pk_evses"),
    )
    op.create_table(
        "transactions",
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("id_token", sa.String(255), nullable=True),
        sa.Column("meter_start_wh", sa.Float(), nullable=True),
        sa.Column("stopped_at", _TS, nullable=True),
        sa.Column("meter_stop_wh", sa.Float(), nullable=True),
        sa.Column("stop_reason", sa.String(64), nullable=True),
        sa.Column("last_seq_no", sa.Integer(), server_default="-1", nullable=False),
        sa.Column("seq_gaps", sa.Integer(), server_default="0", nullable=False),
        sa.Column("offline_events", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("station_id", "transaction_id", name="pk_transactions"),
    )
    op.create_index(
        "ix_transactions_station_id_started_at", "transactions", ["station_id", "started_at"]
    )
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
    op.create_index("ix_meter_samples_station_id_ts", "meter_samples", ["station_id", "ts"])
    op.create_table(
        "command_log",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("response", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("sent_at", _TS, nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_command_log"),
    )
    op.create_index("ix_command_log_station_id_sent_at", "command_log", ["station_id", "sent_at"])
    op.create_index("ix_command_log_sent_at", "command_log", ["sent_at"])
    op.create_table(
        "station_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("data", sa.JSON(none_as_null=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_station_events"),
    )
    op.create_index("ix_station_events_station_id_at", "station_events", ["station_id", "at"])
    op.create_table(
        "api_tokens",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), server_default="", nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    for table in (
        "api_tokens",
        "station_events",
        "command_log",
        "meter_samples",
        "transactions",
        "evses",
        "stations",
    ):
        op.drop_table(table)
