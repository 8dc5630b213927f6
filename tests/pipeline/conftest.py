"""Platforms on a temporary directory with a small simulated market and a fixed clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.platform import Platform

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
OpenPlatform = Callable[..., Platform]


@pytest.fixture
def open_platform(tmp_path: Path) -> Iterator[OpenPlatform]:
    opened: list[Platform] = []

    def build(**simulator: Any) -> Platform:
        sim = {"seed": 3, "universe_size": 10, **simulator}
        settings = Settings(data_dir=tmp_path / "qv", simulator=sim)
        p = Platform.from_settings(settings, clock=TestClock(NOW))
        opened.append(p)
        return p

    yield build
    for p in opened:
        p.close()


@pytest.fixture
def platform(open_platform: OpenPlatform) -> Platform:
    return open_platform()
