"""Persistence: SQLAlchemy Core tables, Alembic migrations, a batched event recorder
(`writer.EventRecorder`, the high-volume path) and a repository for everything else.

SQLite (`sqlite+aiosqlite:///...`) by default, PostgreSQL with `postgresql+asyncpg://...`.
"""
