"""`Platform`: the public Python API, a thin facade over the runtime's services."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from quantivista.actions.adjust import Adjust, DividendConvention
from quantivista.actions.reconcile import ReconcileReport
from quantivista.clock import Clock
from quantivista.closing import Closing
from quantivista.config import Settings
from quantivista.model.jobs import DataQualityReport, IngestionJob
from quantivista.model.schema import FrameLike
from quantivista.model.timeframe import TimeframeLike
from quantivista.pipeline.stages import Progress
from quantivista.providers.base import Provider
from quantivista.providers.registry import ProviderRegistry
from quantivista.reference.calendars import TradingCalendar
from quantivista.reference.instruments import InstrumentMaster
from quantivista.runtime import Runtime
from quantivista.services.queries import BarQuery
from quantivista.timeutil import DateLike

__all__ = ["Platform"]

Symbols = str | Sequence[str]


class Platform(Closing):
    """One QuantiVista instance: the embedded store in a data directory, or shared engines.

    **Usage:**

        import quantivista as qv
        p = qv.Platform.open("./data")
        job = p.ingest(["ARDENR"], start="2020-01-01", end="2024-12-31")
        df = p.bars("ARDENR", start="2024-01-01")

    Every method delegates to a use-case service of `p.runtime`, as the CLI and API do.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        registry: ProviderRegistry | None = None,
    ) -> None:
        self.runtime = Runtime(settings, clock=clock, registry=registry)
        self.settings = settings
        self.clock = self.runtime.clock
        self.root = settings.data_dir

    @classmethod
    def open(
        cls, path: str | Path | None = None, *, clock: Clock | None = None, **overrides: Any
    ) -> Platform:
        """Open (or create) an embedded platform in `path` with default settings."""
        settings = Settings(**overrides)
        if path is not None:
            settings = settings.with_data_dir(path)
        return cls(settings, clock=clock)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        registry: ProviderRegistry | None = None,
    ) -> Platform:
        """Build a platform from explicit settings."""
        return cls(settings, clock=clock, registry=registry)

    def close(self) -> None:
        """Release providers, connections and file handles."""
        self.runtime.close()

    def __repr__(self) -> str:
        return f"Platform({str(self.root)!r}, backend={self.runtime.backend.kind!r})"

    # -- parts -----------------------------------------------------------------------------
    @property
    def instruments(self) -> InstrumentMaster:
        """Return the instrument master (identifiers, ticker history, point-in-time lookups)."""
        return self.runtime.reference.instruments

    def calendar(self, mic: str | None = None) -> TradingCalendar:
        """Return the trading calendar of an exchange (default: the ingest calendar)."""
        return self.runtime.calendar(mic)

    def provider(self, name: str) -> Provider:
        """Return the (cached) provider instance registered as `name`."""
        return self.runtime.acquisition.provider(name)

    # -- ingestion and writes --------------------------------------------------------------
    def ingest(
        self,
        symbols: Symbols,
        start: DateLike,
        end: DateLike,
        timeframe: TimeframeLike = "1d",
        providers: Sequence[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> IngestionJob:
        """Pull bars from providers, validate and store them; return the finished job.

        `end` is inclusive (a date includes that whole day). Providers are tried in order
        per symbol, failing over on errors. The job runs as tasks under leases.
        """
        return self.runtime.ingestion.ingest(
            symbols, start, end, timeframe, providers, progress=progress
        )

    def write_bars(
        self, frame: FrameLike, source: str = "user", timeframe: TimeframeLike | None = None
    ) -> DataQualityReport:
        """Validate and store bars in the canonical schema; return the quality report.

        Rows failing validation go to quarantine with their reason; a frame that does not
        fit the schema raises `SchemaError` and stores nothing.
        """
        return self.runtime.writes.write_bars(frame, source, timeframe)

    def write_actions(self, frame: FrameLike, provider: str | None = None) -> int:
        """Store corporate actions (canonical action schema); return how many were new."""
        return self.runtime.writes.write_actions(frame, provider)

    def ingest_actions(
        self,
        sources: Mapping[str, FrameLike] | Sequence[FrameLike],
        *,
        priority: Sequence[str] | None = None,
        date_tolerance_days: int = 3,
        value_tolerance: float = 1e-3,
    ) -> ReconcileReport:
        """Reconcile actions from several sources, store the new events, report conflicts."""
        return self.runtime.writes.ingest_actions(
            sources,
            priority=priority,
            date_tolerance_days=date_tolerance_days,
            value_tolerance=value_tolerance,
        )

    def release_quarantine(
        self,
        job_id: str | None = None,
        symbols: Symbols | None = None,
        rule: str | None = None,
        *,
        corrected: FrameLike | None = None,
        demote: Sequence[str] = (),
    ) -> DataQualityReport:
        """Send held quarantine rows back through the write path; return its quality report."""
        return self.runtime.writes.release_quarantine(
            job_id, symbols, rule, corrected=corrected, demote=demote
        )

    # -- reads -----------------------------------------------------------------------------
    def bars(
        self,
        symbols: Symbols,
        start: DateLike | None = None,
        end: DateLike | None = None,
        timeframe: TimeframeLike = "1d",
        *,
        columns: Sequence[str] | None = None,
        adjust: Adjust = "none",
        dividend_convention: DividendConvention = "crsp",
        as_of: DateLike | None = None,
        follow_renames: bool = True,
        published: DateLike | None = None,
        session: str = "regular",
    ) -> pl.DataFrame:
        """Return stored bars in the canonical schema, sorted by symbol and ts.

        `start`/`end` are inclusive; `adjust` "none", "splits" or "all"; `dividend_convention`
        "crsp" (Yahoo/Lean) or "alpha_vantage". `as_of` (an instant) is knowledge time: the
        bars as the store knew them then. `published` (a day): today's bars adjusted and named
        as shown that day. Renamed tickers read as one series unless `follow_renames=False`.
        Intraday reads hold the regular session; `session="extended"` adds the pre/post-market
        bars (flagged `outside_session`).
        """
        query = BarQuery.of(
            symbols, start, end, timeframe, columns=columns, adjust=adjust,
            dividend_convention=dividend_convention, known_at=as_of,
            effective_on=published, follow_renames=follow_renames, session=session,
        )  # fmt: skip
        return self.runtime.queries.bars(query)

    def actions(self, symbols: Symbols | None = None) -> pl.DataFrame:
        """Return stored corporate actions (of some symbols, or all) by ex-date."""
        return self.runtime.queries.actions(symbols)

    def quarantine(
        self,
        symbols: Symbols | None = None,
        job_id: str | None = None,
        *,
        rule: str | None = None,
        include_released: bool = False,
    ) -> pl.DataFrame:
        """Return rejected rows with their rule, severity and reason (held rows by default)."""
        return self.runtime.quality.quarantine(
            symbols, job_id, rule=rule, include_released=include_released
        )

    def jobs(self, limit: int = 50) -> list[IngestionJob]:
        """Return recent ingestion jobs, newest first."""
        return self.runtime.ingestion.jobs(limit)

    def job(self, job_id: str) -> IngestionJob:
        """Return one ingestion job by id."""
        return self.runtime.ingestion.job(job_id)

    def status(self) -> pl.DataFrame:
        """Return what the store holds: rows, time span and bytes per (timeframe, symbol)."""
        return self.runtime.queries.status()

    def quality_scores(
        self,
        symbols: Symbols | None = None,
        job_id: str | None = None,
        timeframe: TimeframeLike | None = "1d",
    ) -> pl.DataFrame:
        """Return quality scores per (symbol, session date): of one job, or the latest per day."""
        return self.runtime.quality.scores(symbols, job_id, timeframe)

    def quality_report(self, job_id: str) -> DataQualityReport:
        """Return the quality report of a job (its batch reports merged)."""
        return self.runtime.quality.report(job_id)

    def freshness(
        self, symbols: Symbols | None = None, timeframe: TimeframeLike = "1d", max_behind: int = 0
    ) -> pl.DataFrame:
        """Return per stored symbol its latest bar, the bar the calendar expects now, the lag."""
        return self.runtime.queries.freshness(symbols, timeframe, max_behind)
