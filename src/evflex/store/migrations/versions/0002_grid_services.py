"""Grid services: 1 s activation records and the audit of control actions.

Hand-written to match evflex.store.tables (a test compares them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "grid_records",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(32), nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("freq_hz", sa.Float(), nullable=True),
        sa.Column("feed", sa.String(16), nullable=False),
        sa.Column("delta_w", sa.Float(), nullable=False),
        sa.Column("target_w", sa.Float(), nullable=False),
        sa.Column("measured_w", sa.Float(), nullable=False),
        sa.Column("baseline_w", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grid_records"),
    )
    op.create_index("ix_grid_records_service_id_ts", "grid_records", ["service_id", "ts"])
    op.create_table(
        "grid_audit",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("services", sa.String(200), nullable=False),
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("limit_w", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_grid_audit"),
    )
    op.create_index("ix_grid_audit_at", "grid_audit", ["at"])


def downgrade() -> None:
    op.drop_table("grid_audit")
    op.drop_table("grid_records")
