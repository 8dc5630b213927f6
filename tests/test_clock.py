"""Clocks: the real one is UTC-aware and monotonic; the test clock moves only when told."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from quantivista.clock import Clock, SystemClock, TestClock

START = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


def test_system_clock_now_is_aware_utc_and_current() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    after = datetime.now(UTC)
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after


def test_system_clock_monotonic_does_not_go_backwards() -> None:
    clock = SystemClock()
    readings = [clock.monotonic() for _ in range(100)]
    assert readings == sorted(readings)


def test_system_clock_sleep_blocks_and_ignores_non_positive() -> None:
    clock = SystemClock()
    t0 = time.monotonic()
    clock.sleep(0)
    clock.sleep(-5)
    assert time.monotonic() - t0 < 0.5
    clock.sleep(0.02)
    assert time.monotonic() - t0 >= 0.02


def test_test_clock_defaults_to_a_fixed_aware_instant() -> None:
    clock = TestClock()
    assert clock.now() == datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    assert clock.monotonic() == 0.0


def test_test_clock_stands_still_until_advanced() -> None:
    clock = TestClock(START)
    assert clock.now() == START
    assert clock.now() == START
    clock.advance(90)
    assert clock.now() == START + timedelta(seconds=90)
    assert clock.monotonic() == 90.0


def test_test_clock_sleep_advances_instantly() -> None:
    clock = TestClock(START)
    t0 = time.monotonic()
    clock.sleep(3600)
    assert time.monotonic() - t0 < 0.5
    assert clock.now() == START + timedelta(hours=1)
    assert clock.monotonic() == 3600.0


def test_test_clock_keeps_the_start_timezone() -> None:
    tz = timezone(timedelta(hours=-5))
    clock = TestClock(datetime(2024, 1, 2, 9, 30, tzinfo=tz))
    clock.advance(60)
    assert clock.now() == datetime(2024, 1, 2, 14, 31, tzinfo=UTC)


def test_test_clock_refuses_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TestClock(datetime(2024, 1, 2, 9, 30))


def test_test_clock_cannot_go_backwards() -> None:
    clock = TestClock(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.now() == START
    assert clock.monotonic() == 0.0


def test_test_clock_advances_are_not_lost_across_threads() -> None:
    clock = TestClock(START)

    def work() -> None:
        for _ in range(1000):
            clock.advance(0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.monotonic() == 4000.0
    assert clock.now() == START + timedelta(seconds=4000)


def test_both_clocks_fulfil_the_protocol() -> None:
    def read(clock: Clock) -> tuple[datetime, float]:
        return clock.now(), clock.monotonic()

    assert read(TestClock(START)) == (START, 0.0)
    now, mono = read(SystemClock())
    assert now.tzinfo is not None
    assert mono > 0


def test_test_clock_is_not_collected_as_a_test_class() -> None:
    assert TestClock.__test__ is False
