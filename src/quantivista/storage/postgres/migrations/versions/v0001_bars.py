"""Bars, their superseded versions and store metadata.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

log = logging.getLogger("quantivista.storage.postgres.bars")

_COLUMNS = """
    symbol        text        NOT NULL,
    timeframe     text        NOT NULL,
    ts            timestamptz NOT NULL,
    open          float8,
    high          float8,
    low           float8,
    close         float8,
    volume        float8,
    vwap          float8,
    trades        int8,
    provider      text,
    quality_flags int8        NOT NULL DEFAULT 0,
    ingested_at   timestamptz,
    job_id        text
"""


def _timescale_available() -> bool:
    bind = op.get_bind()
    found = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    return found is not None


def upgrade() -> None:
    """Create the bars table (hypertable or range-partitioned), history and metadata."""
    op.execute("CREATE TABLE qv_meta (key text PRIMARY KEY, value text NOT NULL)")
    if _timescale_available():
        op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        op.execute(f"CREATE TABLE bars ({_COLUMNS}, PRIMARY KEY (symbol, timeframe, ts))")
        op.execute(
            "SELECT create_hypertable('bars', 'ts', chunk_time_interval => INTERVAL '365 days')"
        )
        op.execute(
            "ALTER TABLE bars SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'symbol, timeframe', "
            "timescaledb.compress_orderby = 'ts')"
        )
        op.execute("SELECT add_compression_policy('bars', INTERVAL '90 days')")
        layout = "hypertable"
        log.info("TimescaleDB present: bars is a compressed hypertable")
    else:
        op.execute(
            f"CREATE TABLE bars ({_COLUMNS}, PRIMARY KEY (symbol, timeframe, ts)) "
            "PARTITION BY RANGE (ts)"
        )
        layout = "partitioned"
        log.info("TimescaleDB absent: bars is range-partitioned by year, partitions on demand")
    op.execute(f"CREATE TABLE bars_history ({_COLUMNS}, superseded_at timestamptz NOT NULL)")
    op.execute("CREATE INDEX bars_history_key ON bars_history (symbol, timeframe, ts)")
    op.execute(f"INSERT INTO qv_meta VALUES ('bars_layout', '{layout}')")


def downgrade() -> None:
    """Drop everything this revision created."""
    op.execute("DROP TABLE bars_history")
    op.execute("DROP TABLE bars")
    op.execute("DROP TABLE qv_meta")
