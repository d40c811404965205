"""Grid services: per-unit 1 s rows (baseline, evflex's limit, measured) while active.

Hand-written to match evflex.store.tables (a test compares them).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "grid_unit_records",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("station_id", sa.String(48), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("baseline_w", sa.Float(), nullable=False),
        sa.Column("target_w", sa.Float(), nullable=True),
        sa.Column("measured_w", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_grid_unit_records"),
    )
    op.create_index("ix_grid_unit_records_ts", "grid_unit_records", ["ts"])


def downgrade() -> None:
    op.drop_table("grid_unit_records")
