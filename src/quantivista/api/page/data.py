"""What the status page shows, gathered from the runtime for one signed-in caller.

The caller sees what the REST API would show it: its tenant's jobs (the platform's own jobs
with the admin scope only), quarantine rows and quality scores of those jobs, and only the
symbols and timeframes its tenant is entitled to.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, cast

import polars as pl

from quantivista.actions.adjust import Adjust
from quantivista.api.deps import Caller
from quantivista.api.routes.operations import _visible
from quantivista.errors import PermissionDeniedError, QuantiVistaError
from quantivista.model.auth import Tenant
from quantivista.model.jobs import IngestionJob, JobStatus
from quantivista.model.timeframe import Timeframe
from quantivista.runtime import Runtime
from quantivista.services.queries import BarQuery, status_by_timeframe

__all__ = [
    "Chart",
    "ChartRequest",
    "StatusView",
    "daily_quality",
    "entitled_symbols",
    "gather",
    "provider_frame",
]

JOBS_SHOWN = 15
QUARANTINE_SHOWN = 20
QUALITY_WEEKS = 13  # a quarter of sessions
MAX_CANDLES = 400
DAYS_RANGE = (5, 3650)
ADJUST_MODES: tuple[Adjust, ...] = ("none", "splits", "all")


def entitled_symbols(tenant: Tenant, symbols: list[str]) -> list[str]:
    """Return the symbols (of a short, distinct list) the tenant may read."""
    if tenant.symbols is None:
        return symbols
    patterns = tenant.symbols
    return [s for s in symbols if any(fnmatchcase(s, p) for p in patterns)]


def _entitled(df: pl.DataFrame, tenant: Tenant) -> pl.DataFrame:
    """Keep the rows of symbols (and timeframes) the tenant may read."""
    if tenant.timeframes is not None and "timeframe" in df.columns:
        df = df.filter(pl.col("timeframe").is_in(tenant.timeframes))
    if tenant.symbols is None:
        return df
    allowed = entitled_symbols(tenant, df["symbol"].unique().to_list())
    return df.filter(pl.col("symbol").is_in(allowed))


@dataclass(frozen=True)
class ChartRequest:
    """The chart the page was asked for; lenient parsing, problems are shown, not raised."""

    symbol: str | None = None
    timeframe: str = "1d"
    adjust: Adjust = "none"
    days: int = 120
    problem: str | None = None

    @classmethod
    def parse(
        cls, symbol: str | None, timeframe: str | None, adjust: str | None, days: str | None
    ) -> ChartRequest:
        """Build a request from query parameters; a bad value falls back to its default."""
        problems = []
        tf = (timeframe or "1d").strip()
        try:
            tf = str(Timeframe.parse(tf))
        except (QuantiVistaError, ValueError):
            problems.append(f"unknown timeframe {tf!r}, showing 1d")
            tf = "1d"
        mode = (adjust or "none").strip()
        if mode not in ADJUST_MODES:
            problems.append(f"adjust must be none, splits or all (not {mode!r})")
            mode = "none"
        span = 120
        if days:
            try:
                span = min(max(int(days), DAYS_RANGE[0]), DAYS_RANGE[1])
            except ValueError:
                problems.append(f"days must be a whole number (not {days!r})")
        name = (symbol or "").strip()[:64] or None
        return cls(name, tf, cast(Adjust, mode), span, "; ".join(problems) or None)


@dataclass(frozen=True)
class Chart:
    """Bars to draw for one request, or why there are none."""

    request: ChartRequest
    bars: pl.DataFrame
    splits: pl.DataFrame
    total: int  # bars in the range; only the last MAX_CANDLES are drawn
    message: str | None = None


def _empty_chart(request: ChartRequest, message: str | None) -> Chart:
    return Chart(request, pl.DataFrame(), pl.DataFrame(), 0, message)


def load_chart(runtime: Runtime, who: Caller, request: ChartRequest, stats: pl.DataFrame) -> Chart:
    """Read the bars of the request: the `days` before the symbol's last stored bar."""
    symbol = request.symbol
    if symbol is None:
        return _empty_chart(request, None)
    try:
        runtime.auth.entitled(
            who.tenant, dataset="bars", symbols=[symbol], timeframe=request.timeframe
        )
    except PermissionDeniedError as exc:
        return _empty_chart(request, exc.message)
    stored = stats.filter((pl.col("symbol") == symbol) & (pl.col("timeframe") == request.timeframe))
    if stored.height == 0:
        return _empty_chart(request, f"no {request.timeframe} bars stored for {symbol}")
    last: datetime = stored["last_ts"].max()  # type: ignore[assignment]
    query = BarQuery.of(
        [symbol], last - timedelta(days=request.days), last, request.timeframe,
        adjust=request.adjust,
    )  # fmt: skip
    bars = runtime.queries.bars(query).sort("ts")  # one symbol (its renamed past included)
    if bars.height == 0:
        return _empty_chart(request, f"no {request.timeframe} bars of {symbol} in the range")
    actions = runtime.queries.actions([symbol])
    first_day, last_day = bars["ts"].dt.date().min(), bars["ts"].dt.date().max()
    splits = actions.filter(
        (pl.col("action_type") == "split")
        & pl.col("ex_date").is_between(first_day, last_day)
        & pl.col("ratio").is_not_null()
    ).select("ex_date", "ratio")
    return Chart(request, bars.tail(MAX_CANDLES), splits, bars.height)


def daily_quality(scores: pl.DataFrame, weeks: int = QUALITY_WEEKS) -> pl.DataFrame:
    """Return date, mean score and symbols scored per day over the `weeks` up to the last day."""
    if scores.height == 0:
        return pl.DataFrame(schema={"date": pl.Date, "score": pl.Float64, "symbols": pl.UInt32})
    last = scores["date"].max()
    assert last is not None
    return (
        scores.filter(pl.col("date") > pl.lit(last) - timedelta(weeks=weeks))
        .group_by("date")
        .agg(score=pl.col("score").mean(), symbols=pl.col("symbol").n_unique())
        .sort("date")
    )


def provider_frame(runtime: Runtime) -> tuple[pl.DataFrame, bool]:
    """Return one row per registered provider with its calls, latency and breaker state.

    The flag says whether the call statistics are this process's (live) or the last saved.
    """
    table = runtime.providers.table().select("provider", "prices", "requires_key", "rate_limits")
    stats, live = runtime.providers.stats()
    calls: list[dict[str, Any]] = list((stats or {}).get("providers", []))
    columns = {"provider": pl.String, "calls": pl.Int64, "errors": pl.Int64,
               "errors_by_kind": pl.String, "latency_p50_s": pl.Float64,
               "breaker": pl.String, "transitions": pl.Int64}  # fmt: skip
    observed = pl.DataFrame(
        [{k: row.get(k) for k in columns} for row in calls], schema=columns
    )  # one row per provider, a handful
    return table.join(observed, on="provider", how="left"), live


@dataclass(frozen=True)
class StatusView:
    """Everything one rendering of the page shows."""

    who: Caller
    now: datetime
    backend: str
    store: pl.DataFrame  # timeframe, symbols, rows, first, last, bytes
    tiers: pl.DataFrame
    jobs: list[IngestionJob]
    providers: pl.DataFrame
    providers_live: bool
    quality: pl.DataFrame  # date, score, symbols
    quarantine: pl.DataFrame
    quarantined: int  # held rows the caller may see
    symbols: list[str]  # stored symbols in the chart's timeframe the caller may read
    chart: Chart
    # (finished tasks, tasks) of the shown jobs still pending or running (workers' progress)
    progress: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


def gather(runtime: Runtime, who: Caller, request: ChartRequest) -> StatusView:
    """Collect every section of the page for `who`."""
    stats = _entitled(runtime.queries.status(), who.tenant)
    store = status_by_timeframe(stats)
    jobs = [j for j in runtime.ingestion.jobs(100_000) if _visible(who, j)]
    own = [j.job_id for j in jobs]
    scores = _entitled(runtime.quality.scores(None, timeframe="1d"), who.tenant)
    held = _entitled(runtime.quality.quarantine(), who.tenant).filter(pl.col("job_id").is_in(own))
    symbols = sorted(stats.filter(pl.col("timeframe") == request.timeframe)["symbol"].to_list())
    if request.symbol is None and symbols:  # the first stored symbol until one is chosen
        request = dataclasses.replace(request, symbol=symbols[0])
    providers, live = provider_frame(runtime)
    return StatusView(
        who=who,
        now=runtime.clock.now(),
        backend=runtime.settings.storage.backend,
        store=store,
        tiers=runtime.maintenance.storage_report(),
        jobs=jobs[:JOBS_SHOWN],
        providers=providers,
        providers_live=live,
        quality=daily_quality(scores.filter(pl.col("job_id").is_in(own))),
        quarantine=held.sort("quarantined_at", "ts", descending=True).head(QUARANTINE_SHOWN),
        quarantined=held.height,
        symbols=symbols,
        chart=load_chart(runtime, who, request, stats),
        progress={
            j.job_id: runtime.ingestion.progress(j.job_id)
            for j in jobs[:JOBS_SHOWN]
            if j.status in (JobStatus.PENDING, JobStatus.RUNNING)
        },
    )
