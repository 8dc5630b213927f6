"""Alembic migrations of the PostgreSQL store (run programmatically on open)."""
