"""PostgreSQL backup, restore, storage report and stats() on the storage benchmark's universe.

Workload: `perf/storage.py`'s universe (500 symbols x 10 years of daily bars, about 1.26 M
bars) loaded into a new schema, then about 3 % of the bars revised (history rows).
- backup: `storage.backup.backup` of an empty data directory plus the schema, to a new dir
- restore: `storage.backup.restore` of that backup into a new schema (checksums, migrations,
  COPY in); both tables are then compared by an order-free hash of every row
- stats: `PostgresStore.stats()` against the query it replaced; storage report
Each measured `--runs` times (medians and ranges). Prints one JSON line.
Usage: python perf/pgbackup.py [--symbols 500] [--years 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import polars as pl
import psycopg

from _common import print_json_line
from quantivista.config import Settings
from quantivista.model.schema import coerce_bars
from quantivista.storage.lake.backup import PostgresBars, backup, restore
from quantivista.storage.postgres.bars import PostgresStore
from storage import universe

OLD_STATS = (
    "SELECT timeframe, symbol, count(*), min(ts), max(ts), sum(pg_column_size(b.*))::int8, "
    "count(DISTINCT tableoid) FROM bars b GROUP BY 1, 2 ORDER BY 1, 2"
)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _fingerprint(dsn: str, schema: str) -> tuple[int, ...]:
    out: list[int] = []
    with psycopg.connect(dsn) as conn:
        for table in ("bars", "bars_history"):
            row = conn.execute(
                f'SELECT count(*), sum(hashtext(t::text)::int8) FROM "{schema}".{table} t'
            ).fetchone()
            assert row is not None
            out += [int(row[0]), int(row[1] or 0)]
    return tuple(out)


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dsn = Settings().services.postgres_dsn.get_secret_value()
    base = f"qv_perf_bk_{uuid4().hex[:8]}"
    bars = coerce_bars(
        universe(args.symbols, args.years),
        timeframe="1d",
        provider="perf",
        job_id="perf",
        ingested_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    revised = bars.filter(pl.col("ts").dt.day() == 3).with_columns(
        close=pl.col("close") * 1.001, ingested_at=pl.lit(datetime(2025, 2, 1, tzinfo=UTC))
    )
    store = PostgresStore(dsn, base)
    out: dict[str, Any] = {"bench": "pgbackup", "bars": bars.height, "history": revised.height}
    times: dict[str, list[float]] = {"backup_s": [], "restore_s": [], "stats_old_s": []}
    times.update({"stats_new_s": [], "report_s": []})
    try:
        store.upsert(bars)
        store.upsert(revised)
        source = _fingerprint(dsn, base)
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                snap, data = Path(tmp) / f"snap{run}", Path(tmp) / f"data{run}"
                data.mkdir()
                t0 = time.perf_counter()
                manifest = backup(data, snap, PostgresBars(dsn, base))
                times["backup_s"].append(time.perf_counter() - t0)
                out["backup_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
                t0 = time.perf_counter()
                restore(snap, Path(tmp) / f"back{run}", PostgresBars(dsn, f"{base}_r{run}"))
                times["restore_s"].append(time.perf_counter() - t0)
                assert _fingerprint(dsn, f"{base}_r{run}") == source
        with psycopg.connect(dsn) as conn:
            conn.execute(f'SET search_path TO "{base}"')
            for _ in range(args.runs):
                t0 = time.perf_counter()
                conn.execute(OLD_STATS).fetchall()
                times["stats_old_s"].append(time.perf_counter() - t0)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            store.stats()
            times["stats_new_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = store.storage_report()
            times["report_s"].append(time.perf_counter() - t0)
        out["report"] = report.to_dicts()
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for (name,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (base + "%",)
            ).fetchall():
                conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    out.update({k: _spread(v) for k, v in times.items()})
    print_json_line(out, digits=3)


if __name__ == "__main__":
    main()
