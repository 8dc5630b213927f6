"""Backup, restore and the storage report with the PostgreSQL backend (real server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from conftest import MakeBars
from quantivista.cli import app
from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import StorageError
from quantivista.model.auth import ApiClient, Scope, Tenant
from quantivista.model.jobs import IngestionJob, JobTask
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import coerce_actions
from quantivista.model.timeframe import Timeframe
from quantivista.model.workflow import DataSource, TransformationRule
from quantivista.model.workflow import IngestionJob as WorkflowJob
from quantivista.platform import Platform
from quantivista.reference.instruments import InstrumentMaster
from quantivista.storage.contracts import Backend
from quantivista.storage.lake.backup import PostgresBars, backup, restore, verify
from quantivista.storage.postgres.bars import PostgresStore

T0 = datetime(2024, 2, 1, tzinfo=UTC)
D1 = Timeframe.parse("1d")


def _settings(root: Path, dsn: str, schema: str) -> Settings:
    return Settings(
        data_dir=root,
        storage={"backend": "postgres", "postgres_schema": schema},
        services={"postgres_dsn": dsn},
    )


def _env(dsn: str, schema: str) -> dict[str, str]:
    return {
        "QV_STORAGE__BACKEND": "postgres",
        "QV_STORAGE__POSTGRES_SCHEMA": schema,
        "QV_SERVICES__POSTGRES_DSN": dsn,
    }


def _fill(root: Path, dsn: str, schema: str, make_bars: MakeBars) -> None:
    """Write bars over two years, a revision (history), a delete and a rejected bar."""
    clock = TestClock(T0)
    bars = pl.concat([make_bars(["AAA", "BBB"], 5, start="2023-12-27"), make_bars(["CCC"], 3)])
    bars = bars.drop("ingested_at", "job_id")
    with Platform.from_settings(_settings(root, dsn, schema), clock=clock) as p:
        p.write_bars(bars, source="v")
        clock.advance(60)
        p.write_bars(bars.head(2).with_columns(volume=pl.col("volume") + 1), source="v")
        clock.advance(60)
        p.runtime.backend.bars.delete(D1, ["CCC"], at=clock.now())
        bad = bars.head(1).with_columns(symbol=pl.lit("DDD"), high=pl.col("low") - 1)
        p.write_bars(bad, source="v")
        _fill_side_state(p.runtime.backend)
        p.runtime.audit.log.add_sla(T0, "api", True, 0.004)  # the audit log has the writes above


def _fill_side_state(backend: Backend) -> None:
    """Write every other kind of state: actions, a release, bronze, instruments, the catalog."""
    backend.actions.upsert(
        coerce_actions(pl.DataFrame({"symbol": ["AAA"], "action_type": ["split"],
                                     "ex_date": ["2024-01-03"], "ratio": [2.0]}))
    )  # fmt: skip
    held = backend.quarantine.list()
    backend.quarantine.add(
        held.with_columns(symbol=pl.lit("EEE")).drop("quarantined_at"), job_id="job-e", at=T0
    )
    backend.quarantine.mark_released(
        backend.quarantine.list(symbols=["EEE"]), release_job_id="job-fix", at=T0
    )
    backend.raw.save("job-raw", [RawPayload("acme", "https://acme/x", 200, b"\x00{}", T0)])
    master = InstrumentMaster(backend.instruments)
    master.upsert(pl.DataFrame({"instrument_id": ["AAA"], "symbol": ["AAA"]}))
    catalog = backend.catalog
    catalog.save_job(IngestionJob(job_id="job-tasks", source_id="s", start_time=T0))
    catalog.add_tasks([JobTask(task_id=f"t{i}", job_id="job-tasks", seq=i, symbols=["AAA"])
                       for i in range(3)])  # fmt: skip
    assert catalog.claim_task("w", 30.0, T0) is not None
    catalog.add_dead_letter("bars.ingested", {"x": 1}, "boom", None, T0)
    catalog.put_state("providers", {"acme": {"calls": 2}})
    backend.clients.save_client(
        ApiClient(client_id="c1", tenant="acme", scopes=[Scope.READ_BARS], secret_hash="h",
                  created_at=T0)
    )  # fmt: skip
    backend.clients.save_tenant(Tenant(name="acme", symbols=["AAA"]))
    _fill_workflows(backend)


def _fill_workflows(backend: Backend) -> None:
    """Write the reporting-side catalog: a source, a rule, a job, a dead letter, lineage."""
    wf = backend.workflows
    wf.save_source(
        DataSource(source_id="execs", tenant_id="acme", source_type="TRADE_EXECUTION",
                   ingestion_mode="ON_DEMAND", data_format="CSV"), T0,
    )  # fmt: skip
    wf.save_rule("acme", TransformationRule(rule_id="r", rule_type="rename", source_field="a",
                                            target_field="b"), T0)  # fmt: skip
    wf.save_job(WorkflowJob(job_id="wj", source_id="execs", start_time=T0, tenant_id="acme"))
    wf.add_dead_letters(
        "acme", "wj", "execs",
        pl.DataFrame({"record": ["{}"], "stage": ["checks"], "reason": ["x"]}), T0,
    )  # fmt: skip
    wf.add_lineage("acme", [{"job_id": "wj", "source_id": "execs", "input_uri": "f", "rows": 1}],
                   T0)  # fmt: skip


# every table a PostgreSQL backup must hold, and a column that orders its rows
_ORDER = {
    "bars": "symbol, timeframe, ts", "bars_history": "symbol, timeframe, ts, ingested_at",
    "actions": "symbol, ex_date", "quarantine_rows": "seq", "quarantine_released": "seq",
    "quality_scores": "symbol, timeframe, job_id, scored_at", "raw_payloads": "sha256",
    "raw_manifest": "seq", "instruments": "instrument_id", "symbol_history": "symbol",
    "jobs": "job_id", "job_tasks": "task_id", "quality_reports": "report_id",
    "dead_letters": "id", "state": "key", "api_clients": "client_id", "tenants": "name",
    "audit_log": "seq", "sla_samples": "at, probe",  # the operations log is backed up too
    "data_sources": "tenant_id, source_id", "transformation_rules": "tenant_id, rule_id, version",
    "ingestion_jobs": "job_id", "ingestion_dead_letters": "id", "ingestion_lineage": "id",
}  # fmt: skip


def _table(dsn: str, schema: str, table: str) -> pl.DataFrame:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f'SELECT * FROM "{schema}".{table} ORDER BY symbol, timeframe, ts, ingested_at'
        )
        names = [d.name for d in rows.description or []]
        return pl.DataFrame(rows.fetchall(), schema=names, orient="row")


def _rows(dsn: str, schema: str, table: str) -> pl.DataFrame:
    """Return every row of `table` as text: json, arrays and bytea compare as stored."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT t::text FROM "{schema}".{table} t ORDER BY {_ORDER[table]}')
        return pl.DataFrame({"row": [r[0] for r in rows.fetchall()]}, schema={"row": pl.String})


def _schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def test_postgres_backup_restores_bars_and_history_into_an_empty_schema(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    src, dst = pg_schema + "_bk_src", pg_schema + "_bk_dst"
    live, snap, back = tmp_path / "live", tmp_path / "snap", tmp_path / "back"
    _fill(live, postgres_dsn, src, make_bars)
    runner = CliRunner()
    made = runner.invoke(
        app, ["--data-dir", str(live), "backup", str(snap)], env=_env(postgres_dsn, src)
    )
    assert made.exit_code == 0, made.output
    assert "PostgreSQL schema" in made.output
    manifest = verify(snap)
    tables = manifest["postgres"]["tables"]
    assert (tables["bars"]["rows"], tables["bars_history"]["rows"]) == (10, 5)
    assert manifest["backend"] == "postgres"
    from alembic.script import ScriptDirectory

    from quantivista.storage.postgres.bars import _alembic_config

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert manifest["postgres"]["revision"] == head  # the newest shipped migration
    assert manifest["postgres"]["years"] == [2023, 2024]
    for info in manifest["postgres"]["tables"].values():
        assert info["file"] in manifest["files"]  # sized and checksummed like the lake files
    done = runner.invoke(
        app, ["--data-dir", str(back), "restore", str(snap)], env=_env(postgres_dsn, dst)
    )
    assert done.exit_code == 0, done.output
    assert sorted(manifest["postgres"]["tables"]) == sorted(_ORDER)
    for table in _ORDER:
        restored = _rows(postgres_dsn, dst, table)
        assert restored.height == manifest["postgres"]["tables"][table]["rows"] > 0
        assert_frame_equal(restored, _rows(postgres_dsn, src, table), check_exact=True)
    assert not back.exists()  # the PostgreSQL backend keeps nothing in the data directory
    with (
        Platform.from_settings(_settings(live, postgres_dsn, src)) as a,
        Platform.from_settings(_settings(back, postgres_dsn, dst)) as b,
    ):
        names = ["AAA", "BBB", "CCC"]
        assert_frame_equal(b.bars(names), a.bars(names))
        for as_of in (T0 + timedelta(seconds=30), T0 + timedelta(seconds=90)):
            assert_frame_equal(b.bars(names, as_of=as_of), a.bars(names, as_of=as_of))
        assert b.bars(["CCC"], as_of=T0 + timedelta(seconds=90)).height == 3  # deleted later
        assert b.bars(["CCC"]).is_empty()
        assert_frame_equal(b.status(), a.status())
        assert b.quarantine().height == 1  # every table came along, not only the bars
        assert [j.job_id for j in b.jobs()] == [j.job_id for j in a.jobs()]
        assert b.runtime.backend.catalog.tasks("job-tasks") == a.runtime.backend.catalog.tasks(
            "job-tasks"
        )
        assert b.runtime.backend.catalog.get_state("providers") == {"acme": {"calls": 2}}
        assert_frame_equal(b.actions("AAA"), a.actions("AAA"))
        assert_frame_equal(b.instruments.instruments(), a.instruments.instruments())
        assert_frame_equal(b.runtime.backend.scores.read(), a.runtime.backend.scores.read())
        digest = b.runtime.backend.raw.manifest()["sha256"][0]
        assert b.runtime.backend.raw.body(digest, "acme") == b"\x00{}"
        # identities go on after the restored rows: new rows do not collide
        old_ids = [d["id"] for d in b.runtime.backend.catalog.dead_letters()]
        assert b.runtime.backend.catalog.add_dead_letter("t", {}, "e", None, T0) > max(old_ids)
        assert (
            b.runtime.backend.quarantine.add(
                b.quarantine().drop("quarantined_at"), job_id="again", at=T0, dedupe=False
            )
            == 1
        )
        assert isinstance(b.runtime.backend.bars, PostgresStore)
        b.write_bars(make_bars(["EEE"], 2).drop("ingested_at", "job_id"), source="v")  # usable
    report = runner.invoke(
        app, ["--data-dir", str(back), "storage-report"], env=_env(postgres_dsn, dst)
    )
    assert report.exit_code == 0, report.output
    assert "PostgreSQL" in report.output and "history" in report.output


def test_a_damaged_postgres_backup_is_refused_before_anything_is_restored(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    src, dst = pg_schema + "_dmg_src", pg_schema + "_dmg_dst"
    _fill(tmp_path / "live", postgres_dsn, src, make_bars)
    backup(tmp_path / "live", tmp_path / "snap", PostgresBars(postgres_dsn, src))
    victim = tmp_path / "snap" / "postgres" / "bars_history.pgcopy.zst"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="checksums") as info:
        restore(tmp_path / "snap", tmp_path / "back", PostgresBars(postgres_dsn, dst))
    assert info.value.context["files"] == ["postgres/bars_history.pgcopy.zst"]
    assert not _schema_exists(postgres_dsn, dst)  # not even migrated
    assert not (tmp_path / "back").exists()


def test_restore_refuses_a_schema_that_holds_bars(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    src, busy = pg_schema + "_ne_src", pg_schema + "_ne_busy"
    _fill(tmp_path / "live", postgres_dsn, src, make_bars)
    backup(tmp_path / "live", tmp_path / "snap", PostgresBars(postgres_dsn, src))
    store = PostgresStore(postgres_dsn, busy, pool_size=1)
    try:
        store.upsert(make_bars(["ZZZ"], 1))
    finally:
        store.close()
    before = _table(postgres_dsn, busy, "bars")
    for target in (busy, src):
        with pytest.raises(StorageError, match="not empty"):
            restore(tmp_path / "snap", tmp_path / "back", PostgresBars(postgres_dsn, target))
    assert_frame_equal(_table(postgres_dsn, busy, "bars"), before)
    assert not (tmp_path / "back").exists()
    # a migrated schema without rows (what opening the platform once leaves) is empty
    PostgresStore(postgres_dsn, pg_schema + "_ne_fresh", pool_size=1).close()
    restore(
        tmp_path / "snap", tmp_path / "back", PostgresBars(postgres_dsn, pg_schema + "_ne_fresh")
    )
    assert _table(postgres_dsn, pg_schema + "_ne_fresh", "bars").height == 10


def test_backends_must_match_between_backup_and_restore(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    src = pg_schema + "_mm_src"
    _fill(tmp_path / "live", postgres_dsn, src, make_bars)
    backup(tmp_path / "live", tmp_path / "pg", PostgresBars(postgres_dsn, src))
    with pytest.raises(StorageError, match="backend postgres"):
        restore(tmp_path / "pg", tmp_path / "back")
    with Platform.open(tmp_path / "lake") as p:
        p.write_bars(make_bars(["AAA"], 2).drop("ingested_at", "job_id"), source="v")
    backup(tmp_path / "lake", tmp_path / "lake-snap")
    target = PostgresBars(postgres_dsn, pg_schema + "_mm_dst")
    with pytest.raises(StorageError, match="no PostgreSQL bars"):
        restore(tmp_path / "lake-snap", tmp_path / "back", target)
    assert not (tmp_path / "back").exists()
    with pytest.raises(StorageError, match="no migrated PostgreSQL bar store"):
        backup(tmp_path / "lake", tmp_path / "bad", PostgresBars(postgres_dsn, "qv_nowhere"))
    assert not (tmp_path / "bad").exists()  # no partial backup left behind


def test_a_backup_of_an_unknown_migration_is_refused(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    src = pg_schema + "_rev_src"
    _fill(tmp_path / "live", postgres_dsn, src, make_bars)
    snap = tmp_path / "snap"
    backup(tmp_path / "live", snap, PostgresBars(postgres_dsn, src))
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["postgres"]["revision"] = "9999"  # made by a newer QuantiVista
    (snap / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StorageError, match="migration is unknown"):
        restore(snap, tmp_path / "back", PostgresBars(postgres_dsn, pg_schema + "_rev_dst"))
    assert not _schema_exists(postgres_dsn, pg_schema + "_rev_dst")


def test_storage_report_counts_rows_partitions_and_bytes(
    pg_store: PostgresStore, make_bars: MakeBars
) -> None:
    bars = pl.concat([make_bars(2, 4, start="2019-03-01"), make_bars(2, 4, start="2021-06-01")])
    pg_store.upsert(bars)
    pg_store.upsert(bars.head(3).with_columns(close=pl.col("close") * 2))
    report = pg_store.storage_report()
    assert report.columns == ["tier", "files", "rows", "bytes", "raw_bytes", "compression_ratio"]
    hot, history = report.rows(named=True)
    assert (hot["tier"], hot["rows"], history["tier"], history["rows"]) == ("hot", 16, "history", 3)
    assert hot["files"] >= 2 and history["files"] == 1
    for tier in (hot, history):
        # values take 80-110 bytes a bar; pages, headers and the index make the table larger
        assert 80 * tier["rows"] <= tier["raw_bytes"] <= 110 * tier["rows"]
        assert tier["bytes"] > tier["raw_bytes"]
        assert tier["compression_ratio"] == pytest.approx(tier["raw_bytes"] / tier["bytes"])


def test_stats_counts_partitions_per_key(pg_store: PostgresStore, make_bars: MakeBars) -> None:
    bars = pl.concat([make_bars(2, 4, start="2019-03-01"), make_bars(2, 4, start="2021-06-01")])
    pg_store.upsert(bars)
    stats = pg_store.stats()
    assert stats.select("symbol", "rows", "files").rows() == [("SYM0", 8, 2), ("SYM1", 8, 2)]
    with pg_store.pool.connection() as conn:
        row = conn.execute("SELECT sum(pg_column_size(b.*)), count(*) FROM bars b").fetchone()
    # pg_column_size(b.*) of one row is 3 bytes less (a 1-byte header instead of 4) when the
    # executor carried the row value through a sort, and for the first row of a scan too:
    # sums of it vary with the plan by up to 3 bytes a row
    assert row is not None
    assert 0 <= stats["bytes"].sum() - row[0] <= 3 * row[1]


def test_a_write_during_the_backup_is_in_neither_table(
    tmp_path: Path,
    postgres_dsn: str,
    pg_schema: str,
    make_bars: MakeBars,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from quantivista.storage.postgres import backup as pgbackup

    src, dst = pg_schema + "_snap_src", pg_schema + "_snap_dst"
    store = PostgresStore(postgres_dsn, src, pool_size=1)
    bars = make_bars(2, 5)
    store.upsert(bars)
    copy_out = pgbackup._copy_out

    def copy_then_write(conn: psycopg.Connection[object], query: object, path: Path) -> int:
        rows = copy_out(conn, query, path)  # type: ignore[arg-type]
        if path.name.startswith("bars."):  # between the two tables: revise every bar
            store.upsert(bars.with_columns(volume=pl.col("volume") + 1, ingested_at=pl.lit(T0)))
        return rows

    monkeypatch.setattr(pgbackup, "_copy_out", copy_then_write)
    try:
        manifest = backup(tmp_path / "live", tmp_path / "snap", PostgresBars(postgres_dsn, src))
    finally:
        store.close()
    assert _table(postgres_dsn, src, "bars_history").height == 10  # the write happened
    assert manifest["postgres"]["tables"]["bars_history"]["rows"] == 0  # after the snapshot
    restore(tmp_path / "snap", tmp_path / "back", PostgresBars(postgres_dsn, dst))
    restored = _table(postgres_dsn, dst, "bars")
    assert restored["volume"].to_list() == bars["volume"].to_list()


def test_restore_refuses_a_schema_that_holds_any_state(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    src, busy = pg_schema + "_st_src", pg_schema + "_st_busy"
    _fill(tmp_path / "live", postgres_dsn, src, make_bars)
    backup(tmp_path / "live", tmp_path / "snap", PostgresBars(postgres_dsn, src))
    with Platform.from_settings(_settings(tmp_path / "other", postgres_dsn, busy)) as p:
        p.runtime.backend.catalog.put_state("only", {"this": 1})  # no bars at all
    with pytest.raises(StorageError, match="not empty") as info:
        restore(tmp_path / "snap", tmp_path / "back", PostgresBars(postgres_dsn, busy))
    assert info.value.context["table"] == "state"


def test_a_reader_of_the_target_sees_the_restored_state_as_new(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    src, dst = pg_schema + "_ver_src", pg_schema + "_ver_dst"
    _fill(tmp_path / "live", postgres_dsn, src, make_bars)
    backup(tmp_path / "live", tmp_path / "snap", PostgresBars(postgres_dsn, src))
    with Platform.from_settings(_settings(tmp_path / "reader", postgres_dsn, dst)) as reader:
        before = (
            reader.runtime.backend.actions.version(),
            reader.runtime.backend.instruments.version(),
        )
        assert reader.actions("AAA").is_empty()
        restore(tmp_path / "snap", tmp_path / "back", PostgresBars(postgres_dsn, dst))
        after = (
            reader.runtime.backend.actions.version(),
            reader.runtime.backend.instruments.version(),
        )
        assert after[0] != before[0] and after[1] != before[1]
        assert reader.actions("AAA").height == 1


def test_a_backup_made_at_revision_0001_restores_and_upgrades(
    tmp_path: Path, postgres_dsn: str, pg_schema: str, make_bars: MakeBars
) -> None:
    from quantivista.storage.postgres.bars import migrate

    src, dst = pg_schema + "_old_src", pg_schema + "_old_dst"
    migrate(postgres_dsn, src, "0001")
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f'CREATE TABLE "{src}".bars_y2024 PARTITION OF "{src}".bars '
                     "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")  # fmt: skip
        conn.execute(
            f'INSERT INTO "{src}".bars (symbol, timeframe, ts, close) VALUES (%s, %s, %s, %s)',
            ("AAA", "1d", T0, 1.0),
        )
    manifest = backup(tmp_path / "live", tmp_path / "snap", PostgresBars(postgres_dsn, src))
    assert manifest["postgres"]["revision"] == "0001"
    assert sorted(manifest["postgres"]["tables"]) == ["bars", "bars_history"]
    restore(tmp_path / "snap", tmp_path / "back", PostgresBars(postgres_dsn, dst))
    with Platform.from_settings(_settings(tmp_path / "back", postgres_dsn, dst)) as p:
        assert p.bars(["AAA"])["close"].to_list() == [1.0]
        p.runtime.backend.catalog.put_state("k", {"v": 1})  # the tables of 0002 are there
        assert p.runtime.backend.catalog.get_state("k") == {"v": 1}
