"""`Platform`: the public entry point tying providers, quality, storage and the bus together."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import polars as pl

from quantivista.acquisition.analytics import ProviderAnalytics
from quantivista.acquisition.breaker import Breakers
from quantivista.acquisition.cache import ResponseCache
from quantivista.acquisition.health import HealthMonitor
from quantivista.acquisition.limits import RateLimiter
from quantivista.acquisition.retry import RetryPolicy
from quantivista.acquisition.router import Router
from quantivista.actions.adjust import Adjust, DividendConvention
from quantivista.actions.reconcile import ReconcileReport, ingest_actions
from quantivista.actions.view import AdjustedReader
from quantivista.bus.events import ActionsIngested
from quantivista.bus.memory import InMemoryBus
from quantivista.clock import Clock, SystemClock
from quantivista.config import Settings
from quantivista.errors import InvalidInputError, NotFoundError
from quantivista.model.jobs import DataQualityReport, IngestionJob
from quantivista.model.schema import BAR_COLUMNS, FrameLike, coerce_actions, coerce_bars
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.pipeline.ingest import Ingestor, Progress, new_job_id
from quantivista.pipeline.writer import BarWriter
from quantivista.processing.rollup import Rollup
from quantivista.providers.base import Provider, request_range
from quantivista.providers.registry import ProviderRegistry, default_registry
from quantivista.quality.business import load_rules
from quantivista.quality.freshness import freshness
from quantivista.quality.rules import DEFAULT_RULES, Rule
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar, get_calendar
from quantivista.reference.instruments import InstrumentMaster
from quantivista.storage import open_backend
from quantivista.timeutil import DateLike, to_utc

__all__ = ["PROVIDER_STATS_FILE", "Platform"]

PROVIDER_STATS_FILE = "provider-stats.json"

Symbols = str | Sequence[str]


def _symbol_list(symbols: Symbols) -> list[str]:
    items = [symbols] if isinstance(symbols, str) else list(symbols)
    cleaned = [s.strip() for s in items if s and s.strip()]
    if not cleaned:
        raise InvalidInputError("no symbols given")
    return list(dict.fromkeys(cleaned))


class Platform:
    """One embedded QuantiVista instance rooted at a data directory.

    **Usage:**

        import quantivista as qv
        p = qv.Platform.open("./data")
        job = p.ingest(["ARDENR"], start="2020-01-01", end="2024-12-31")
        df = p.bars("ARDENR", start="2024-01-01")
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        registry: ProviderRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.registry = registry or default_registry
        root = settings.data_dir
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.backend = open_backend(settings)
        self.store = self.backend.bars
        self.quarantine_store = self.backend.quarantine
        self.score_store = self.backend.scores
        self.action_store = self.backend.actions
        self.bronze = self.backend.raw
        self.catalog = self.backend.catalog
        self.bus = InMemoryBus(dead_letters=self._dead_letter)
        # resilience around provider calls: one of each per platform, shared by its routers
        res = settings.resilience
        self.limiter = RateLimiter.from_settings(
            res, self.clock, redis_url=settings.services.redis_url
        )
        self.breakers = Breakers.from_settings(res.breaker, self.clock)
        self.analytics = ProviderAnalytics(limiter=self.limiter, breakers=self.breakers)
        self.health = HealthMonitor()
        self.response_cache = ResponseCache.from_settings(res.cache) if res.cache.enabled else None
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()
        self._writer: BarWriter | None = None
        self.reader = AdjustedReader(self.store, self.action_store)
        self.instruments = InstrumentMaster(self.backend.instruments)
        self.bus.subscribe("bars.ingested", self.reader.invalidate, name="adjusted-cache")
        self.bus.subscribe("actions.ingested", self.reader.invalidate, name="adjusted-cache")

    # -- construction ----------------------------------------------------------------------
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
        """Release providers and the catalog connection."""
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()
        self.limiter.close()
        self.backend.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Platform({str(self.root)!r})"

    # -- parts -----------------------------------------------------------------------------
    def calendar(self, mic: str | None = None) -> TradingCalendar:
        """Return the trading calendar of an exchange (default: the ingest calendar)."""
        return get_calendar(mic or self.settings.ingest.calendar)

    def provider(self, name: str) -> Provider:
        """Return the (cached) provider instance registered as `name`."""
        key = name.lower()
        with self._lock:
            if key not in self._providers:
                provider = self.registry.create(key, self.settings, self.clock)
                if hasattr(provider, "gate") and provider.gate is None:
                    provider.gate = self.limiter  # HTTP clients pass every request through it
                self._providers[key] = provider
            return self._providers[key]

    def router(
        self, names: Sequence[str], *, ordering: Literal["auto", "given"] = "auto"
    ) -> Router:
        """Return a router over the named providers with this platform's resilience parts.

        Limits, breakers, cache, health and analytics are shared by every router it builds.
        """
        return Router(
            [self.provider(n) for n in names],
            limiter=self.limiter,
            breakers=self.breakers,
            retry=RetryPolicy.from_settings(self.settings.resilience.retry),
            cache=self.response_cache,
            analytics=self.analytics,
            health=self.health,
            clock=self.clock,
            ordering=ordering,
        )

    @property
    def writer(self) -> BarWriter:
        """Return the write path (built on first use: loading the calendar takes a moment)."""
        if self._writer is None:
            validator = Validator(self.calendar(), _rules(self.settings), self.settings.quality)
            targets = self.settings.storage.rollups
            rollup = Rollup(self.store, self.calendar(), targets) if targets else None
            self._writer = BarWriter(
                self.store, self.quarantine_store, self.catalog, self.bus, validator, self.clock,
                rollup=rollup, actions=self.action_store, scores=self.score_store,
            )  # fmt: skip
        return self._writer

    def _dead_letter(
        self, topic: str, payload: dict[str, Any], error: str, handler: str | None
    ) -> None:
        self.catalog.add_dead_letter(topic, payload, error, handler, self.clock.now())

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

        `end` is inclusive (a date includes that whole day). Providers are tried in the
        given order per symbol, failing over on errors; the default is the configured one.
        Calls go through the platform's rate limits, breakers, retries and response cache
        (`settings.resilience`; `ordering="auto"` there ranks providers by cost and health).
        """
        names = list(providers) if providers else [self.settings.ingest.default_provider]
        router = self.router(names, ordering=self.settings.resilience.ordering)
        lo, hi = request_range(start, end)
        ingestor = Ingestor(
            self.writer,
            self.action_store,
            self.bronze,
            self.catalog,
            self.bus,
            self.clock,
            symbols_per_batch=self.settings.ingest.symbols_per_batch,
            fetch_concurrency=self.settings.ingest.fetch_concurrency,
        )
        try:
            return ingestor.run(
                router, _symbol_list(symbols), lo, hi, Timeframe.parse(timeframe), progress=progress
            )
        finally:  # `qv providers` shows the last stats from another process
            self.analytics.save(self.root / PROVIDER_STATS_FILE)

    def write_bars(
        self, frame: FrameLike, source: str = "user", timeframe: TimeframeLike | None = None
    ) -> DataQualityReport:
        """Validate and store bars in the canonical schema; return the quality report.

        Rows that fail validation are quarantined with their reason (see `quarantine()`).
        A frame that does not fit the schema raises `SchemaError` and stores nothing.
        """
        job_id = new_job_id(self.clock.now())
        return self.writer.write(frame, source=source, job_id=job_id, timeframe=timeframe).report

    def write_actions(self, frame: FrameLike, provider: str | None = None) -> int:
        """Store corporate actions (canonical action schema); return how many were new."""
        actions = coerce_actions(frame, provider=provider)
        fresh = self.action_store.upsert(actions)
        if fresh.height:
            self.bus.publish(
                ActionsIngested(
                    occurred_at=self.clock.now(),
                    source=provider or "user",
                    symbols=sorted(fresh["symbol"].unique().to_list()),
                    rows=fresh.height,
                )
            )
        return fresh.height

    def ingest_actions(
        self,
        sources: Mapping[str, FrameLike] | Sequence[FrameLike],
        *,
        priority: Sequence[str] | None = None,
        date_tolerance_days: int = 3,
        value_tolerance: float = 1e-3,
    ) -> ReconcileReport:
        """Reconcile actions from several sources, store the new events, report conflicts.

        Publishes `ActionsIngested` only when some events were new (see actions/reconcile.py).
        """
        return ingest_actions(
            self.action_store,
            self.bus,
            self.clock,
            sources,
            priority=priority,
            date_tolerance_days=date_tolerance_days,
            value_tolerance=value_tolerance,
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
    ) -> pl.DataFrame:
        """Return stored bars in the canonical schema, sorted by symbol and ts.

        `start` and `end` are inclusive; either may be omitted for an open range.
        `adjust` is "none" (raw prices), "splits" or "all" (splits and cash dividends);
        `dividend_convention` "crsp" (Yahoo Adj Close / Lean: 1 - D/C_prev) or
        "alpha_vantage" (C_e/(C_e + D)).

        `as_of` (an instant; a date means its midnight UTC) is knowledge time: the bars
        exactly as the store knew them then (later corrections, inserts and deletes are not
        visible), adjusted with the actions whose ex-date had come by then. `published`
        (a date) asks only for the second part: today's bars, adjusted and named as they
        would have been shown on that day (actions up to it; a recycled ticker means its
        user then). A ticker names the instrument using it today (or on that day): renamed
        by symbol_change actions (FB -> META), its history reads as one series under the
        requested ticker unless `follow_renames` is False.
        """
        lo = request_range(start, start)[0] if start is not None else None
        hi = request_range(end, end)[1] if end is not None else None
        known = to_utc(as_of) if as_of is not None else None
        return self.reader.read(
            _symbol_list(symbols),
            Timeframe.parse(timeframe),
            lo,
            hi,
            columns,
            adjust=adjust,
            dividend_convention=dividend_convention,
            as_of=published if published is not None else as_of,
            follow_renames=follow_renames,
            known=known,
        )

    def actions(self, symbols: Symbols | None = None) -> pl.DataFrame:
        """Return stored corporate actions (of some symbols, or all) by ex-date."""
        return self.action_store.for_symbols(None if symbols is None else _symbol_list(symbols))

    def quarantine(
        self,
        symbols: Symbols | None = None,
        job_id: str | None = None,
        *,
        rule: str | None = None,
        include_released: bool = False,
    ) -> pl.DataFrame:
        """Return rejected rows with their rule, severity and reason (held rows by default)."""
        syms = None if symbols is None else _symbol_list(symbols)
        return self.quarantine_store.list(syms, job_id, rule, include_released=include_released)

    def jobs(self, limit: int = 50) -> list[IngestionJob]:
        """Return recent ingestion jobs, newest first."""
        return self.catalog.jobs(limit)

    def job(self, job_id: str) -> IngestionJob:
        """Return one ingestion job by id."""
        return self.catalog.job(job_id)

    def status(self) -> pl.DataFrame:
        """Return what the store holds: rows, time span and bytes per (timeframe, symbol)."""
        return self.store.stats()

    # -- issue 4: quality ------------------------------------------------------------------
    def quality_scores(
        self,
        symbols: Symbols | None = None,
        job_id: str | None = None,
        timeframe: TimeframeLike | None = "1d",
    ) -> pl.DataFrame:
        """Return quality scores per (symbol, session date): of one job, or the latest per day.

        `timeframe=None` returns every timeframe.
        """
        syms = None if symbols is None else _symbol_list(symbols)
        tf = None if timeframe is None else str(Timeframe.parse(timeframe))
        if job_id is not None:
            return self.score_store.read(syms, job_id, tf)
        return self.score_store.daily(syms, tf)

    def quality_report(self, job_id: str) -> DataQualityReport:
        """Return the quality report of a job (its batch reports merged)."""
        reports = self.catalog.reports(job_id, limit=100_000)
        if not reports:
            raise NotFoundError("no quality report for this job", job_id=job_id)
        return DataQualityReport.merge(job_id, list(reversed(reports)))

    def freshness(
        self, symbols: Symbols | None = None, timeframe: TimeframeLike = "1d", max_behind: int = 0
    ) -> pl.DataFrame:
        """Return per stored symbol its latest bar, the bar the calendar expects now, the lag."""
        tf = str(Timeframe.parse(timeframe))
        stats = self.store.stats().filter(pl.col("timeframe") == tf)
        if symbols is not None:
            stats = stats.filter(pl.col("symbol").is_in(_symbol_list(symbols)))
        latest = stats.select("symbol", ts="last_ts")
        return freshness(latest, self.calendar(), self.clock.now(), tf, max_behind)

    def release_quarantine(
        self,
        job_id: str | None = None,
        symbols: Symbols | None = None,
        rule: str | None = None,
        *,
        corrected: FrameLike | None = None,
        demote: Sequence[str] = (),
    ) -> DataQualityReport:
        """Send held quarantine rows back through the write path; return its quality report.

        Rows are chosen by job, symbols and/or rule. `corrected` (bars in the canonical
        schema, keyed by symbol, timeframe, ts) replaces the matching rows' values;
        `demote` names rules that only flag these rows this time (after fixing a rule).
        Rows that still fail go back to quarantine under the release job. Released rows
        stay in quarantine, marked released (see `quarantine(include_released=True)`).
        """
        syms = None if symbols is None else _symbol_list(symbols)
        held = self.quarantine_store.list(syms, job_id, rule)
        if held.is_empty():
            raise NotFoundError("no held quarantine rows match", job_id=job_id, rule=rule)
        release_job = new_job_id(self.clock.now())
        frame = held.select(BAR_COLUMNS).with_columns(
            quality_flags=pl.lit(0, pl.UInt32),
            ingested_at=pl.lit(None, held.schema["ingested_at"]),
            job_id=pl.lit(release_job),
        )
        frame = frame.unique(list(BAR_COLUMNS), keep="first", maintain_order=True)
        if corrected is not None:
            fixed = coerce_bars(corrected, job_id=release_job)
            key = ["symbol", "timeframe", "ts"]
            stray = fixed.join(frame, on=key, how="anti")
            if stray.height:
                raise InvalidInputError(
                    "corrected rows must match held quarantine rows by symbol, timeframe, ts",
                    unmatched=stray.height,
                )
            fixed = fixed.with_columns(
                pl.col("provider").fill_null(pl.lit("user")),
                ingested_at=pl.lit(None, held.schema["ingested_at"]),
            )
            frame = pl.concat([frame.join(fixed, on=key, how="anti"), fixed.select(frame.columns)])
        writer = self.writer
        validator = writer.validator.demoted(demote) if demote else None
        outcome = writer.write(frame, source="quarantine", job_id=release_job, validator=validator)
        self.quarantine_store.mark_released(held, release_job_id=release_job, at=self.clock.now())
        return outcome.report


def _rules(settings: Settings) -> tuple[Rule, ...]:
    """Return the default rules plus the business rules of the configured TOML file."""
    path = settings.quality.rules_file
    return DEFAULT_RULES if path is None else DEFAULT_RULES + load_rules(path)
