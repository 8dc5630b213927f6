"""Injectable clocks: nothing in the platform calls `datetime.now()` directly."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "SystemClock", "TestClock"]


class Clock(Protocol):
    """What rate limiters, breakers, schedulers and writers ask about time."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware in UTC."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for `seconds` (a test clock advances instead)."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class TestClock:
    """A clock that only moves when told to; `sleep` advances it instantly."""

    __test__ = False  # not a pytest test class

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("TestClock needs a timezone-aware start time")
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._mono += seconds
            self._now += timedelta(seconds=seconds)
