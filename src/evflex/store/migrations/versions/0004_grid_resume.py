"""Grid services survive a restart: the services and the engine's limits in force.

Hand-written to match evflex.store.tables (a test compares them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "grid_services",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("stopped_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_grid_services"),
    )
    op.create_table(
        "grid_engine_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("saved_at", _TS, nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grid_engine_state"),
    )


def downgrade() -> None:
    op.drop_table("grid_engine_state")
    op.drop_table("grid_services")
