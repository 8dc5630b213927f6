"""The operations log: `audit_log` and `sla_samples`, append-only.

Revision ID: 0004
Revises: 0003

The DDL is `storage.postgres.opslog`'s own (idempotent: `IF NOT EXISTS`), so stores made
before this revision, where the log created its tables on open, upgrade without change; a
restore of an older backup creates them before loading, as before.
"""

from __future__ import annotations

from alembic import op

from quantivista.storage.postgres.opslog import create_tables

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # the DDL holds a PL/pgSQL body with `%`: run it on the driver's connection, unparsed
    driver = op.get_bind().connection.driver_connection
    assert driver is not None
    create_tables(driver)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS audit_log")
    op.execute("DROP TABLE IF EXISTS sla_samples")
    op.execute("DROP FUNCTION IF EXISTS qv_append_only()")
