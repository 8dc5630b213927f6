"""Quality: quarantine, scores per symbol-day, job reports."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from quantivista.errors import NotFoundError
from quantivista.model.jobs import DataQualityReport
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.services.queries import symbol_list
from quantivista.storage.contracts import JobCatalog, QuarantineStore, ScoreStore

__all__ = ["QualityService"]


class QualityService:
    """Read what validation found: held rows, scores and reports."""

    def __init__(
        self, quarantine: QuarantineStore, scores: ScoreStore, catalog: JobCatalog
    ) -> None:
        self.quarantine_store = quarantine
        self.score_store = scores
        self.catalog = catalog

    def quarantine(
        self,
        symbols: str | Sequence[str] | None = None,
        job_id: str | None = None,
        *,
        rule: str | None = None,
        include_released: bool = False,
    ) -> pl.DataFrame:
        """Return rejected rows with their rule, severity and reason (held rows by default)."""
        syms = None if symbols is None else symbol_list(symbols)
        return self.quarantine_store.list(syms, job_id, rule, include_released=include_released)

    def quarantined(self) -> int:
        """Return how many rows are held in quarantine."""
        return self.quarantine_store.count()

    def scores(
        self,
        symbols: str | Sequence[str] | None = None,
        job_id: str | None = None,
        timeframe: TimeframeLike | None = "1d",
    ) -> pl.DataFrame:
        """Return scores per (symbol, session date): of one job, or the latest per day."""
        syms = None if symbols is None else symbol_list(symbols)
        tf = None if timeframe is None else str(Timeframe.parse(timeframe))
        if job_id is not None:
            return self.score_store.read(syms, job_id, tf)
        return self.score_store.daily(syms, tf)

    def report(self, job_id: str) -> DataQualityReport:
        """Return the quality report of a job (its batch reports merged)."""
        reports = self.catalog.reports(job_id, limit=100_000)
        if not reports:
            raise NotFoundError("no quality report for this job", job_id=job_id)
        return DataQualityReport.merge(job_id, list(reversed(reports)))
