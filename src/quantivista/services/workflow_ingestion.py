"""The reporting-side Data Ingestion Service: sources, rules, jobs, quality, lake, schedule.

    service = runtime.workflows
    service.register_source("acme", DataSource(...))
    job = service.sync("acme", "executions")          # read -> rules -> checks -> lake
    service.report("acme", job.job_id); service.lineage("acme", job.job_id)

A job reads every batch of its source (files, a PostgreSQL cursor, HTTP pages, the
platform's own bars), numbers the input rows, applies the source's rules (recording the
version of each), runs its checks, shapes the valid rows into its lake table and writes
them with their lineage. Records that fail a rule, a check or the lake's layout go to the
dead-letter table as they were read, with the reason; `replay` sends them through again.
Every finished job (succeeded, partial or failed) publishes a `DataIngestedEvent`.

This is market-data ingestion's reporting twin: `services.ingestion` loads bars.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import polars as pl
from pydantic import ValidationError

from quantivista.bus.base import EventBus
from quantivista.bus.events import DataIngestedEvent
from quantivista.clock import Clock
from quantivista.errors import InvalidInputError, NotFoundError, QuantiVistaError
from quantivista.model.workflow import (
    LAKE_TABLES,
    DataIngestedPayload,
    DataIngestionRequest,
    DataQualityReport,
    DataSource,
    IngestionJob,
    IngestionMode,
    JobStatus,
    TransformationRule,
)
from quantivista.reference.fx import FxRates
from quantivista.reporting.checks import judge, plan_checks, validate_checks
from quantivista.reporting.connectors import Batch, read_files, read_http, read_postgres
from quantivista.reporting.lake_shape import INPUT_COLUMN, KEEP_COLUMN, OFFSET_COLUMN, shape
from quantivista.reporting.simulate import simulate_workflows
from quantivista.reporting.transform import (
    REJECTED_SCHEMA,
    ROW_COLUMN,
    Reference,
    collect,
    encode_rows,
    filtered_count,
    plan_rules,
    rule_rejects,
    validate_rules,
)
from quantivista.storage.base import BarStore
from quantivista.storage.contracts import InstrumentStore, WorkflowCatalog
from quantivista.storage.lake.workflow_lake import WorkflowLake

if TYPE_CHECKING:
    from quantivista.acquisition.breaker import Breakers
    from quantivista.acquisition.limits import RateLimiter

__all__ = ["BarsReader", "WorkflowIngestionService", "platform_reference", "simulate"]

BarsReader = Callable[[list[str], str | None, str | None, str], pl.DataFrame]

# jobs of at least this many rows keep their dead letters while the lake is written (below,
# a thread costs more than it saves: stream micro-batches)
_OVERLAP_ROWS = 200_000

_CATEGORIES = {
    "portfolio_data_lake": "portfolio",
    "execution_data_lake": "execution",
    "risk_metrics": "risk",
    "performance_metrics": "performance",
    "market_intelligence": "market_intelligence",
    "instrument_analytics": "instrument_analytics",
}


def simulate(out: Path, *, seed: int, rows: int, error_rate: float) -> list[Path]:
    """Write simulated workflow sources (every dataset in every format) under `out`."""
    return simulate_workflows(out, seed=seed, rows=rows, error_rate=error_rate)


def platform_reference(instruments: InstrumentStore, bars: BarStore) -> Reference:
    """Return the platform's reference data for rules and checks: instruments and FX rates."""
    fx: FxRates | None = FxRates.from_store(bars)
    if fx is not None and not fx.pairs:
        fx = None
    return Reference(tables={"instruments": instruments.instruments()}, fx=fx)


def _check_schedule(source: DataSource) -> None:
    if source.ingestion_mode is IngestionMode.BATCH_SCHEDULED and not source.schedule:
        raise InvalidInputError("a BATCH_SCHEDULED source needs a cron schedule")
    if source.schedule:
        from croniter import croniter

        if not croniter.is_valid(source.schedule):
            raise InvalidInputError("not a cron expression", schedule=source.schedule)


class WorkflowIngestionService:
    """Use cases of the reporting-side ingestion; every call names the tenant it acts for."""

    def __init__(
        self,
        catalog: WorkflowCatalog,
        lake: WorkflowLake,
        bus: EventBus,
        clock: Clock,
        *,
        reference: Callable[[], Reference] | None = None,
        bars: BarsReader | None = None,
        limiter: RateLimiter | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self.catalog = catalog
        self.lake = lake
        self.bus = bus
        self.clock = clock
        self._reference = reference or Reference
        self._bars = bars
        # HTTP sources go through the platform's provider rate limiter and breakers
        self.limiter = limiter
        self.breakers = breakers

    def reference(self) -> Reference:
        """Return the reference tables and FX rates rules and checks may use."""
        return self._reference()

    # -- sources -------------------------------------------------------------------------------
    def register_source(self, tenant: str, source: DataSource) -> DataSource:
        """Create or replace a source after checking its schedule, rules and checks."""
        source = source.model_copy(update={"tenant_id": tenant})
        if source.target_table not in LAKE_TABLES:
            raise InvalidInputError(
                f"unknown lake table {source.target_table!r}", known=", ".join(LAKE_TABLES)
            )
        _check_schedule(source)
        rules = [self.catalog.rule(tenant, rule_id) for rule_id in source.transformation_rules]
        reference = self.reference()
        schema = validate_rules(rules, source.fields, reference)
        validate_checks(source.quality_checks, schema, reference)
        return self.catalog.save_source(source, self.clock.now())

    def update_source(self, tenant: str, source_id: str, changes: dict[str, Any]) -> DataSource:
        """Change some fields of a source (checked like a new one)."""
        current = self.catalog.source(tenant, source_id)
        try:
            merged = DataSource.model_validate(
                current.model_dump() | changes | {"source_id": source_id, "tenant_id": tenant}
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInputError(f"invalid source fields: {problems}") from None
        return self.register_source(tenant, merged)

    def set_enabled(self, tenant: str, source_id: str, enabled: bool) -> DataSource:
        """Enable or disable a source (a disabled source is not scheduled or synced)."""
        return self.catalog.set_enabled(tenant, source_id, enabled)

    def source(self, tenant: str, source_id: str) -> DataSource:
        """Return one of the tenant's sources."""
        return self.catalog.source(tenant, source_id)

    def sources(self, tenant: str) -> list[DataSource]:
        """Return the tenant's sources."""
        return self.catalog.sources(tenant)

    # -- rules ---------------------------------------------------------------------------------
    def save_rule(
        self, tenant: str, rule: TransformationRule, fields: dict[str, str] | None = None
    ) -> TransformationRule:
        """Validate and store a rule (a change becomes its next version)."""
        validate_rules([rule], fields, self.reference())
        return self.catalog.save_rule(tenant, rule, self.clock.now())

    def rules(self, tenant: str) -> list[TransformationRule]:
        """Return the latest version of each of the tenant's rules."""
        return self.catalog.rules(tenant)

    def rule(self, tenant: str, rule_id: str, version: int | None = None) -> TransformationRule:
        """Return a rule (its latest or a given version)."""
        return self.catalog.rule(tenant, rule_id, version)

    def rule_history(self, tenant: str, rule_id: str) -> list[TransformationRule]:
        """Return every version of a rule."""
        return self.catalog.rule_history(tenant, rule_id)

    def disable_rule(self, tenant: str, rule_id: str) -> TransformationRule:
        """Store a disabled version of a rule (jobs skip it; history keeps the others)."""
        current = self.catalog.rule(tenant, rule_id)
        return self.catalog.save_rule(
            tenant, current.model_copy(update={"enabled": False}), self.clock.now()
        )

    # -- jobs ----------------------------------------------------------------------------------
    def submit(self, tenant: str, request: DataIngestionRequest) -> IngestionJob:
        """Register the request's rules and source, and return its job (pending).

        Run it with `run_job`; the API does so in the background.
        """
        rules = [self.save_rule(tenant, r) for r in request.transformation_rules]
        source = DataSource(
            source_id=request.source_id,
            source_type=request.source_type,
            ingestion_mode=request.ingestion_mode,
            data_format=request.data_format,
            schedule=request.schedule,
            location=request.location,
            target_table=request.target_table,
            connection_config=request.connection_config,
            transformation_rules=[r.rule_id for r in rules],
            quality_checks=request.quality_checks,
            fields=request.fields,
            tenant_id=tenant,
        )
        self.register_source(tenant, source)
        return self.new_job(tenant, request.source_id)

    def new_job(self, tenant: str, source_id: str) -> IngestionJob:
        """Create a pending job of an enabled source (run it with `run_job`)."""
        source = self.catalog.source(tenant, source_id)
        if not source.enabled:
            raise InvalidInputError("the source is disabled", source_id=source_id)
        job = IngestionJob(
            job_id=f"wj-{uuid4().hex[:16]}",
            source_id=source_id,
            start_time=self.clock.now(),
            tenant_id=tenant,
            target_table=source.target_table,
        )
        self.catalog.save_job(job)
        return job

    def sync(self, tenant: str, source_id: str) -> IngestionJob:
        """Run a source now and return its finished job."""
        job = self.new_job(tenant, source_id)
        return self.run_job(tenant, job.job_id)

    def job(self, tenant: str, job_id: str) -> IngestionJob:
        """Return one of the tenant's jobs."""
        return self.catalog.job(tenant, job_id)

    def jobs(
        self, tenant: str, source_id: str | None = None, limit: int = 50
    ) -> list[IngestionJob]:
        """Return the tenant's jobs, newest first."""
        return self.catalog.jobs(tenant, source_id, limit)

    def report(self, tenant: str, job_id: str) -> DataQualityReport:
        """Return a job's quality report."""
        self.catalog.job(tenant, job_id)
        return self.catalog.report(tenant, job_id)

    def lineage(self, tenant: str, job_id: str) -> dict[str, Any]:
        """Return a job's lineage: the job, its source, rule versions, inputs, lake table."""
        job = self.catalog.job(tenant, job_id)
        source = self.catalog.source(tenant, job.source_id)
        return {
            "job_id": job.job_id,
            "source": source.model_dump(mode="json"),
            "rule_versions": job.rule_versions,
            "inputs": self.catalog.lineage(tenant, job_id),
            "lake_table": job.target_table,
            "status": job.status.value,
        }

    def dead_letters(
        self, tenant: str, job_id: str | None = None, source_id: str | None = None
    ) -> pl.DataFrame:
        """Return the tenant's held dead letters."""
        return self.catalog.dead_letters(tenant, job_id, source_id)

    # -- running -------------------------------------------------------------------------------
    def _batches(self, tenant: str, source: DataSource) -> Iterator[Batch]:
        config = source.connection_config
        if source.source_type.value == "MARKET_DATA" and source.location.startswith("bars:"):
            if self._bars is None:
                raise NotFoundError("this platform has no bar store wired to the service")
            symbols = [s for s in source.location.removeprefix("bars:").split(",") if s]
            frame = self._bars(
                symbols, config.get("start"), config.get("end"), config.get("timeframe", "1d")
            )
            yield Batch(frame, source.location)
            return
        if source.ingestion_mode is IngestionMode.INCREMENTAL_SYNC or source.location.startswith(
            ("postgresql://", "postgres://")
        ):
            state = self.catalog.sync_state(tenant, source.source_id)
            yield from read_postgres(source.location, config, (state or {}).get("cursor"))
            return
        if source.location.startswith(("http://", "https://")):
            yield from read_http(
                source.location, config, limiter=self.limiter, breakers=self.breakers
            )
            return
        yield from read_files(source.location, source.data_format, config)

    def run_job(self, tenant: str, job_id: str, *, given: Batch | None = None) -> IngestionJob:
        """Run a pending job to the end; return it finished (never raises for bad data).

        `given`: records to ingest instead of reading the source (dead letters being
        replayed, a micro-batch of a stream).
        """
        started = time.perf_counter()
        job = self.catalog.job(tenant, job_id)
        source = self.catalog.source(tenant, job.source_id)
        job = job.model_copy(update={"status": JobStatus.RUNNING})
        self.catalog.save_job(job)
        report: DataQualityReport | None = None
        try:
            job, report = self._run(tenant, job, source, given)
        except Exception as exc:  # a job ends failed with the reason, whatever broke it
            context = exc.context if isinstance(exc, QuantiVistaError) else {}
            job = job.model_copy(
                update={
                    "status": JobStatus.FAILED,
                    "end_time": self.clock.now(),
                    "error_details": [
                        {"kind": type(exc).__name__, "message": str(exc).strip(), **context}
                    ],
                }
            )
            self.catalog.save_job(job)
            if not isinstance(exc, QuantiVistaError | pl.exceptions.PolarsError):
                self._announce(source, job, report, (time.perf_counter() - started) * 1000)
                raise  # a bug, not bad data: recorded, announced, and not hidden
        self._announce(source, job, report, (time.perf_counter() - started) * 1000)
        return job

    def _run(
        self,
        tenant: str,
        job: IngestionJob,
        source: DataSource,
        given: Batch | None,
    ) -> tuple[IngestionJob, DataQualityReport]:
        now = self.clock.now()
        rules = [self.catalog.rule(tenant, r) for r in source.transformation_rules]
        inputs: list[dict[str, Any]] = []
        frames: list[pl.DataFrame] = []
        cursor: dict[str, Any] | None = None
        batches = iter([given]) if given is not None else self._batches(tenant, source)
        for batch in batches:
            n = batch.frame.height
            frames.append(
                batch.frame.with_columns(
                    pl.lit(batch.input_uri).alias(INPUT_COLUMN),
                    (pl.int_range(n, dtype=pl.Int64) + batch.offset_start).alias(OFFSET_COLUMN),
                )
            )
            inputs.append(
                {
                    "job_id": job.job_id,
                    "source_id": source.source_id,
                    "input_uri": batch.input_uri,
                    "sha256": batch.sha256,
                    "offset_start": batch.offset_start,
                    "offset_end": batch.offset_start + n,
                    "cursor": batch.cursor,
                    "rows": n,
                    "lake_table": source.target_table,
                }
            )
            cursor = batch.cursor or cursor
        # every batch of the job is one frame: rules and checks (`unique` too) see them all
        raw = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
        numbered = raw.lazy().with_row_index(ROW_COLUMN)
        numbered = numbered.with_columns(pl.col(ROW_COLUMN).cast(pl.Int64))
        reference = self.reference()
        # rules and checks are one lazy plan, run once; rejected rows keep their place
        # (flagged) until the end, where the lake and dead letters take their share
        plan = plan_rules(numbered, rules, reference)
        checks = plan_checks(plan.frame, source.quality_checks, reference)
        done = collect(checks.frame)
        rule_rejected = rule_rejects(done, plan)
        keep, check_rejected, report = judge(
            done, checks, job_id=job.job_id, now=now, prior_invalid=rule_rejected.height
        )
        rows, misplaced = shape(
            done,
            source.target_table,
            job_id=job.job_id,
            source_id=source.source_id,
            ingestion_date=now.date(),
            quality_score=report.quality_score,
            data_type=_CATEGORIES[source.target_table],
            keep=keep,
        )
        rejected = pl.concat([rule_rejected, check_rejected, misplaced])
        write = functools.partial(
            self.lake.write, source.target_table, rows.frame, tenant=tenant, job_id=job.job_id,
            columns=rows.columns, keep=KEEP_COLUMN,
        )  # fmt: skip
        if raw.height < _OVERLAP_ROWS or rejected.is_empty():
            write()
            failed = self._dead_letter(tenant, job, raw, rejected, now)
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                # the dead letters (a catalog transaction: mostly Python and the disk) are
                # kept while Polars encodes the lake files without the GIL
                letters = pool.submit(self._dead_letter, tenant, job, raw, rejected, now)
                write()
                failed = letters.result()
        lake_rows = report.valid_records - misplaced.height
        self.catalog.add_lineage(tenant, inputs, now)
        if cursor is not None and given is None:
            state = self.catalog.sync_state(tenant, source.source_id) or {}
            self.catalog.set_sync_state(tenant, source.source_id, state | {"cursor": cursor})
        if misplaced.height:
            report = report.model_copy(
                update={
                    "valid_records": lake_rows,
                    "invalid_records": report.invalid_records + misplaced.height,
                    "quality_score": lake_rows / report.total_records
                    if report.total_records
                    else 1.0,
                }
            )
        job = job.model_copy(
            update={
                "status": JobStatus.PARTIAL if failed else JobStatus.SUCCEEDED,
                "records_processed": lake_rows,
                "records_failed": failed,
                "records_filtered": filtered_count(done, plan),
                "end_time": self.clock.now(),
                "rule_versions": {r.rule_id: r.version for r in rules},
                "inputs": [{k: v for k, v in i.items() if k != "job_id"} for i in inputs],
            }
        )
        self.catalog.save_job(job, report)
        return job, report

    def _dead_letter(
        self,
        tenant: str,
        job: IngestionJob,
        raw: pl.DataFrame,
        rejected: pl.DataFrame,
        now: datetime,
    ) -> int:
        """Keep rejected rows as they were read (by input row number) with their reasons."""
        if rejected.is_empty():
            return 0
        # the rows as they were read: input row numbers are positions in `raw`
        numbered = rejected.filter(pl.col("row").is_not_null())
        originals = numbered.select("row").with_columns(
            encode_rows(raw, numbered.get_column("row")).alias("_orig")
        )
        records = (
            rejected.join(originals, on="row", how="left")
            .with_columns(pl.coalesce("_orig", "record").alias("record"))
            .select(REJECTED_SCHEMA.names())
        )
        return self.catalog.add_dead_letters(tenant, job.job_id, job.source_id, records, now)

    def replay(self, tenant: str, source_id: str, job_id: str | None = None) -> IngestionJob:
        """Send a source's held dead letters (of one job, or all) through its rules again."""
        held = self.catalog.dead_letters(tenant, job_id, source_id)
        if held.is_empty():
            raise NotFoundError("no dead letters to replay", source_id=source_id, job_id=job_id)
        frame = pl.from_dicts([json.loads(r) for r in held["record"]], infer_schema_length=None)
        job = self.new_job(tenant, source_id)
        done = self.run_job(tenant, job.job_id, given=Batch(frame, f"dead-letters:{source_id}"))
        if done.status is not JobStatus.FAILED:
            self.catalog.mark_replayed(tenant, held["id"].to_list(), done.job_id)
        return done

    def _announce(
        self,
        source: DataSource,
        job: IngestionJob,
        report: DataQualityReport | None,
        elapsed_ms: float,
    ) -> None:
        now = self.clock.now()
        self.bus.publish(
            DataIngestedEvent(
                occurred_at=now,
                timestamp=now,
                data_ingested=DataIngestedPayload(
                    job_id=job.job_id,
                    source_id=source.source_id,
                    source_type=source.source_type,
                    ingestion_mode=source.ingestion_mode,
                    records_processed=job.records_processed,
                    records_failed=job.records_failed,
                    quality_score=report.quality_score if report else 0.0,
                    processing_time_ms=elapsed_ms,
                    data_categories=[_CATEGORIES[source.target_table]],
                    tenant_id=job.tenant_id,
                ),
            )
        )

    # -- scheduling ----------------------------------------------------------------------------
    def scheduled_sources(self, tenant: str | None = None) -> list[DataSource]:
        """Return the enabled BATCH_SCHEDULED sources (of one tenant, or of every tenant)."""
        return [
            s
            for s in self.catalog.sources(tenant, include_disabled=False)
            if s.ingestion_mode is IngestionMode.BATCH_SCHEDULED and s.schedule
        ]

    def due_sources(self, now: datetime) -> list[tuple[str, str, datetime]]:
        """Return (tenant, source_id, fire time) of scheduled sources due at `now`.

        A source is due when its cron schedule fired after its last scheduled run (and, for
        a new source, after it was created).
        """
        from croniter import croniter

        due = []
        for source in self.scheduled_sources():
            assert source.schedule is not None
            fired: datetime = croniter(source.schedule, now).get_prev(datetime)
            state = self.catalog.sync_state(source.tenant_id, source.source_id) or {}
            last = state.get("last_fire")
            since = datetime.fromisoformat(last) if last else source.created_at
            if since is None or fired > since:
                due.append((source.tenant_id, source.source_id, fired))
        return due

    def run_due(self, now: datetime) -> list[IngestionJob]:
        """Run every due scheduled source once; return their jobs.

        Call it from one scheduler at a time (the scheduler service holds the lease).
        """
        jobs = []
        for tenant, source_id, fired in self.due_sources(now):
            state = self.catalog.sync_state(tenant, source_id) or {}
            self.catalog.set_sync_state(tenant, source_id, state | {"last_fire": fired.isoformat()})
            jobs.append(self.sync(tenant, source_id))
        return jobs

    def lake_rows(self, tenant: str, table: str) -> pl.DataFrame:
        """Return a tenant's rows of one lake table."""
        return self.lake.read(table, tenant)
