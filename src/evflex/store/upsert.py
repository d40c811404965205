"""Dialect-specific INSERT with ON CONFLICT, for the two backends evflex supports."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

Insert = sqlite.Insert | postgresql.Insert


def insert_for(dialect: str, table: Table) -> Insert:
    """`INSERT` that supports `on_conflict_do_update/nothing` on `dialect`."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"evflex stores data in SQLite or PostgreSQL, not {dialect}")
