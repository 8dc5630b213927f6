"""Ingestion jobs: fetch from providers, write through the write path, record the job."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

import polars as pl

from quantivista.acquisition.router import Router
from quantivista.bus.base import EventBus
from quantivista.bus.events import ActionsIngested
from quantivista.clock import Clock
from quantivista.errors import ProviderError, QuantiVistaError
from quantivista.model.jobs import DataQualityReport, IngestionJob, JobStatus
from quantivista.model.timeframe import Timeframe
from quantivista.pipeline.writer import BarWriter
from quantivista.providers.base import BarRequest, FetchResult
from quantivista.storage.contracts import ActionStore, JobCatalog, RawStore

__all__ = ["Ingestor", "Progress", "new_job_id"]

Progress = Callable[[str, int, int], None]
"""Called as progress(symbol, done, total) after each symbol is fetched."""


def new_job_id(now: datetime) -> str:
    """Return a job id that sorts by start time: `job-20240102T143000-1a2b3c4d`."""
    return f"job-{now:%Y%m%dT%H%M%S}-{uuid4().hex[:8]}"


@dataclass(slots=True)
class _Fetched:
    symbol: str
    result: FetchResult | None
    error: QuantiVistaError | None


class Ingestor:
    """Run ingestion jobs: batches of symbols fetched concurrently, written batch by batch."""

    def __init__(
        self,
        writer: BarWriter,
        actions: ActionStore,
        bronze: RawStore,
        catalog: JobCatalog,
        bus: EventBus,
        clock: Clock,
        *,
        symbols_per_batch: int = 100,
        fetch_concurrency: int = 4,
    ) -> None:
        self.writer = writer
        self.actions = actions
        self.bronze = bronze
        self.catalog = catalog
        self.bus = bus
        self.clock = clock
        self.symbols_per_batch = symbols_per_batch
        self.fetch_concurrency = fetch_concurrency

    def run(
        self,
        router: Router,
        symbols: Sequence[str],
        start: datetime,
        end: datetime,
        timeframe: Timeframe,
        *,
        progress: Progress | None = None,
    ) -> IngestionJob:
        """Ingest `symbols` over `[start, end)`; return the finished job with its report."""
        if not symbols:
            raise QuantiVistaError("nothing to ingest: no symbols given")
        now = self.clock.now()
        names = [p.name for p in router.providers]
        job = IngestionJob(
            job_id=new_job_id(now),
            source_id=",".join(names),
            status=JobStatus.RUNNING,
            start_time=now,
            symbols=list(symbols),
            timeframe=str(timeframe),
            request_start=start,
            request_end=end,
        )
        self.catalog.save_job(job)
        reports: list[DataQualityReport] = []
        done, failed_symbols = 0, 0
        try:
            for lo in range(0, len(symbols), self.symbols_per_batch):
                batch = list(symbols[lo : lo + self.symbols_per_batch])
                fetched = self._fetch_batch(router, batch, start, end, timeframe)
                frames: list[pl.DataFrame] = []
                for item in fetched:
                    done += 1
                    if progress is not None:
                        progress(item.symbol, done, len(symbols))
                    if item.error is not None:
                        failed_symbols += 1
                        job.error_details.append(_error_detail(item.symbol, item.error))
                        continue
                    assert item.result is not None
                    self._keep_side_data(job, item.symbol, item.result)
                    if item.result.bars.is_empty():
                        job.error_details.append(
                            {
                                "symbol": item.symbol,
                                "kind": "no_data",
                                "message": "provider returned no bars",
                            }
                        )
                    else:
                        frames.append(item.result.bars)
                if frames:
                    batch_bars = pl.concat(frames, how="vertical_relaxed")
                    outcome = self.writer.write(
                        batch_bars, source=job.source_id, job_id=job.job_id, timeframe=timeframe
                    )
                    reports.append(outcome.report)
                    job.records_processed += outcome.report.total_records
                    job.records_failed += outcome.report.invalid_records
        except Exception as exc:
            job.status = JobStatus.FAILED
            job.error_details.append({"kind": type(exc).__name__, "message": str(exc)})
            job.end_time = self.clock.now()
            self.catalog.save_job(job)
            raise
        job.quality = DataQualityReport.merge(job.job_id, reports)
        job.end_time = self.clock.now()
        if failed_symbols == len(symbols):
            job.status = JobStatus.FAILED
        elif failed_symbols or job.records_failed:
            job.status = JobStatus.PARTIAL
        else:
            job.status = JobStatus.SUCCEEDED
        self.catalog.save_job(job)
        return job

    def _fetch_batch(
        self, router: Router, batch: list[str], start: datetime, end: datetime, timeframe: Timeframe
    ) -> list[_Fetched]:
        def one(symbol: str) -> _Fetched:
            try:
                return _Fetched(
                    symbol, router.fetch(BarRequest(symbol, timeframe, start, end)), None
                )
            except QuantiVistaError as exc:  # recorded on the job; other errors propagate
                return _Fetched(symbol, None, exc)

        if self.fetch_concurrency <= 1 or len(batch) == 1:
            return [one(s) for s in batch]
        with ThreadPoolExecutor(self.fetch_concurrency, thread_name_prefix="qv-fetch") as pool:
            return list(pool.map(one, batch))

    def _keep_side_data(self, job: IngestionJob, symbol: str, result: FetchResult) -> None:
        if result.raw:
            self.bronze.save(job.job_id, result.raw)
        if not result.actions.is_empty():
            fresh = self.actions.upsert(result.actions)
            if fresh.height:
                self.bus.publish(
                    ActionsIngested(
                        occurred_at=self.clock.now(),
                        source=result.provider or job.source_id,
                        symbols=sorted(fresh["symbol"].unique().to_list()),
                        rows=fresh.height,
                    )
                )


def _error_detail(symbol: str, error: QuantiVistaError) -> dict[str, object]:
    detail: dict[str, object] = {
        "symbol": symbol,
        "kind": type(error).__name__,
        "message": error.message,
        "retryable": error.is_retryable(),
    }
    if isinstance(error, ProviderError) and error.provider:
        detail["provider"] = error.provider
    if "attempts" in error.context:
        detail["attempts"] = error.context["attempts"]
    return detail
