"""Fake providers: scheduled outcomes (router and breaker tests), a slow simulated market."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import polars as pl

from quantivista.clock import TestClock
from quantivista.model.instruments import AssetClass
from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.providers.base import BarRequest, FetchResult, Provider, ProviderCapabilities
from quantivista.providers.synthetic import SyntheticProvider

__all__ = ["FakeProvider", "Outcome", "SlowSyntheticProvider", "capabilities"]

Outcome = Exception | None  # None: answer with bars


def capabilities(*, cost: float = 0.0, priority: int = 100) -> ProviderCapabilities:
    """Return daily-and-minute equity capabilities with the given cost and priority."""
    return ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1d", "1m"}),
        cost_per_call=cost,
        priority=priority,
    )


class FakeProvider(Provider):
    """Answers from a schedule of outcomes (the last one repeats); counts its calls.

    `latency_s` advances the test clock during a call; `block` makes a call wait on an event.
    """

    name = "fake"
    capabilities = capabilities()

    def __init__(
        self,
        name: str,
        schedule: Sequence[Outcome] = (None,),
        *,
        clock: TestClock | None = None,
        latency_s: float = 0.0,
        caps: ProviderCapabilities | None = None,
        block: threading.Event | None = None,
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.schedule = list(schedule) or [None]
        self.clock = clock
        self.latency_s = latency_s
        if caps is not None:
            self.capabilities = caps  # type: ignore[misc]
        self.block = block
        self.calls: list[BarRequest] = []
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        with self._lock:
            index = min(len(self.calls), len(self.schedule) - 1)
            self.calls.append(request)
        self.entered.set()
        if self.block is not None:
            self.block.wait(5)
        if self.clock is not None and self.latency_s:
            self.clock.advance(self.latency_s)
        outcome = self.schedule[index]
        if outcome is not None:
            raise outcome
        bars = pl.DataFrame(
            {"symbol": [request.symbol], "ts": [request.start], "close": [1.0]}
        ).with_columns(pl.col("ts").cast(BAR_POLARS_SCHEMA["ts"]))
        return FetchResult(bars=bars, provider=self.name)


class SlowSyntheticProvider(SyntheticProvider):
    """The simulated market, answering each request after `delay_s` seconds.

    Registered as "slow" by tests that need an ingestion in flight long enough to stop it
    (e.g. `kill -9` a process mid-job).
    """

    name = "slow"
    delay_s = 0.2

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        time.sleep(self.delay_s)
        result = super().fetch_bars(request)
        result.provider = self.name
        return result
