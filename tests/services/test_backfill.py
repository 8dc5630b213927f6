"""The backfill planner's arithmetic: gaps, merged requests, look-back, free tiers, time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from quantivista.acquisition.limits import RateLimiter
from quantivista.cli import app
from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.model.instruments import AssetClass
from quantivista.model.rates import Rate
from quantivista.model.timeframe import Timeframe
from quantivista.providers.alpha_vantage import AlphaVantageProvider
from quantivista.providers.base import BarRequest, FetchResult, Provider, ProviderCapabilities
from quantivista.providers.iex_cloud import IexCloudProvider
from quantivista.providers.polygon import PolygonProvider
from quantivista.providers.registry import ProviderRegistry
from quantivista.providers.yahoo import YahooProvider
from quantivista.reference.calendars import TradingCalendar
from quantivista.runtime import Runtime
from quantivista.services.backfill import _merge, predicted_seconds, task_seconds
from quantivista.services.host_model import HostCosts, Scenario, fit, simulate

NOW = datetime(2024, 6, 3, 12, tzinfo=UTC)


class _Daily(Provider):
    capabilities: ClassVar[ProviderCapabilities] = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}), timeframes=frozenset({"1d"})
    )

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        raise NotImplementedError


class FreeA(_Daily):
    name = "free_a"


class FreeB(_Daily):
    name = "free_b"


class Paid(Provider):
    name = "paid"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1d", "1h"}),
        cost_per_call=0.01,
        priority=1,
    )


def _registry() -> ProviderRegistry:
    registry = ProviderRegistry(load_entry_points=False)
    for cls in (FreeA, FreeB, Paid, YahooProvider, AlphaVantageProvider, IexCloudProvider,
                PolygonProvider):  # fmt: skip
        registry.register(cls)
    return registry


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "qv",
        resilience={"limits": {"free_a": ["1/second"], "free_b": ["2/second"],
                               "paid": ["100/second"]}, "margin_s": 0.0},
    )  # fmt: skip
    runtime = Runtime.from_settings(settings, clock=TestClock(NOW), registry=_registry())
    yield runtime
    runtime.close()


# -- time under the quotas -------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    calls=st.integers(1, 60),
    windows=st.lists(
        st.tuples(st.integers(1, 10), st.sampled_from([1.0, 2.5, 60.0])),
        min_size=1,
        max_size=3,
        unique=True,  # the limiter keeps one log per distinct window
    ),
    margin=st.sampled_from([0.0, 0.1]),
    latency=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_predicted_time_is_what_the_limiter_takes(
    calls: int, windows: list[tuple[int, float]], margin: float, latency: float
) -> None:
    rates = [Rate(limit, period) for limit, period in windows]
    clock = TestClock()
    limiter = RateLimiter({"p": rates}, clock=clock, max_wait_s=1e9, margin_s=margin)
    for _ in range(calls):
        with limiter.call("p"):  # held in its windows until the answer, `latency` later
            clock.advance(latency)
    want = predicted_seconds(calls, rates, margin_s=margin, latency_s=latency)
    # waits round up to 1 µs, and a call in flight is looked at again every 10 ms at most
    assert clock.monotonic() == pytest.approx(want, abs=calls * 2e-6)


def test_predicted_time_of_vendor_tiers_and_of_latency() -> None:
    five_a_minute = [Rate.parse("5/minute")]
    assert predicted_seconds(0, five_a_minute) == 0
    assert predicted_seconds(5, five_a_minute) == 0
    assert predicted_seconds(6, five_a_minute) == 60
    assert predicted_seconds(26, [Rate.parse("1/second"), Rate.parse("25/day")]) == 86400
    # no quota: latency and concurrency decide; with a quota the last call still takes it
    assert predicted_seconds(10, [], latency_s=0.05, concurrency=4) == pytest.approx(0.15)
    # a call holds its place until answered: the sixth waits for the first answer + 60 s
    assert predicted_seconds(6, five_a_minute, latency_s=0.05) == pytest.approx(60.1)


def test_task_time_is_the_slots_rounds_or_the_cpus_work() -> None:
    # 10 tasks of 10 calls at 50 ms, one call at a time, 0.1 s of own work each
    one = 10 * 0.05 + 0.1
    assert task_seconds(10, 10, slots=1, latency_s=0.05, task_cost_s=0.1) == pytest.approx(10 * one)
    assert task_seconds(10, 10, slots=4, latency_s=0.05, task_cost_s=0.1) == pytest.approx(3 * one)
    # 4 slots on one CPU: the work (10 x 0.1 s) no longer fits in 3 rounds of 0.6 s
    assert task_seconds(10, 10, slots=4, latency_s=0.05, task_cost_s=0.25, cpus=1) == 2.5
    # fetching 5 calls at a time halves a task's waiting
    assert task_seconds(1, 10, slots=1, fetch_concurrency=5, latency_s=0.05) == pytest.approx(0.1)
    assert task_seconds(0, 10, slots=1) == 0


# -- the gap map -----------------------------------------------------------------------------
def test_the_gap_map_lists_runs_of_missing_sessions(
    rt: Runtime, xnys: TradingCalendar, make_bars: Any
) -> None:
    days = xnys.sessions("2024-01-02", "2024-01-31").to_list()
    rt.backend.bars.upsert(make_bars(["AAA"], 3, start=days[0]))
    rt.backend.bars.upsert(make_bars(["AAA"], 5, start=days[5]))
    gaps = rt.backfill.gap_map(["AAA", "BBB"], days[0], days[14], "1d")
    assert gaps.select("symbol", "first", "last", "sessions").rows() == [
        ("AAA", days[3], days[4], 2),
        ("AAA", days[10], days[14], 5),
        ("BBB", days[0], days[14], 15),
    ]
    assert rt.backfill.gap_map(["AAA"], days[5], days[9], "1d").is_empty()


def test_a_symbols_daily_gaps_become_one_call(
    rt: Runtime, xnys: TradingCalendar, make_bars: Any
) -> None:
    days = xnys.sessions("2024-01-02", "2024-01-31").to_list()
    rt.backend.bars.upsert(make_bars(["AAA"], 3, start=days[2]))
    plan = rt.backfill.plan(["AAA"], days[0], days[9], "1d", ["alpha_vantage"])
    assert plan.gaps.height == 2  # before and after the stored stretch
    (request,) = plan.requests.rows(named=True)
    assert (request["first"], request["last"], request["calls"]) == (days[0], days[9], 1)
    assert plan.calls == 1


def test_intraday_windows_merge_near_gaps_and_keep_far_ones_apart() -> None:
    days = [date(2024, 3, 1) + timedelta(days=i) for i in range(40)]
    prefix = [390 * i for i in range(41)]
    tf = Timeframe.parse("1m")
    now = datetime(2024, 3, 1, tzinfo=UTC)  # windows ending after now: no later-splits call
    near = _merge(YahooProvider, "AAA", tf, [(0, 1), (3, 4)], days, prefix, now)
    assert near == [(0, 4, 1)]  # one 7-day window holds both
    far = _merge(YahooProvider, "AAA", tf, [(0, 1), (30, 31)], days, prefix, now)
    assert far == [(0, 1, 1), (30, 31, 1)]  # one window each beats five over the span
    # Alpha Vantage slices intraday by month; IEX Cloud by day; Polygon by 50,000-bar pages
    assert _merge(AlphaVantageProvider, "AAA", tf, [(0, 35)], days, prefix, now) == [(0, 35, 2)]
    assert _merge(IexCloudProvider, "AAA", tf, [(0, 9)], days, prefix, now) == [(0, 9, 10)]
    big = [390 * i * 100 for i in range(41)]  # 39,000 bars a day: a page per ~1.3 days
    assert _merge(PolygonProvider, "AAA", tf, [(0, 3)], days, big, now) == [(0, 3, 4)]


def test_look_back_limits_choose_who_may_serve(rt: Runtime) -> None:
    only_iex = rt.backfill.plan(["AAA"], "2024-03-04", "2024-03-08", "1m", ["iex_cloud"])
    assert only_iex.requests.is_empty()
    assert only_iex.unservable.rows() == [
        ("AAA", date(2024, 3, 4), date(2024, 3, 8), 5, "before every provider's look-back")
    ]
    both = rt.backfill.plan(["AAA"], "2024-03-04", "2024-03-08", "1m", ["iex_cloud", "polygon"])
    (request,) = both.requests.rows(named=True)
    assert (request["provider"], request["bars"], request["calls"]) == ("polygon", 5 * 390, 1)
    recent = rt.backfill.plan(["AAA"], "2024-05-20", "2024-05-24", "1m", ["iex_cloud"])
    assert recent.requests["calls"].to_list() == [5]  # one call per day, within 30 days


def test_free_tiers_first_and_calls_balanced_by_quota(rt: Runtime) -> None:
    symbols = [f"S{i:02d}" for i in range(30)]
    plan = rt.backfill.plan(symbols, "2024-01-02", "2024-01-31", "1d", ["paid", "free_a", "free_b"])
    per = dict(plan.providers.select("provider", "calls").iter_rows())
    assert per["paid"] == 0  # the paid vendor only serves what the free ones cannot
    assert per["free_a"] + per["free_b"] == 30
    assert (per["free_a"], per["free_b"]) == (10, 20)  # 1/s and 2/s finish together
    # an idle worker's poll (workers.poll_s); 10 calls at 1/s and 20 at 2/s; then the last
    # task's own work (workers.task_cost_s)
    workers = rt.settings.workers
    assert plan.predicted_s == pytest.approx(workers.poll_s + 9.0 + workers.task_cost_s)
    hourly = rt.backfill.plan(symbols[:2], "2024-01-02", "2024-01-03", "1h", ["free_a", "paid"])
    assert set(hourly.requests["provider"]) == {"paid"}  # free_a has no hourly bars


def test_submit_queues_one_job_per_provider_and_range(rt: Runtime) -> None:
    symbols = [f"S{i:02d}" for i in range(6)]
    plan = rt.backfill.plan(symbols, "2024-01-02", "2024-01-31", "1d", ["free_a", "free_b"])
    jobs = rt.backfill.submit(plan, queue="backfill")
    assert sorted(j.providers[0] for j in jobs) == ["free_a", "free_b"]
    assert sorted(s for j in jobs for s in j.symbols) == symbols
    assert all(j.queue == "backfill" and j.timeframe == "1d" for j in jobs)


def test_qv_backfill_prints_the_plan_and_queues_it(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path / "qv"), "backfill", "AAA", "BBB", "--start",
            "2024-01-02", "--end", "2024-03-28", "-p", "synthetic"]  # fmt: skip
    shown = runner.invoke(app, [*args, "--plan"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "backfill plan 1d" in shown.output and "synthetic" in shown.output
    assert "2 symbols with 2 gaps" in shown.output
    queued = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert queued.exit_code == 0, queued.output
    assert "queued" in queued.output
    refused = runner.invoke(app, ["--data-dir", str(tmp_path / "qv"), "backfill", "--plan"])
    assert refused.exit_code == 2


def test_with_the_hosts_costs_the_plan_plays_the_backfill_out(tmp_path: Path) -> None:
    quota: Any = {"limits": {"paid": ["100/second"]}, "margin_s": 0.0}
    one: Any = {"fetch_concurrency": 1}
    settings = Settings(data_dir=tmp_path / "qv", ingest=one, resilience=quota)
    with Runtime.from_settings(settings, clock=TestClock(NOW), registry=_registry()) as rt:
        _plays_out(rt)


def _plays_out(rt: Runtime) -> None:
    # one fetch at a time per slot
    symbols = [f"S{i:02d}" for i in range(30)]
    args = ("2024-01-02", "2024-01-31", "1d", ["paid"])
    bounds = rt.backfill.plan(symbols, *args, workers=2, latency_s=0.05, task_cost_s=0.1)
    host = HostCosts(worker_s_per_task=0.1, provider_s_per_call=0.01, store_s_per_task=0.03,
                     cpus=2)  # fmt: skip
    played = rt.backfill.plan(symbols, *args, workers=2, latency_s=0.05, host=host)
    (tasks,) = played.providers["tasks"].to_list()
    want = rt.settings.workers.poll_s + simulate(Scenario(
        tasks, played.calls, workers=2, concurrency=rt.settings.workers.concurrency,
        latency_s=0.05, costs=host, windows=((100, 1.0),),
    ))  # fmt: skip
    assert played.predicted_s == pytest.approx(want)
    # the simulator's and the database's CPU, and the slots' GIL, cost time the bounds miss
    assert played.predicted_s > bounds.predicted_s


def test_the_plan_plays_a_tasks_calls_in_flight_and_adds_the_jobs_fixed_seconds(
    tmp_path: Path,
) -> None:
    quota: Any = {"limits": {"paid": ["100/second"]}, "margin_s": 0.0}
    two: Any = {"fetch_concurrency": 2}
    settings = Settings(data_dir=tmp_path / "qv", ingest=two, resilience=quota)
    with Runtime.from_settings(settings, clock=TestClock(NOW), registry=_registry()) as rt:
        symbols = [f"S{i:02d}" for i in range(30)]
        args = ("2024-01-02", "2024-01-31", "1d", ["paid"])
        host = HostCosts(worker_s_per_task=0.1, cpus=2, job_s=1.5)
        played = rt.backfill.plan(symbols, *args, workers=1, latency_s=0.05, host=host)
        (tasks,) = played.providers["tasks"].to_list()
        one = Scenario(tasks, played.calls, workers=1, concurrency=rt.settings.workers.concurrency,
                       latency_s=0.05, costs=host, windows=((100, 1.0),))  # fmt: skip
        overlapped = simulate(replace(one, fetch_concurrency=2))
        assert played.predicted_s == pytest.approx(rt.settings.workers.poll_s + 1.5 + overlapped)
        assert overlapped < simulate(one)  # parsing while calls wait


def test_a_measured_time_per_task_is_one_workers_and_the_plan_adds_what_more_workers_change(
    tmp_path: Path,
) -> None:
    quota: Any = {"limits": {"paid": ["100/second"]}, "margin_s": 0.0}
    one: Any = {"fetch_concurrency": 1, "symbols_per_batch": 10}
    settings = Settings(data_dir=tmp_path / "qv", ingest=one, resilience=quota)
    with Runtime.from_settings(settings, clock=TestClock(NOW), registry=_registry()) as rt:
        symbols = [f"S{i:03d}" for i in range(200)]  # 20 tasks of 10 calls
        args = ("2024-01-02", "2024-01-31", "1d", ["paid"])
        host = HostCosts(worker_s_per_task=0.1, provider_s_per_call=0.004,
                         store_s_per_task=0.02, cpus=2, task_s=0.43, job_s=0.1)  # fmt: skip
        pickup = rt.settings.workers.poll_s
        each = rt.settings.workers.concurrency
        solo = rt.backfill.plan(symbols, *args, workers=1, latency_s=0.05, host=host)
        (terms,) = solo.model.values()
        # one worker: the measured 0.43 s a task, 20 of them, and the job's fixed seconds
        assert solo.predicted_s == pytest.approx(pickup + 0.1 + 20 * 0.43, rel=1e-6)
        assert terms["task_s"] == 0.43 and terms["workers_s"] == pytest.approx(8.6)
        assert (terms["job_s"], terms["pickup_s"]) == (0.1, pickup)
        # four workers: the played-out time is the fitted model's, and it is more than the
        # workers alone or the quota alone would take (they meet, and the CPUs are shared)
        four = rt.backfill.plan(symbols, *args, workers=4, latency_s=0.05, host=host)
        fitted = fit(host, calls_per_task=10, concurrency=each, latency_s=0.05)
        want = simulate(Scenario(20, 200, workers=4, concurrency=each, latency_s=0.05,
                                 costs=fitted, windows=((100, 1.0),)))  # fmt: skip
        assert four.predicted_s == pytest.approx(pickup + 0.1 + want)
        (more,) = four.model.values()
        assert more["played_s"] > max(more["workers_s"], more["calls_s"])
