"""Fixtures for provider tests: a test clock and fake providers on it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from quantivista.clock import TestClock
from quantivista.testing.fake_providers import FakeProvider, Outcome

MakeFake = Callable[..., FakeProvider]


@pytest.fixture
def clock() -> TestClock:
    """Return a test clock at 2024-06-03 14:30 UTC."""
    return TestClock(datetime(2024, 6, 3, 14, 30, tzinfo=UTC))


@pytest.fixture
def fake(clock: TestClock) -> MakeFake:
    """Return a builder of fake providers on the test clock."""

    def build(name: str, *schedule: Outcome, **kw: object) -> FakeProvider:
        return FakeProvider(name, schedule or (None,), clock=clock, **kw)  # type: ignore[arg-type]

    return build
