"""Backfill through the router with one provider down and the primary failing 20% of calls.

In-process stand-in for the issue-3 target (the HTTP version runs against the provider
simulator): 100 symbols x 5 years of daily bars, providers `dead` (always 503), `flaky`
(the simulated market, 20% transient errors, limited to 20 calls/second) and `synthetic`
(the same market, last resort). Prints one JSON line: bars retrieved vs expected, calls per
provider, limit violations seen by `flaky`, breaker transitions, wall time.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from bisect import bisect_right
from typing import ClassVar

from quantivista.clock import SystemClock
from quantivista.config import (
    IngestSettings,
    ResilienceSettings,
    RetrySettings,
    Settings,
    SimulatorSettings,
)
from quantivista.errors import TransientProviderError
from quantivista.platform import Platform
from quantivista.providers.base import BarRequest, FetchResult, Provider, ProviderCapabilities
from quantivista.providers.registry import ProviderRegistry
from quantivista.providers.synthetic import SyntheticProvider

SYMBOLS, YEARS, FAULT_RATE, LIMIT_PER_S = 100, 5, 0.2, 20


class Dead(Provider):
    """Always down."""

    name = "dead"

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        raise TransientProviderError("503 service unavailable", provider=self.name)


class Flaky(SyntheticProvider):
    """The simulated market behind a vendor that fails 20% of calls; logs call times."""

    name = "flaky"
    calls: ClassVar[list[float]] = []
    _lock = threading.Lock()
    _rng = random.Random(7)

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        with self._lock:
            Flaky.calls.append(time.monotonic())
            fail = self._rng.random() < FAULT_RATE
        if fail:
            raise TransientProviderError("502 bad gateway", provider=self.name)
        return super().fetch_bars(request)


def _caps(priority: int) -> ProviderCapabilities:
    base = SyntheticProvider.capabilities
    return ProviderCapabilities(
        asset_classes=base.asset_classes,
        timeframes=base.timeframes,
        history_start=base.history_start,
        priority=priority,
    )


Dead.capabilities = _caps(1)
Flaky.capabilities = _caps(10)


def _max_in_window(times: list[float], period: float) -> int:
    times = sorted(times)
    return max((bisect_right(times, t) - bisect_right(times, t - period) for t in times), default=0)


def main() -> None:
    registry = ProviderRegistry(load_entry_points=False)
    for cls in (Dead, Flaky, SyntheticProvider):
        registry.register(cls)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=tmp,
            simulator=SimulatorSettings(universe_size=SYMBOLS + 20),
            ingest=IngestSettings(fetch_concurrency=4),
            resilience=ResilienceSettings(
                limits={"flaky": [f"{LIMIT_PER_S}/second"]},
                retry=RetrySettings(max_attempts=3, base_delay_s=0.05),
            ),
        )
        with Platform.from_settings(settings, clock=SystemClock(), registry=registry) as p:
            backup = p.provider("synthetic")
            assert isinstance(backup, SyntheticProvider)
            symbols = backup.symbols()[:SYMBOLS]
            last = p.clock.now().date().replace(month=1, day=1)
            first = last.replace(year=last.year - YEARS)
            expected = sum(
                backup.fetch_bars(BarRequest.of(s, first, last)).bars.height for s in symbols
            )
            t0 = time.perf_counter()
            job = p.ingest(symbols, first, last, providers=["dead", "flaky", "synthetic"])
            wall = time.perf_counter() - t0
            stored = p.bars(symbols, first, last).height
            snap = {r["provider"]: r for r in p.runtime.acquisition.analytics.snapshot().to_dicts()}
            transitions = p.runtime.acquisition.analytics.transitions_frame()
    print(
        json.dumps(
            {
                "bench": "failover",
                "symbols": SYMBOLS,
                "years": YEARS,
                "job_status": job.status.value,
                "expected_bars": expected,
                "stored_bars": stored,
                "retrieved_pct": round(100 * stored / expected, 3),
                "calls": {k: v["calls"] for k, v in snap.items()},
                "errors": {k: v["errors_by_kind"] for k, v in snap.items()},
                "flaky_limit_per_s": LIMIT_PER_S,
                "flaky_max_calls_in_1s": _max_in_window(Flaky.calls, 1.0),
                "breaker_transitions": [
                    f"{r['provider']}:{r['from_state']}->{r['to_state']}"
                    for r in transitions.to_dicts()
                ],
                "wall_s": round(wall, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
