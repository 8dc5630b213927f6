"""SLA reports: uptime in market hours, freshness, retrieval success, API latency, quality.

    report = SlaService.from_runtime(runtime).report(start, end)

Where each number comes from:
- uptime and API latency: the `sla_probe` job (`qv scheduler`, every minute) requests the
  API's `/readyz` and appends the outcome and latency to the operations log; uptime is the
  share of probes in market hours that succeeded (`sla.market_open`-`sla.market_close` in
  `sla.timezone`, on the exchange's sessions), and coverage says how many market minutes had
  a probe at all (a gap is a monitoring gap, not counted as downtime);
- freshness: per stored daily bar of a session in the period, `ingested_at` minus the
  session's close (the exchange calendar's, early closes included);
- retrieval success: the share of requested symbols the period's ingestion jobs got;
- quality: the row-weighted quality score of those jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import polars as pl

from quantivista.clock import Clock
from quantivista.config import Settings, SlaSettings
from quantivista.model.timeframe import Timeframe
from quantivista.reference.calendars import TradingCalendar
from quantivista.services.audit import OpsLog
from quantivista.storage.contracts import Backend

if TYPE_CHECKING:
    from quantivista.runtime import Runtime

__all__ = ["SlaReport", "SlaService", "day_range"]

PROBE = "api"


@dataclass(frozen=True)
class SlaReport:
    """The SLA numbers of a period, one row per measure, and uptime per session day."""

    start: datetime
    end: datetime
    measures: pl.DataFrame  # measure, value, target, met, detail
    daily: pl.DataFrame  # session, probes, ok, uptime

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "measures": self.measures.to_dicts(),
            "daily": self.daily.with_columns(pl.col("session").cast(pl.String)).to_dicts(),
        }


class SlaService:
    """Probes the API and reports the SLA of a period."""

    def __init__(
        self,
        settings: SlaSettings,
        log: OpsLog,
        backend: Backend,
        calendar: TradingCalendar,
        clock: Clock,
        api_url: str,
    ) -> None:
        self.settings = settings
        self.log = log
        self.backend = backend
        self.calendar = calendar
        self.clock = clock
        self.api_url = api_url

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> SlaService:
        s: Settings = runtime.settings
        api = (
            s.sla.api_url
            or f"{'https' if s.api.ssl_certfile else 'http'}://{s.api.host}:{s.api.port}"
        )
        calendar = runtime.calendar(s.sla.exchange or s.ingest.calendar)
        return cls(s.sla, runtime.audit.log, runtime.backend, calendar, runtime.clock, api)

    # -- sampling ------------------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        """Request the API's /readyz once and keep the outcome and latency."""
        at = self.clock.now()
        try:
            reply = httpx.get(f"{self.api_url}/readyz", timeout=self.settings.probe_timeout_s,
                              verify=False)  # fmt: skip  # our own listener, maybe self-signed
            ok, latency, detail = reply.status_code == 200, reply.elapsed.total_seconds(), ""
            if not ok:
                detail = f"HTTP {reply.status_code}"
        except httpx.HTTPError as exc:
            ok, latency, detail = False, None, f"{type(exc).__name__}: {exc}"
        self.log.add_sla(at, PROBE, ok, latency, detail)
        return {"ok": ok, "latency_s": latency, "detail": detail}

    # -- the report ----------------------------------------------------------------------------
    def market_windows(self, start: datetime, end: datetime) -> pl.DataFrame:
        """Return each session's market window (UTC) within [start, end)."""
        tz = ZoneInfo(self.settings.timezone)
        first = max(start.date() - timedelta(days=1), self.calendar.first_session)
        last = min(end.date(), self.calendar.last_session)
        sessions = self.calendar.sessions(first, last).to_list()
        rows = []
        for day in sessions:
            lo = datetime.combine(day, self.settings.market_open, tz).astimezone(UTC)
            hi = datetime.combine(day, self.settings.market_close, tz).astimezone(UTC)
            lo, hi = max(lo, start), min(hi, end)
            if lo < hi:
                rows.append({"session": day, "open": lo, "close": hi})
        return pl.DataFrame(
            rows,
            schema={"session": pl.Date, "open": pl.Datetime("us", "UTC"),
                    "close": pl.Datetime("us", "UTC")},
        )  # fmt: skip

    def report(self, start: datetime, end: datetime) -> SlaReport:
        """Return the SLA measures of [start, end)."""
        s = self.settings
        windows = self.market_windows(start, end)
        samples = self.log.sla(start, end).filter(pl.col("probe") == PROBE)
        in_market = samples.join_where(
            windows, pl.col("at") >= pl.col("open"), pl.col("at") < pl.col("close")
        )
        daily = (
            in_market.group_by("session")
            .agg(probes=pl.len(), ok=pl.col("ok").sum())
            .with_columns(uptime=pl.col("ok") / pl.col("probes"))
            .join(windows.select("session"), on="session", how="right")
            .select("session", pl.col("probes").fill_null(0), pl.col("ok").fill_null(0), "uptime")
            .sort("session")
        )
        market_minutes = windows.select(
            ((pl.col("close") - pl.col("open")).dt.total_seconds() / 60).sum()
        ).item()
        probes = in_market.height
        ok = int(in_market["ok"].sum()) if probes else 0
        latency = samples.filter(pl.col("ok"))["latency_s"].drop_nulls()
        fresh = self._freshness(start, end)
        success, quality, jobs = self._jobs(start, end)
        rows = [
            _row("uptime (market hours)", ok / probes if probes else None, s.uptime_target,
                 higher=True, detail=f"{ok}/{probes} probes; coverage "
                 f"{probes / market_minutes:.1%} of {market_minutes:.0f} market minutes"
                 if market_minutes else "no market hours in the period"),
            _row("freshness p50 (s)", _q(fresh, 0.5), None, higher=False,
                 detail=f"{fresh.len()} daily bars"),
            _row("freshness p95 (s)", _q(fresh, 0.95), s.freshness_p95_target_s, higher=False),
            _row("freshness p99 (s)", _q(fresh, 0.99), None, higher=False),
            _row("retrieval success", success, s.retrieval_target, higher=True,
                 detail=f"{jobs} ingestion jobs"),
            _row("API latency p50 (s)", _q(latency, 0.5), None, higher=False,
                 detail=f"{latency.len()} probes"),
            _row("API latency p95 (s)", _q(latency, 0.95), None, higher=False),
            _row("API latency p99 (s)", _q(latency, 0.99), s.api_p99_target_s, higher=False),
            _row("quality score", quality, s.quality_target, higher=True),
        ]  # fmt: skip
        measures = pl.DataFrame(
            rows,
            schema={"measure": pl.String, "value": pl.Float64, "target": pl.Float64,
                    "met": pl.Boolean, "detail": pl.String},
        )  # fmt: skip
        return SlaReport(start, end, measures, daily)

    def _freshness(self, start: datetime, end: datetime) -> pl.Series:
        bars = self.backend.bars
        symbols = bars.symbols(Timeframe.parse("1d"))
        if not symbols:
            return pl.Series("freshness_s", [], dtype=pl.Float64)
        frame = bars.read(symbols, Timeframe.parse("1d"), start, end, columns=["ts", "ingested_at"])
        first, last = start.date(), end.date()
        closes = self.calendar.session_table(
            max(first, self.calendar.first_session), min(last, self.calendar.last_session)
        ).select("session", "close")
        joined = frame.with_columns(session=pl.col("ts").dt.date()).join(closes, on="session")
        return joined.select(
            ((pl.col("ingested_at") - pl.col("close")).dt.total_milliseconds() / 1000).alias(
                "freshness_s"
            )
        )["freshness_s"]

    def _jobs(self, start: datetime, end: datetime) -> tuple[float | None, float | None, int]:
        catalog = self.backend.catalog
        jobs = [
            j for j in catalog.jobs(100_000)
            if j.start_time is not None and start <= j.start_time < end
        ]  # fmt: skip
        if not jobs:
            return None, None, 0
        wanted = sum(len(j.symbols) for j in jobs)
        failed = sum(t.symbols_failed for j in jobs for t in catalog.tasks(j.job_id))
        scored = [(j.quality.quality_score, j.quality.total_records) for j in jobs if j.quality]
        rows = sum(n for _, n in scored)
        quality = sum(q * n for q, n in scored) / rows if rows else None
        return (1 - failed / wanted if wanted else None), quality, len(jobs)


def _q(values: pl.Series, q: float) -> float | None:
    return float(values.quantile(q, "linear")) if values.len() else None  # type: ignore[arg-type]


def _row(
    measure: str, value: float | None, target: float | None, *, higher: bool, detail: str = ""
) -> dict[str, Any]:
    met = None
    if value is not None and target is not None:
        met = value >= target if higher else value <= target
    return {"measure": measure, "value": value, "target": target, "met": met, "detail": detail}


def day_range(first: date, last: date) -> tuple[datetime, datetime]:
    """Return [first 00:00 UTC, the day after last 00:00 UTC)."""
    return (
        datetime.combine(first, time(), UTC),
        datetime.combine(last + timedelta(days=1), time(), UTC),
    )
