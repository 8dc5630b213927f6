"""The PostgreSQL backend as a whole: no local files, one pool, migrations, table layouts."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
import pytest
from alembic.script import ScriptDirectory

from conftest import MakeBars
from quantivista.config import Settings
from quantivista.model.instruments import HISTORY_SCHEMA, INSTRUMENT_SCHEMA
from quantivista.model.jobs import DataQualityReport, IngestionJob, JobTask
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import SCORE_SCHEMA, coerce_actions
from quantivista.model.timeframe import Timeframe
from quantivista.storage.backend import open_backend
from quantivista.storage.contracts import Backend
from quantivista.storage.postgres.backend import open_postgres
from quantivista.storage.postgres.bars import PostgresStore, _alembic_config, migrate

T0 = datetime(2024, 1, 2, tzinfo=UTC)


def _settings(root: Path, dsn: str, schema: str) -> Settings:
    return Settings(
        data_dir=root,
        storage={"backend": "postgres", "postgres_schema": schema},
        services={"postgres_dsn": dsn},
    )


def _write_everything(backend: Backend, make_bars: MakeBars) -> None:
    bars = make_bars(["AAA"], 3)
    backend.bars.upsert(bars)
    backend.actions.upsert(
        coerce_actions(
            pl.DataFrame({"symbol": ["AAA"], "action_type": ["split"], "ex_date": ["2024-01-03"],
                          "ratio": [2.0]})
        )
    )  # fmt: skip
    rejected = bars.head(1).with_columns(
        rule=pl.lit("r"), severity=pl.lit("error"), reason=pl.lit("x")
    )
    backend.quarantine.add(rejected, job_id="job-1", at=T0)
    backend.quarantine.mark_released(
        backend.quarantine.list(), release_job_id="job-2", at=T0 + timedelta(1)
    )
    scores = pl.DataFrame(
        {"symbol": ["AAA"], "timeframe": ["1d"], "date": [date(2024, 1, 2)], "job_id": ["job-1"],
         "rows": [1], "rejected": [0], "flagged": [0], "missing": [0], "score": [1.0]},
        schema=SCORE_SCHEMA,
    )  # fmt: skip
    backend.scores.add(scores, T0)
    backend.raw.save("job-1", [RawPayload("acme", "https://acme/x", 200, b"{}", T0)])
    instrument = pl.DataFrame({"instrument_id": ["AAA"]}).with_columns(
        pl.lit(None, t).alias(c) for c, t in INSTRUMENT_SCHEMA.items() if c != "instrument_id"
    )
    backend.instruments.merge(
        instrument, pl.DataFrame([("AAA", "AAA", None, None)], HISTORY_SCHEMA, orient="row")
    )
    catalog = backend.catalog
    catalog.save_job(IngestionJob(job_id="job-1", source_id="s", start_time=T0))
    catalog.add_tasks([JobTask(task_id="t", job_id="job-1", seq=0, symbols=["AAA"])])
    task = catalog.claim_task("w", 30.0, T0)
    assert task is not None and catalog.heartbeat("t", "w", 30.0, T0)
    catalog.finish_task(task, "w", T0)
    catalog.expire_leases(T0 + timedelta(hours=1))
    catalog.save_report(
        DataQualityReport(
            job_id="job-1", total_records=1, valid_records=1, invalid_records=0, quality_score=1.0
        ),
        T0,
    )
    catalog.add_dead_letter("t", {"a": 1}, "e", None, T0)
    catalog.put_state("k", {"v": 1})


def test_the_postgres_backend_leaves_the_data_directory_alone(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    root = tmp_path / "never-made"
    backend = open_backend(_settings(root, postgres_dsn, pg_schema + "_nofiles"))
    try:
        assert backend.kind == "postgres"
        _write_everything(backend, make_bars)
        # and reading it all back touches nothing either
        assert backend.actions.version() and backend.instruments.version()
        assert backend.quarantine.count() == 0 and backend.raw.manifest().height == 1
        assert backend.scores.daily().height == 1 and backend.catalog.get_state("k")
    finally:
        backend.close()
    assert not root.exists()
    present = tmp_path / "present"
    present.mkdir()
    backend = open_postgres(_settings(present, postgres_dsn, pg_schema + "_nofiles"))
    try:
        _write_everything(backend, make_bars)
    finally:
        backend.close()
    assert list(present.iterdir()) == []


def test_every_store_shares_one_pool_closed_once(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    backend = open_postgres(_settings(tmp_path, postgres_dsn, pg_schema))
    assert isinstance(backend.bars, PostgresStore)
    pool = backend.bars.pool
    for store in (backend.actions, backend.quarantine, backend.scores, backend.raw,
                  backend.instruments, backend.catalog):  # fmt: skip
        assert store.pool is pool  # type: ignore[attr-defined]
    backend.close()
    assert pool.closed


def test_a_schema_at_revision_0001_is_upgraded_keeping_its_bars(
    postgres_dsn: str, pg_schema: str
) -> None:
    schema = pg_schema + "_v1"
    migrate(postgres_dsn, schema, "0001")
    with psycopg.connect(postgres_dsn) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f"{schema}.actions",)).fetchone()
        assert found == (None,)
        conn.execute(f'CREATE TABLE "{schema}".bars_y2024 PARTITION OF "{schema}".bars '
                     "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")  # fmt: skip
        conn.execute(
            f'INSERT INTO "{schema}".bars (symbol, timeframe, ts, close) VALUES (%s, %s, %s, %s)',
            ("AAA", "1d", T0, 1.0),
        )
    store = PostgresStore(postgres_dsn, schema, pool_size=1)  # migrates on open
    try:
        with store.pool.connection() as conn:
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            kinds = conn.execute("SELECT kind FROM versions ORDER BY 1").fetchall()
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        assert head is not None and version == (head,)  # upgraded through every migration
        assert kinds == [("actions",), ("instruments",), ("quarantine",)]
        assert store.read(["AAA"], Timeframe.parse("1d"))["close"].to_list() == [1.0]
    finally:
        store.close()


def test_scores_are_one_row_per_series_with_runs_of_days(pg_store: PostgresStore) -> None:
    from quantivista.storage.postgres.scores import PgScoreStore

    with pg_store.pool.connection() as conn:
        conn.execute("DELETE FROM quality_scores")
    days = 1000
    frame = pl.DataFrame(
        {
            "symbol": ["AAA"] * days + ["BBB"] * days,
            "timeframe": "1d",
            "date": pl.date_range(date(2000, 1, 1), date(2000, 1, 1) + timedelta(days - 1),
                                  eager=True).append(
                pl.date_range(date(2000, 1, 1), date(2000, 1, 1) + timedelta(days - 1), eager=True)
            ),
            "job_id": "job-1", "rows": 1, "rejected": 0, "flagged": 0, "missing": 0, "score": 1.0,
        }
    ).cast(SCORE_SCHEMA)  # fmt: skip
    frame = frame.with_columns(
        flagged=pl.when(pl.int_range(pl.len()) == 1500).then(1).otherwise(0).cast(pl.UInt32)
    )
    store = PgScoreStore(pg_store.pool)
    assert store.add(frame, T0) == 2 * days
    with pg_store.pool.connection() as conn:
        runs = conn.execute(
            "SELECT symbol, cardinality(dates), run_days, flagged FROM quality_scores"
            " ORDER BY symbol"
        ).fetchall()
        daily = conn.execute("SELECT count(*) FROM quality_scores_daily").fetchone()
        bad_days = conn.execute(
            "SELECT symbol, date, flagged FROM quality_scores_daily WHERE flagged > 0"
        ).fetchall()
        view = conn.execute(
            "SELECT symbol, date, rows, flagged, score FROM quality_scores_daily"
            " ORDER BY symbol, date"
        ).fetchall()
    assert runs == [("AAA", 1000, [1000], [0]), ("BBB", 1000, [500, 1, 499], [0, 1, 0])]
    assert daily == (2000,)
    assert bad_days == [("BBB", date(2000, 1, 1) + timedelta(500), 1)]
    read = store.read()
    assert read.select("symbol", "date", "rows", "flagged", "score").rows() == view


def test_a_body_is_kept_once_per_provider_and_digest(pg_store: PostgresStore) -> None:
    from quantivista.storage.postgres.raw import PgRawStore

    with pg_store.pool.connection() as conn:
        conn.execute("DELETE FROM raw_payloads")
        conn.execute("DELETE FROM raw_manifest")
    store = PgRawStore(pg_store.pool)
    body = b"payload" * 1000
    for job in ("a", "b", "c"):
        store.save(job, [RawPayload("acme", "u", 200, body, T0)])
    with pg_store.pool.connection() as conn:
        rows = conn.execute("SELECT provider, sha256, bytes FROM raw_payloads").fetchall()
        listed = conn.execute("SELECT count(*) FROM raw_manifest").fetchone()
    assert rows == [("acme", hashlib.sha256(body).hexdigest(), len(body))]
    assert listed == (3,)


def test_database_errors_become_storage_errors(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    from quantivista.errors import StorageError

    backend = open_postgres(_settings(tmp_path, postgres_dsn, pg_schema))
    backend.close()
    with pytest.raises(StorageError, match="catalog operation failed"):
        backend.catalog.jobs()
    with pytest.raises(StorageError, match="reading corporate actions failed"):
        backend.actions.all()


def test_a_platform_on_postgres_leaves_the_data_directory_alone(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    from quantivista.platform import Platform

    root = tmp_path / "never-made"
    with Platform.from_settings(_settings(root, postgres_dsn, pg_schema + "_platform")) as p:
        bars = make_bars(["AAA", "BBB"], 5).drop("ingested_at", "job_id")
        bad = bars.head(1).with_columns(symbol=pl.lit("CCC"), high=pl.col("low") - 1)
        report = p.write_bars(pl.concat([bars, bad]), source="vendor")
        assert report.invalid_records == 1
        assert p.bars(["AAA", "BBB"]).height == 10
        assert p.quarantine().height == 1
        assert p.quality_scores(["AAA"]).height == 5
    assert not root.exists()


def test_an_ingest_on_postgres_keeps_its_job_and_tasks_there(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    from quantivista.clock import TestClock
    from quantivista.platform import Platform
    from quantivista.providers.synthetic import SyntheticProvider

    root = tmp_path / "never-made"
    settings = Settings(
        data_dir=root,
        storage={"backend": "postgres", "postgres_schema": pg_schema + "_ingest"},
        services={"postgres_dsn": postgres_dsn},
        simulator={"seed": 3, "universe_size": 12},
        ingest={"symbols_per_batch": 2},
    )
    clock = TestClock(datetime(2026, 11, 23, 15, tzinfo=UTC))
    with Platform.from_settings(settings, clock=clock) as p:
        provider = p.provider("synthetic")
        assert isinstance(provider, SyntheticProvider)
        symbols = sorted(provider.symbols())[:3]
        job = p.ingest(symbols, "2024-01-01", "2024-02-29")
        assert job.tasks == 2
        assert p.bars(symbols, "2024-01-01", "2024-02-29").height > 0
    with Platform.from_settings(settings, clock=clock) as again:  # another process, later
        assert again.job(job.job_id).status == job.status
        tasks = again.runtime.backend.catalog.tasks(job.job_id)
        assert [t.symbols for t in tasks] == [symbols[:2], symbols[2:]]
    assert not root.exists()
