"""Backfill planning: what is missing, the fewest provider calls that fetch it, how long.

1. The gap map: every session of the exchange calendar in the range that a symbol has no
   bar for in the store, as runs of consecutive sessions (`gap_map`).
2. Requests: per symbol and provider, gap runs are merged into one request whenever that
   costs no more calls than fetching them apart (each client says how many calls a
   request takes: `Provider.planned_calls`, pages and slices included). A daily history
   is one call at most vendors, so a symbol's gaps usually become one request.
3. Providers: only those whose look-back covers a run may serve it (`history_start`,
   `intraday_lookback_days`); free tiers first (`cost_per_call`), and among equals the
   calls go where the quota finishes them soonest. Runs nobody can serve are listed.
4. Time: the largest of three bounds (`predicted_seconds`, `task_seconds`):
   - the quota: the limiter's sliding logs, where a call holds its place from its grant
     until its answer (`limit` calls per `latency + period + margin`), at most `slots x
     fetch_concurrency` in flight; providers in parallel;
   - the slots: each of `workers x concurrency` slots runs its tasks one after the other,
     a task being its calls (`fetch_concurrency` at a time) plus the task's own cost
     (parse, validate, store: `workers.task_cost_s`, measured by perf/workers.py);
   - the CPU: every task's cost spread over the CPUs the workers have.
   The quota's bound ends with the last task's own work (at a worker's share of the CPUs).
   With the host's costs measured (`host`: the workers', a provider's on the same host and
   the database's CPU, the CPUs they share, a job's fixed seconds, one worker's measured
   time per task) the plan plays the backfill out instead (`host_model.simulate`, fitted
   to the measured one-worker time by `host_model.fit`): the bounds where they meet, the
   calls a task keeps in flight, and CPU contention, included; `BackfillPlan.model` keeps
   the model's terms per provider.

`submit` queues the plan as jobs for `qv worker`s (one per provider and range).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from quantivista.config import Settings
from quantivista.errors import InvalidInputError
from quantivista.model.jobs import IngestionJob
from quantivista.model.rates import Rate
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.providers.base import BarRequest, Provider
from quantivista.providers.registry import ProviderRegistry
from quantivista.reference.calendars import TradingCalendar
from quantivista.services.host_model import HostCosts, Scenario, fit, terms
from quantivista.services.ingestion import IngestionService
from quantivista.services.queries import symbol_list
from quantivista.storage.base import BarStore
from quantivista.timeutil import DateLike, to_date

__all__ = ["BackfillPlan", "BackfillService", "predicted_seconds", "task_seconds"]

_SIMULATED_CALLS = 50_000  # larger plans take the closed bounds (the model walks every call)
_GAPS = {"symbol": pl.String, "first": pl.Date, "last": pl.Date, "first_idx": pl.Int64,
         "last_idx": pl.Int64, "sessions": pl.Int64, "bars": pl.Int64}  # fmt: skip
_UNSERVABLE = {"symbol": pl.String, "first": pl.Date, "last": pl.Date, "sessions": pl.Int64,
               "reason": pl.String}  # fmt: skip
_REQUESTS = {"symbol": pl.String, "provider": pl.String, "first": pl.Date, "last": pl.Date,
             "sessions": pl.Int64, "bars": pl.Int64, "calls": pl.Int64}  # fmt: skip


def predicted_seconds(
    calls: int,
    rates: Sequence[Rate],
    *,
    margin_s: float = 0.0,
    latency_s: float = 0.0,
    concurrency: int = 1,
) -> float:
    """Return the time `calls` of `latency_s` each take under sliding windows.

    Call k is granted once the call `limit` places before it has answered and left that
    window (`latency + period + margin` after its grant: the limiter holds a call until its
    answer), once the call `concurrency` places before it has answered, and not before the
    call before it. This is the limiter's own rule, so for equal latencies it is exact.
    """
    if calls <= 0:
        return 0.0
    windows = [(r.limit, latency_s + r.period_s + margin_s) for r in rates]
    width = max(concurrency, 1)
    grants = np.zeros(calls)
    for k in range(1, calls):  # calls, not bars: thousands for a large backfill
        at = grants[k - 1]
        if k >= width:
            at = max(at, grants[k - width] + latency_s)
        for limit, period in windows:
            if k >= limit:
                at = max(at, grants[k - limit] + period)
        grants[k] = at
    return float(grants[-1]) + latency_s


def task_seconds(
    tasks: int,
    calls_per_task: float,
    *,
    slots: int,
    fetch_concurrency: int = 1,
    latency_s: float = 0.0,
    task_cost_s: float = 0.0,
    cpus: float | None = None,
) -> float:
    """Return the time `tasks` take on `slots` ignoring quotas: the slots' or the CPUs' bound.

    A slot runs its tasks one after the other, each `calls_per_task` calls
    (`fetch_concurrency` at a time) plus `task_cost_s` of its own work; that work, summed
    over all tasks, also has to fit on `cpus` (default: one per slot).
    """
    if tasks <= 0:
        return 0.0
    rounds = math.ceil(tasks / max(slots, 1))
    one = math.ceil(calls_per_task / max(fetch_concurrency, 1)) * latency_s + task_cost_s
    cpu = tasks * task_cost_s / max(cpus if cpus is not None else slots, 1e-9)
    return max(rounds * one, cpu)


@dataclass(frozen=True)
class BackfillPlan:
    """A backfill's gap map, its requests per provider and the time they take."""

    timeframe: str
    start: date
    end: date
    gaps: pl.DataFrame
    requests: pl.DataFrame
    unservable: pl.DataFrame
    providers: pl.DataFrame  # provider, requests, symbols, calls, windows, tasks, predicted_s
    predicted_s: float
    # per provider, with the host's costs: the host model's terms (`host_model.terms`) and
    # the job's fixed seconds (`job_s`, `pickup_s`) it adds
    model: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        """Return the calls of every request."""
        return int(self.requests["calls"].sum()) if self.requests.height else 0


class BackfillService:
    """Plan backfills against the store and the calendar; queue them for workers."""

    def __init__(
        self,
        bars: BarStore,
        calendar: Callable[[], TradingCalendar],
        registry: ProviderRegistry,
        settings: Settings,
        ingestion: IngestionService,
        now: Callable[[], datetime],
    ) -> None:
        self.bars = bars
        self.calendar = calendar
        self.registry = registry
        self.settings = settings
        self.ingestion = ingestion
        self.now = now

    # -- 1. the gap map --------------------------------------------------------------------
    def gap_map(
        self, symbols: str | Sequence[str], start: DateLike, end: DateLike, timeframe: TimeframeLike
    ) -> pl.DataFrame:
        """Return runs of sessions without bars: symbol, first, last, sessions, bars."""
        wanted = symbol_list(symbols)
        tf = Timeframe.parse(timeframe)
        sessions = self._sessions(start, end, tf)
        if not wanted or sessions.is_empty():
            return pl.DataFrame(schema=_GAPS)
        lo = datetime.combine(to_date(start), datetime.min.time(), UTC)
        hi = datetime.combine(to_date(end), datetime.min.time(), UTC) + timedelta(days=1)
        stored = self.bars.read(wanted, tf, lo, hi, columns=["symbol", "ts"])
        day = self.calendar().session_of(pl.col("ts")) if tf.is_intraday else pl.col("ts").dt.date()
        have = stored.select("symbol", session=day).unique()
        want = pl.DataFrame({"symbol": wanted}).join(sessions, how="cross")
        missing = want.join(have, on=["symbol", "session"], how="anti").sort("symbol", "idx")
        runs = missing.with_columns(
            run=pl.col("idx") - pl.int_range(pl.len()).over("symbol")
        )  # consecutive sessions share idx - position
        return (
            runs.group_by("symbol", "run")
            .agg(
                first=pl.col("session").min(),
                last=pl.col("session").max(),
                first_idx=pl.col("idx").min(),
                last_idx=pl.col("idx").max(),
                sessions=pl.len().cast(pl.Int64),
                bars=pl.col("bars").sum(),
            )
            .sort("symbol", "first")
            .select(list(_GAPS))
            .cast(_GAPS)  # type: ignore[arg-type]
        )

    def _sessions(self, start: DateLike, end: DateLike, tf: Timeframe) -> pl.DataFrame:
        """Return the range's sessions with their index and expected bars."""
        if to_date(end) < to_date(start):
            raise InvalidInputError("end is before start", start=str(start), end=str(end))
        table = self.calendar().session_table(start, end)
        if tf.is_intraday:
            step = tf.seconds or 60
            bars = (pl.col("minutes") * 60 / step).ceil().cast(pl.Int64)
        else:
            bars = pl.lit(1, pl.Int64)
        return (
            table.select("session", bars=bars)
            .with_row_index("idx")
            .with_columns(pl.col("idx").cast(pl.Int64))
        )

    # -- 2-4. the plan ---------------------------------------------------------------------
    def plan(
        self,
        symbols: str | Sequence[str],
        start: DateLike,
        end: DateLike,
        timeframe: TimeframeLike = "1d",
        providers: Sequence[str] | None = None,
        *,
        workers: int = 1,
        latency_s: float = 0.0,
        task_cost_s: float | None = None,
        cpus: float | None = None,
        host: HostCosts | None = None,
    ) -> BackfillPlan:
        """Return the plan of a backfill: gaps, requests per provider, predicted time.

        `workers` x `workers.concurrency` slots run tasks of `ingest.symbols_per_batch`
        symbols, `ingest.fetch_concurrency` calls at a time; `latency_s` is a call's round
        trip, `task_cost_s` a task's own work (default `workers.task_cost_s`) and `cpus` the
        CPUs the workers share (default one per worker); plus `workers.poll_s`, how late an
        idle worker sees the first task. `host` (measured costs, see `host_model`) replaces
        `task_cost_s` and `cpus` with the backfill played out on the host's CPUs.
        """
        tf = Timeframe.parse(timeframe)
        names = [n.lower() for n in providers] if providers else [
            self.settings.ingest.default_provider]  # fmt: skip
        classes = {name: self.registry.get(name) for name in names}
        gaps = self.gap_map(symbols, start, end, tf)
        sessions = self._sessions(start, end, tf)
        prefix = [0, *sessions["bars"].cum_sum().to_list()]  # bars before each session
        days = sessions["session"].to_list()
        now = self.now()
        slots = max(workers, 1) * self.settings.workers.concurrency
        fetch = self.settings.ingest.fetch_concurrency
        concurrency = slots * fetch
        cost = self.settings.workers.task_cost_s if task_cost_s is None else task_cost_s
        res = self.settings.resilience
        rates = {n: [Rate.parse(r) for r in res.limits.get(n, [])] for n in names}
        spent: dict[str, int] = dict.fromkeys(names, 0)

        def finish(name: str, calls: int) -> float:
            return predicted_seconds(calls, rates[name], margin_s=res.margin_s,
                                     latency_s=latency_s, concurrency=concurrency)  # fmt: skip

        requests: list[dict[str, object]] = []
        unservable: list[dict[str, object]] = []
        for (symbol,), runs in gaps.group_by("symbol", maintain_order=True):
            spans = list(zip(runs["first_idx"].to_list(), runs["last_idx"].to_list(), strict=True))
            able = {n: [_serves(classes[n], tf, days[a], now) for a, _ in spans] for n in names}
            whole = [n for n in names if all(able[n])]
            groups = [(whole, spans)] if whole else [
                ([n for n in names if able[n][i]], [span]) for i, span in enumerate(spans)
            ]  # fmt: skip
            for candidates, part in groups:
                if not candidates:
                    (a, b) = part[0]
                    unservable.append({"symbol": symbol, "first": days[a], "last": days[b],
                                       "sessions": b - a + 1,
                                       "reason": "before every provider's look-back"})  # fmt: skip
                    continue
                options = {
                    n: _merge(classes[n], symbol, tf, part, days, prefix, now) for n in candidates
                }
                cheapest = min(classes[n].capabilities.cost_per_call for n in candidates)
                tier = [n for n in candidates if classes[n].capabilities.cost_per_call == cheapest]
                best = min(
                    tier,
                    key=lambda n: (
                        finish(n, spent[n] + sum(r[2] for r in options[n])),
                        classes[n].capabilities.priority,
                    ),
                )
                for a, b, calls in options[best]:
                    spent[best] += calls
                    row = {"symbol": symbol, "provider": best, "first": days[a], "last": days[b]}
                    row.update(sessions=b - a + 1, bars=prefix[b + 1] - prefix[a], calls=calls)
                    requests.append(row)
        req = pl.DataFrame(requests, schema=_REQUESTS)
        # tasks as `submit` queues them: per provider and range, batches of symbols
        batch = self.settings.ingest.symbols_per_batch
        tasks = (
            req.group_by("provider", "first", "last")
            .agg(tasks=(pl.len() / batch).ceil().cast(pl.Int64), calls=pl.col("calls").sum())
            .group_by("provider")
            .agg(pl.col("tasks").sum(), pl.col("calls").sum())
        )
        per = {r["provider"]: (r["tasks"], r["calls"]) for r in tasks.iter_rows(named=True)}

        share = cpus if cpus is not None else max(workers, 1)
        # idle workers look for tasks every `workers.poll_s`: the first task starts that late
        pickup = self.settings.workers.poll_s

        model: dict[str, dict[str, float]] = {}

        def bound(name: str) -> float:
            n, calls = per.get(name, (0, 0))
            if host is not None and n and calls <= _SIMULATED_CALLS:
                windows = tuple((r.limit, r.period_s + res.margin_s) for r in rates[name])
                each = self.settings.workers.concurrency
                costs = fit(host, calls_per_task=calls / n, concurrency=each,
                            latency_s=latency_s, fetch_concurrency=fetch)  # fmt: skip
                model[name] = terms(Scenario(n, calls, workers=max(workers, 1), concurrency=each,
                                             latency_s=latency_s, costs=costs, windows=windows,
                                             fetch_concurrency=fetch))  # fmt: skip
                model[name].update(job_s=host.job_s, pickup_s=pickup)
                return pickup + host.job_s + model[name]["played_s"]
            quota = finish(name, spent[name])
            if not n:
                return quota
            # after the quota's last call, its task still has its own work to do, at the
            # CPU share one worker gets
            tail = cost * max(1.0, max(workers, 1) / share)
            work = task_seconds(n, calls / n, slots=slots, fetch_concurrency=fetch,
                                latency_s=latency_s, task_cost_s=cost, cpus=share)  # fmt: skip
            return pickup + max(quota + tail, work)

        summary = pl.DataFrame(
            [
                {
                    "provider": n,
                    "requests": req.filter(pl.col("provider") == n).height,
                    "symbols": req.filter(pl.col("provider") == n)["symbol"].n_unique(),
                    "calls": spent[n],
                    "windows": " ".join(str(r) for r in rates[n]) or "unlimited",
                    "tasks": per.get(n, (0, 0))[0],
                    "predicted_s": bound(n),
                }
                for n in names
            ],
            schema={"provider": pl.String, "requests": pl.Int64, "symbols": pl.Int64,
                    "calls": pl.Int64, "windows": pl.String, "tasks": pl.Int64,
                    "predicted_s": pl.Float64},
        )  # fmt: skip
        return BackfillPlan(
            timeframe=str(tf),
            start=to_date(start),
            end=to_date(end),
            gaps=gaps.drop("first_idx", "last_idx"),
            requests=req,
            unservable=pl.DataFrame(unservable, schema=_UNSERVABLE),
            providers=summary,
            predicted_s=float(summary["predicted_s"].max() or 0.0),  # type: ignore[arg-type]
            model=model,
        )

    def submit(self, plan: BackfillPlan, *, queue: str | None = None) -> list[IngestionJob]:
        """Queue the plan's requests for workers: one job per provider and range."""
        jobs = []
        grouped = plan.requests.group_by("provider", "first", "last", maintain_order=True)
        for provider, first, last, part in grouped.agg(pl.col("symbol")).iter_rows():
            jobs.append(
                self.ingestion.enqueue(part, first, last, plan.timeframe, [provider], queue=queue)
            )
        return jobs


def _serves(cls: type[Provider], tf: Timeframe, first: date, now: datetime) -> bool:
    """Say whether a provider's look-back reaches back to `first` for `tf` bars."""
    caps = cls.capabilities
    if not caps.supports(tf):
        return False
    if caps.history_start is not None and first < caps.history_start:
        return False
    lookback = caps.intraday_lookback_days
    return not (
        tf.is_intraday and lookback is not None and first < (now.date() - timedelta(days=lookback))
    )


def _merge(
    cls: type[Provider],
    symbol: str,
    tf: Timeframe,
    spans: list[tuple[int, int]],
    days: list[date],
    prefix: list[int],
    now: datetime,
) -> list[tuple[int, int, int]]:
    """Return (first, last, calls) requests covering `spans` with the fewest calls.

    Neighbouring runs are merged while one request over both costs no more calls than two
    (greedy, left to right: calls never shrink when a span grows).
    """

    def calls(a: int, b: int) -> int:
        lo = datetime.combine(days[a], datetime.min.time(), UTC)
        hi = datetime.combine(days[b], datetime.min.time(), UTC) + timedelta(days=1)
        return cls.planned_calls(BarRequest(symbol, tf, lo, hi), prefix[b + 1] - prefix[a], now)

    out: list[tuple[int, int, int]] = []
    a, b = spans[0]
    cost = calls(a, b)
    for c, d in spans[1:]:
        alone = calls(c, d)
        together = calls(a, d)
        if together <= cost + alone:
            b, cost = d, together
        else:
            out.append((a, b, cost))
            a, b, cost = c, d, alone
    out.append((a, b, cost))
    return out
