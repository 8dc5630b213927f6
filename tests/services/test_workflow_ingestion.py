"""The reporting-side ingestion service end to end: simulated sources through rules and
checks into the lake, dead letters and replay, lineage, events, tenants and schedules."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4
from zoneinfo import ZoneInfo

import polars as pl
import psycopg
import pytest

from quantivista.bus.events import DataIngestedEvent, Event
from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import InvalidInputError, NotFoundError, RuleValidationError
from quantivista.model.workflow import (
    DataFormat,
    DataSource,
    JobStatus,
    QualityCheck,
    TransformationRule,
)
from quantivista.reporting.simulate import EXTENSIONS, SYMBOLS, simulate_workflows
from quantivista.runtime import Runtime
from quantivista.storage.lake.sql import sql_query

T0 = datetime(2026, 12, 4, 13, 0, tzinfo=UTC)
ROWS = 400


@pytest.fixture(scope="module")
def workflows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("workflows")
    simulate_workflows(out, seed=11, rows=ROWS, error_rate=0.05)
    return out


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime(Settings(data_dir=tmp_path / "data"), clock=TestClock(T0)) as rt:
        yield rt


def events(runtime: Runtime) -> list[DataIngestedEvent]:
    seen: list[DataIngestedEvent] = []

    def keep(event: Event) -> None:
        assert isinstance(event, DataIngestedEvent)
        seen.append(event)

    runtime.bus.subscribe("data.ingested", keep)
    return seen


RULES = [
    TransformationRule(rule_id="price", rule_type="cast", source_field="execution_price",
                       transformation_logic="float64"),
    TransformationRule(rule_id="qty", rule_type="cast", source_field="execution_qty",
                       transformation_logic="int64"),
    TransformationRule(rule_id="oqty", rule_type="cast", source_field="order_qty",
                       transformation_logic="int64"),
    TransformationRule(rule_id="utc", rule_type="timezone", source_field="execution_time",
                       transformation_logic="America/New_York"),
    TransformationRule(rule_id="notional", rule_type="derive", target_field="execution_notional",
                       transformation_logic="execution_price * execution_qty"),
]  # fmt: skip
CHECKS = [
    QualityCheck(check_id="id", check_type="not_null", field="trade_id"),
    QualityCheck(check_id="once", check_type="unique", field="trade_id"),
    QualityCheck(check_id="sym", check_type="allowed_values", field="symbol",
                 params={"values": SYMBOLS}),
    QualityCheck(check_id="fresh", check_type="freshness", field="execution_time",
                 params={"max_age_s": 86_400 * 60}, severity="warning"),
]  # fmt: skip


def executions(runtime: Runtime, path: Path, fmt: DataFormat, tenant: str = "acme") -> DataSource:
    for rule in RULES:
        runtime.workflows.save_rule(tenant, rule)
    return runtime.workflows.register_source(
        tenant,
        DataSource(
            source_id="executions", source_type="TRADE_EXECUTION", ingestion_mode="ON_DEMAND",
            data_format=fmt, location=str(path), target_table="execution_data_lake",
            transformation_rules=[r.rule_id for r in RULES], quality_checks=CHECKS,
        ),
    )  # fmt: skip


def test_a_csv_source_lands_in_the_lake_with_dead_letters_lineage_and_an_event(
    runtime: Runtime, workflows: Path
) -> None:
    seen = events(runtime)
    path = workflows / "executions.csv"
    executions(runtime, path, DataFormat.CSV)
    job = runtime.workflows.sync("acme", "executions")
    raw = pl.read_csv(path, infer_schema=False)
    bad_price = raw.filter(pl.col("execution_price") == "n/a").height
    no_id = raw["trade_id"].null_count()
    dups = (
        raw.filter(pl.col("trade_id").is_not_null()).height
        - raw["trade_id"].drop_nulls().n_unique()
    )
    assert bad_price and no_id and dups
    assert job.status is JobStatus.PARTIAL
    assert job.records_failed == bad_price + no_id + dups
    assert job.records_processed == ROWS - job.records_failed
    assert job.rule_versions == {r.rule_id: 1 for r in RULES}

    lake = runtime.workflows.lake_rows("acme", "execution_data_lake")
    assert lake.height == job.records_processed
    assert set(lake.columns) >= {"execution_date", "trade_id", "order_data", "execution_data",
                                 "settlement_data", "ingestion_job_id", "input_uri",
                                 "input_offset", "tenant_id"}  # fmt: skip
    first = lake.sort("input_offset").row(0, named=True)
    source_row = raw.row(first["input_offset"], named=True)
    assert first["trade_id"] == source_row["trade_id"]
    assert first["order_data"]["order_side"] == source_row["order_side"]
    execution = first["execution_data"]
    assert execution["execution_notional"] == pytest.approx(
        float(source_row["execution_price"]) * int(source_row["execution_qty"])
    )
    ny = datetime.strptime(source_row["execution_time"], "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=ZoneInfo("America/New_York")
    )
    assert execution["execution_time"] == ny
    assert execution["execution_time"].utcoffset() == timedelta(0)  # stored in UTC
    # the lake is visible to SQL (`qv sql`) with its partition folders as columns
    counted = sql_query(runtime.settings.data_dir, "SELECT count(*) AS n, count(DISTINCT"
                        " execution_date) AS days FROM execution_data_lake")  # fmt: skip
    assert counted["n"][0] == job.records_processed and counted["days"][0] > 1

    held = runtime.workflows.dead_letters("acme", job_id=job.job_id)
    assert held.height == job.records_failed
    priced = held.filter(pl.col("reason") == "execution_price: value cannot be cast")
    assert priced.height == bad_price
    assert json.loads(priced["record"][0])["execution_price"] == "n/a"  # as it was read
    assert held.filter(pl.col("reason") == "failed checks: id").height == no_id

    report = runtime.workflows.report("acme", job.job_id)
    assert report.total_records == ROWS and report.invalid_records == job.records_failed
    assert report.data_profiling.columns["execution_price"].dtype == "Float64"

    lineage = runtime.workflows.lineage("acme", job.job_id)
    assert lineage["inputs"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert lineage["rule_versions"]["utc"] == 1 and lineage["lake_table"] == "execution_data_lake"

    assert len(seen) == 1
    payload = seen[0].data_ingested
    assert (payload.job_id, payload.records_processed, payload.records_failed) == (
        job.job_id, job.records_processed, job.records_failed,
    )  # fmt: skip
    assert payload.data_categories == ["execution"] and payload.processing_time_ms > 0


@pytest.mark.parametrize("fmt", [f for f in DataFormat if f is not DataFormat.CSV])
def test_every_format_gives_the_same_outcome_as_csv(
    tmp_path: Path, workflows: Path, fmt: DataFormat
) -> None:
    outcomes = []
    for chosen in (DataFormat.CSV, fmt):
        with Runtime(Settings(data_dir=tmp_path / chosen.value), clock=TestClock(T0)) as rt:
            executions(rt, workflows / f"executions.{EXTENSIONS[chosen]}", chosen)
            job = rt.workflows.sync("acme", "executions")
            lake = rt.workflows.lake_rows("acme", "execution_data_lake")
            outcomes.append(
                (job.records_processed, job.records_failed, lake["trade_id"].sort().to_list())
            )
    assert outcomes[0] == outcomes[1]


def test_replay_sends_dead_letters_through_the_fixed_source(
    runtime: Runtime, workflows: Path
) -> None:
    executions(runtime, workflows / "executions.parquet", DataFormat.PARQUET)
    strict = [*CHECKS, QualityCheck(check_id="small", check_type="range", field="execution_qty",
                                    params={"max": 5000})]  # fmt: skip
    runtime.workflows.update_source("acme", "executions", {"quality_checks": strict})
    first = runtime.workflows.sync("acme", "executions")
    too_big = runtime.workflows.dead_letters("acme").filter(
        pl.col("reason") == "failed checks: small"
    )
    assert too_big.height > 0
    runtime.workflows.update_source("acme", "executions", {"quality_checks": CHECKS})
    again = runtime.workflows.replay("acme", "executions", first.job_id)
    # the oversized rows land now; rows with other faults fail again and are held anew
    lake = runtime.workflows.lake_rows("acme", "execution_data_lake")
    landed = set(lake.filter(pl.col("ingestion_job_id") == again.job_id)["trade_id"].to_list())
    assert {json.loads(r)["trade_id"] for r in too_big["record"]} <= landed
    assert lake.height == first.records_processed + again.records_processed
    assert (
        again.records_failed == runtime.workflows.dead_letters("acme", job_id=again.job_id).height
    )
    assert again.records_failed > 0  # unparseable prices are still unparseable
    assert runtime.workflows.dead_letters("acme", job_id=first.job_id).is_empty()
    assert runtime.workflows.lineage("acme", again.job_id)["inputs"][0]["input_uri"] == (
        "dead-letters:executions"
    )


def test_rules_are_validated_on_create_and_versioned(runtime: Runtime) -> None:
    with pytest.raises(RuleValidationError, match="unknown field 'nope'"):
        runtime.workflows.save_rule(
            "acme",
            TransformationRule(rule_id="r", rule_type="scale", source_field="nope",
                               transformation_logic="2"),
            fields={"qty": "int64"},
        )  # fmt: skip
    rule = TransformationRule(rule_id="r", rule_type="scale", source_field="qty",
                              transformation_logic="2")  # fmt: skip
    assert runtime.workflows.save_rule("acme", rule).version == 1
    changed = rule.model_copy(update={"transformation_logic": "3"})
    assert runtime.workflows.save_rule("acme", changed).version == 2
    with pytest.raises(RuleValidationError, match="unknown field 'qty'"):
        runtime.workflows.register_source(
            "acme",
            DataSource(source_id="s", source_type="EXTERNAL_FEEDS", ingestion_mode="ON_DEMAND",
                       data_format="CSV", transformation_rules=["r"], fields={"other": "int64"}),
        )  # fmt: skip
    assert runtime.workflows.disable_rule("acme", "r").version == 3
    assert [r.enabled for r in runtime.workflows.rule_history("acme", "r")] == [True, True, False]


def test_a_tenant_reads_syncs_and_looks_up_nothing_of_another(
    runtime: Runtime, workflows: Path
) -> None:
    executions(runtime, workflows / "executions.csv", DataFormat.CSV, tenant="acme")
    job = runtime.workflows.sync("acme", "executions")
    other = runtime.workflows
    for call in (
        lambda: other.sync("globex", "executions"),
        lambda: other.job("globex", job.job_id),
        lambda: other.report("globex", job.job_id),
        lambda: other.lineage("globex", job.job_id),
        lambda: other.source("globex", "executions"),
        lambda: other.replay("globex", "executions"),
        lambda: other.lake_rows("globex", "execution_data_lake"),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert other.sources("globex") == [] and other.jobs("globex") == []
    assert other.dead_letters("globex").is_empty() and other.rules("globex") == []


def test_portfolio_rows_are_partitioned_by_date_and_portfolio(
    runtime: Runtime, workflows: Path
) -> None:
    runtime.workflows.save_rule(
        "acme",
        TransformationRule(
            rule_id="qty", rule_type="cast", source_field="quantity", transformation_logic="float64"
        ),
    )
    runtime.workflows.register_source("acme", DataSource(
        source_id="positions", source_type="PORTFOLIO_MANAGEMENT", ingestion_mode="ON_DEMAND",
        data_format="JSON", location=str(workflows / "positions.ndjson"),
        target_table="portfolio_data_lake", transformation_rules=["qty"],
        quality_checks=[QualityCheck(check_id="long", check_type="range", field="quantity",
                                     params={"min": 0})]))  # fmt: skip
    job = runtime.workflows.sync("acme", "positions")
    assert job.status is JobStatus.PARTIAL
    lake = runtime.workflows.lake_rows("acme", "portfolio_data_lake")
    assert lake.height == job.records_processed
    assert set(lake["ingestion_date"].unique().to_list()) == {T0.date()}
    assert lake["quality_score"].unique().to_list() == [
        pytest.approx(runtime.workflows.report("acme", job.job_id).quality_score)
    ]
    folders = {p.parent.name for p in runtime.workflows.lake.files("portfolio_data_lake", "acme")}
    assert folders == {f"portfolio_id={p}" for p in lake["portfolio_id"].unique().to_list()}
    assert lake["data_payload"][0].keys() >= {"symbol", "quantity", "market_value"}


def test_scheduled_sources_are_due_once_per_cron_tick(runtime: Runtime, workflows: Path) -> None:
    clock = runtime.clock
    assert isinstance(clock, TestClock)
    for rule in RULES:
        runtime.workflows.save_rule("acme", rule)
    with pytest.raises(InvalidInputError, match="cron"):
        runtime.workflows.register_source("acme", DataSource(
            source_id="e", source_type="TRADE_EXECUTION", ingestion_mode="BATCH_SCHEDULED",
            data_format="CSV", location=str(workflows / "executions.csv"),
            schedule="every hour"))  # fmt: skip
    runtime.workflows.register_source("acme", DataSource(
        source_id="e", source_type="TRADE_EXECUTION", ingestion_mode="BATCH_SCHEDULED",
        data_format="CSV", location=str(workflows / "executions.csv"), schedule="*/15 * * * *",
        target_table="execution_data_lake", transformation_rules=["utc"]))  # fmt: skip
    assert runtime.workflows.due_sources(clock.now()) == []  # created at 13:00, no tick since
    clock.advance(16 * 60)
    due = runtime.workflows.due_sources(clock.now())
    assert due == [("acme", "e", T0 + timedelta(minutes=15))]
    jobs = runtime.workflows.run_due(clock.now())
    assert [j.source_id for j in jobs] == ["e"]
    assert jobs[0].status is JobStatus.PARTIAL  # rows without a trade id cannot be placed
    assert runtime.workflows.dead_letters("acme", job_id=jobs[0].job_id)[
        "reason"
    ].unique().to_list() == ["trade_id or execution_date missing"]
    assert runtime.workflows.run_due(clock.now()) == []  # that tick is done
    runtime.workflows.set_enabled("acme", "e", False)
    clock.advance(15 * 60)
    assert runtime.workflows.due_sources(clock.now()) == []


def test_a_job_whose_rules_do_not_fit_the_data_fails_with_the_reason_and_is_announced(
    runtime: Runtime, workflows: Path
) -> None:
    seen = events(runtime)
    runtime.workflows.save_rule(
        "acme",
        TransformationRule(
            rule_id="gone",
            rule_type="scale",
            source_field="no_such_column",
            transformation_logic="2",
        ),
    )
    runtime.workflows.register_source("acme", DataSource(
        source_id="risk", source_type="PORTFOLIO_MANAGEMENT", ingestion_mode="ON_DEMAND",
        data_format="PARQUET", location=str(workflows / "risk.parquet"),
        target_table="risk_metrics", transformation_rules=["gone"]))  # fmt: skip
    job = runtime.workflows.sync("acme", "risk")
    assert job.status is JobStatus.FAILED
    assert job.error_details is not None
    assert job.error_details[0]["kind"] == "RuleValidationError"
    assert job.error_details[0]["reason"] == "unknown field 'no_such_column'"
    assert [e.data_ingested.records_processed for e in seen] == [0]
    with pytest.raises(NotFoundError):
        runtime.workflows.lake_rows("acme", "risk_metrics")


@pytest.fixture
def pg_runtime(tmp_path: Path, postgres_dsn: str) -> Iterator[Runtime]:
    schema = f"qv_wf_{uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        storage={"backend": "postgres", "postgres_schema": schema, "postgres_pool_size": 2},
        services={"postgres_dsn": postgres_dsn},
    )
    try:
        with Runtime(settings, clock=TestClock(T0)) as rt:
            yield rt
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_on_postgres_an_incremental_source_resumes_and_tenants_stay_apart(
    pg_runtime: Runtime, postgres_dsn: str
) -> None:
    schema = pg_runtime.settings.storage.postgres_schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{schema}".oms_positions (seq int8, portfolio_id text,'
                     " symbol text, quantity float8)")  # fmt: skip
        conn.execute(f'INSERT INTO "{schema}".oms_positions SELECT i, \'PF\' || (i % 3),'
                     " 'AAPL', i FROM generate_series(1, 25) i")  # fmt: skip
    wf = pg_runtime.workflows
    wf.register_source("acme", DataSource(
        source_id="oms", source_type="PORTFOLIO_MANAGEMENT", ingestion_mode="INCREMENTAL_SYNC",
        data_format="JSON", location=postgres_dsn, target_table="portfolio_data_lake",
        connection_config={"table": f"{schema}.oms_positions", "cursor_column": "seq",
                           "batch_rows": 10}))  # fmt: skip
    first = wf.sync("acme", "oms")
    assert (first.status, first.records_processed) == (JobStatus.SUCCEEDED, 25)
    assert [i["cursor"]["value"] for i in wf.lineage("acme", first.job_id)["inputs"]] == [
        10,
        20,
        25,
    ]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{schema}".oms_positions SELECT i, \'PF1\', \'MSFT\', i'
                     " FROM generate_series(26, 30) i")  # fmt: skip
    second = wf.sync("acme", "oms")
    assert second.records_processed == 5  # only the rows after the cursor
    lake = wf.lake_rows("acme", "portfolio_data_lake")
    assert sorted(lake["data_payload"].struct.field("seq").to_list()) == list(range(1, 31))
    for call in (
        lambda: wf.sync("globex", "oms"),
        lambda: wf.job("globex", first.job_id),
        lambda: wf.report("globex", first.job_id),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert wf.sources("globex") == [] and wf.jobs("globex") == []


def test_market_data_sources_read_the_platforms_own_bars(runtime: Runtime) -> None:
    from quantivista.model.schema import coerce_bars

    bars = coerce_bars(pl.DataFrame({
        "symbol": ["AAPL"] * 3, "timeframe": ["1d"] * 3,
        "ts": [datetime(2026, 11, d, tzinfo=UTC) for d in (2, 3, 4)],
        "open": [1.0, 2.0, 3.0], "high": [1.0, 2.0, 3.0], "low": [1.0, 2.0, 3.0],
        "close": [1.0, 2.0, 3.0], "volume": [10.0, 20.0, 30.0],
    }))  # fmt: skip
    runtime.writes.write_bars(bars, source="test")
    runtime.workflows.register_source("acme", DataSource(
        source_id="bars", source_type="MARKET_DATA", ingestion_mode="ON_DEMAND",
        data_format="PARQUET", location="bars:AAPL", target_table="instrument_analytics",
        connection_config={"start": "2026-11-01", "end": "2026-11-30"}))  # fmt: skip
    job = runtime.workflows.sync("acme", "bars")
    assert job.records_processed == 3
    lake = runtime.workflows.lake_rows("acme", "instrument_analytics")
    assert lake.sort("ts")["close"].to_list() == [1.0, 2.0, 3.0]


def test_a_lake_backup_keeps_the_ingestion_catalog_and_the_reporting_lake(
    runtime: Runtime, workflows: Path, tmp_path: Path
) -> None:
    from quantivista.storage.lake.backup import backup, restore

    executions(runtime, workflows / "executions.parquet", DataFormat.PARQUET)
    job = runtime.workflows.sync("acme", "executions")
    backup(runtime.settings.data_dir, tmp_path / "snap")
    restore(tmp_path / "snap", tmp_path / "back")
    with Runtime(Settings(data_dir=tmp_path / "back"), clock=TestClock(T0)) as back:
        assert back.workflows.job("acme", job.job_id) == job
        assert back.workflows.lake_rows("acme", "execution_data_lake").height == (
            job.records_processed
        )
        assert back.workflows.dead_letters("acme").height == job.records_failed


def test_unique_holds_across_the_batches_of_one_job_not_across_jobs(
    runtime: Runtime, tmp_path: Path
) -> None:
    folder = tmp_path / "two-files"
    folder.mkdir()
    first = pl.DataFrame({"trade_id": ["t1", "t2"], "execution_date": ["2026-12-01"] * 2})
    second = pl.DataFrame({"trade_id": ["t3", "t1"], "execution_date": ["2026-12-02"] * 2})
    first.write_csv(folder / "a.csv")
    second.write_csv(folder / "b.csv")
    once = QualityCheck(check_id="once", check_type="unique", field="trade_id")
    runtime.workflows.register_source("acme", DataSource(
        source_id="two", source_type="TRADE_EXECUTION", ingestion_mode="ON_DEMAND",
        data_format="CSV", location=str(folder / "*.csv"), target_table="execution_data_lake",
        quality_checks=[once]))  # fmt: skip
    job = runtime.workflows.sync("acme", "two")
    assert (job.records_processed, job.records_failed) == (3, 1)
    (letter,) = runtime.workflows.dead_letters("acme", job.job_id).iter_rows(named=True)
    assert json.loads(letter["record"])["trade_id"] == "t1"
    assert letter["reason"] == "failed checks: once"
    lake = runtime.workflows.lake_rows("acme", "execution_data_lake")
    t1 = lake.filter(pl.col("trade_id") == "t1")
    assert t1["input_uri"].to_list() == [(folder / "a.csv").as_uri()]  # the first one kept
    # a second job is checked on its own rows: the lake already holding t1 does not count
    again = runtime.workflows.sync("acme", "two")
    assert (again.records_processed, again.records_failed) == (3, 1)
