"""Migration scripts (a package so setuptools ships them; alembic skips this file)."""
