"""The embedded end-to-end path: provider -> validate -> lake -> event -> job and report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import polars as pl
import pytest

from quantivista.bus.events import ActionsIngested, BarsIngested, Event
from quantivista.model.jobs import JobStatus
from quantivista.platform import Platform
from quantivista.providers.synthetic import SyntheticProvider

OpenPlatform = Callable[..., Platform]


def _market(p: Platform) -> SyntheticProvider:
    provider = p.provider("synthetic")
    assert isinstance(provider, SyntheticProvider)
    return provider


def test_ingest_stores_every_bar_and_reports_a_clean_job(platform: Platform) -> None:
    syms = _market(platform).symbols()[:4]
    events: list[Event] = []
    platform.runtime.bus.subscribe(">", events.append)
    job = platform.ingest(syms, "2024-01-01", "2024-12-31")
    assert job.status is JobStatus.SUCCEEDED
    sessions = platform.calendar().sessions("2024-01-01", "2024-12-31").len()
    assert job.records_processed == 4 * sessions == 4 * 252
    assert job.records_failed == 0
    assert job.quality is not None and job.quality.quality_score == 1.0
    stored = platform.bars(syms, "2024-01-01", "2024-12-31")
    assert stored.height == 4 * 252
    assert (stored["job_id"] == job.job_id).all()
    ingested = [e for e in events if isinstance(e, BarsIngested)]
    assert len(ingested) == 1 and ingested[0].rows_written == 4 * 252
    assert sorted(ingested[0].symbols) == sorted(syms)
    assert platform.job(job.job_id).status is JobStatus.SUCCEEDED


def test_the_same_ingest_twice_leaves_the_same_rows(platform: Platform) -> None:
    syms = _market(platform).symbols()[:3]
    platform.ingest(syms, "2023-01-01", "2024-06-30")
    first = platform.bars(syms, "2023-01-01", "2024-06-30")
    again = platform.ingest(syms, "2023-01-01", "2024-06-30")
    second = platform.bars(syms, "2023-01-01", "2024-06-30")
    assert second.equals(first)  # knowledge time and lineage of unchanged rows are kept
    assert again.status is JobStatus.SUCCEEDED


def test_intraday_ingest_lands_in_its_own_timeframe(platform: Platform) -> None:
    sym = _market(platform).symbols()[0]
    job = platform.ingest(sym, "2026-11-16", "2026-11-20", "1m")
    assert job.records_processed == 5 * 390
    assert platform.bars(sym, "2026-11-16", "2026-11-20", "1m").height == 5 * 390
    assert platform.bars(sym, "2026-11-16", "2026-11-20", "1d").is_empty()


def test_faulty_bars_are_quarantined_with_reasons_and_never_lost(
    open_platform: OpenPlatform,
) -> None:
    p = open_platform(fault_rate=0.02)
    syms = _market(p).symbols()[:5]
    job = p.ingest(syms, "2020-01-01", "2026-11-20")
    assert job.status is JobStatus.PARTIAL
    assert job.records_failed > 0
    rejected = p.quarantine(job_id=job.job_id)
    assert rejected.height == job.records_failed
    assert rejected["rule"].is_not_null().all() and rejected["reason"].str.len_chars().min() > 0
    stored = p.bars(syms, "2020-01-01", "2026-11-20")
    # every input row is either stored or quarantined (exact duplicates aside)
    assert stored.height + rejected.height >= job.records_processed - job.records_failed
    assert (stored["high"] >= stored["low"]).all() and (stored["volume"] >= 0).all()
    assert job.quality is not None and job.quality.quality_score < 1.0
    assert job.quality.rule_counts["ohlc_inconsistent"] > 0


def test_unknown_symbols_fail_the_job_with_details(platform: Platform) -> None:
    job = platform.ingest(["NOSUCHX"], "2024-01-01", "2024-01-31")
    assert job.status is JobStatus.FAILED
    assert job.error_details[0]["kind"] == "SymbolNotFoundError"
    good = _market(platform).symbols()[0]
    mixed = platform.ingest([good, "NOSUCHX"], "2024-01-01", "2024-01-31")
    assert mixed.status is JobStatus.PARTIAL


def test_corporate_actions_arrive_with_the_bars_and_are_announced(platform: Platform) -> None:
    events: list[ActionsIngested] = []
    platform.runtime.bus.subscribe("actions.*", lambda e: events.append(e))  # type: ignore[arg-type]
    market = _market(platform).market
    payers = market.actions().filter(pl.col("action_type") == "dividend")["symbol"].unique()
    sym = payers.sort()[0]
    platform.ingest(sym, "2024-01-01", "2024-12-31")
    actions = platform.actions(sym)
    assert actions.height >= 4 and (actions["ex_date"] >= date(2024, 1, 1)).all()
    assert events and events[0].rows == actions.height
    platform.ingest(sym, "2024-01-01", "2024-12-31")
    assert len(events) == 1  # nothing new the second time


def test_progress_is_reported_per_symbol(platform: Platform) -> None:
    seen: list[tuple[str, int, int]] = []
    syms = _market(platform).symbols()[:3]
    platform.ingest(
        syms, "2024-01-01", "2024-01-31", progress=lambda s, d, t: seen.append((s, d, t))
    )
    assert [d for _, d, _ in seen] == [1, 2, 3]
    assert {s for s, _, _ in seen} == set(syms)


def test_ingest_refuses_no_symbols(platform: Platform) -> None:
    with pytest.raises(Exception, match="no symbols"):
        platform.ingest([], "2024-01-01", "2024-01-31")
