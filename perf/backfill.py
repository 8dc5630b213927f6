"""Backfill 100 symbols x 5 years of daily bars through the real clients and the simulator.

The issue-3 target, end to end over local sockets: `run_simulator` serves the simulated
market in the vendors' wire formats; `Platform.ingest` calls it through the real HTTP
clients, the rate limiter, the circuit breakers and the router. The primary (Yahoo) fails
20% of calls (5xx, HTTP-200 error bodies, malformed bodies, hangs past the client timeout),
IEX Cloud is down, and every vendor's rate-limit windows (the free tiers, scaled down so the
run takes about a minute) are enforced by the simulator and configured identically in our
limiter. Usage: `python perf/backfill.py [SEED]`. Prints one JSON line: expected bars (from
the same `SimulatedMarket`), bars stored and how many equal the market exactly, the share,
violations counted by the simulator, breaker transitions (and whether the analytics saw
every one) and calls/errors per provider, elapsed time. Exits 1 when a target is missed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import timedelta

import polars as pl

from quantivista.config import (
    BreakerSettings,
    IngestSettings,
    ProviderFaultSettings,
    RateWindow,
    ResilienceSettings,
    RetrySettings,
    Settings,
    SimulatorServerSettings,
)
from quantivista.platform import Platform
from quantivista.providers.simulator import run_simulator
from quantivista.providers.simulator.wiring import settings_for_simulator

SYMBOLS, YEARS, UNIVERSE = 100, 5, 120
PROVIDERS = ["yahoo", "iex_cloud", "polygon", "finnhub", "alpha_vantage"]
PRIMARY, DOWN = "yahoo", "iex_cloud"
CLIENT_TIMEOUT_S, HANG_S = 0.5, 1.0


def _w(calls: int, seconds: float) -> RateWindow:
    return RateWindow(calls=calls, seconds=seconds)


# free tiers scaled down (a minute becomes a second, a day a minute) so the run stays short
LIMITS: dict[str, tuple[RateWindow, ...]] = {
    "yahoo": (_w(10, 1), _w(300, 60)),
    "iex_cloud": (_w(100, 1),),
    "polygon": (_w(5, 1),),
    "finnhub": (_w(30, 1), _w(60, 60)),
    "alpha_vantage": (_w(1, 1), _w(25, 60)),
}


def simulator_config(seed: int = 42) -> SimulatorServerSettings:
    """The simulator of this benchmark: 20% faults on the primary, one vendor down."""
    faults = {name: ProviderFaultSettings(rate_limits=LIMITS[name]) for name in LIMITS}
    faults[PRIMARY] = ProviderFaultSettings(
        rate_limits=LIMITS[PRIMARY],
        error_rate=0.06,
        error_body_rate=0.05,
        malformed_rate=0.05,
        timeout_rate=0.04,
        hang_s=HANG_S,
    )
    faults[DOWN] = ProviderFaultSettings(rate_limits=LIMITS[DOWN], down=True)
    return SimulatorServerSettings(seed=seed, universe_size=UNIVERSE, providers=faults)


def exact_matches(stored: pl.DataFrame, expected: pl.DataFrame) -> int:
    """Count stored bars whose OHLCV equal the market's (prices to 1e-9 relative)."""
    keys = ["symbol", "ts"]
    cols = ["open", "high", "low", "close", "volume"]
    joined = stored.select(keys + cols).join(
        expected.select(keys + cols), on=keys, how="inner", suffix="_want"
    )
    ok = pl.lit(True)
    for c in cols:
        ok = ok & ((pl.col(c) - pl.col(f"{c}_want")).abs() <= 1e-9 * pl.col(f"{c}_want").abs())
    return int(joined.select(ok.sum()).item())


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 42
    config = simulator_config(seed)
    with run_simulator(config) as sim, tempfile.TemporaryDirectory() as tmp:
        market = sim.market
        last = market.sessions[-1]
        first = last.replace(year=last.year - YEARS) + timedelta(days=1)
        # names that trade over the whole window (no rename or merger inside it)
        steady = set(market.symbols(first)) & set(market.symbols(last))
        symbols = [s for s in market.symbols(last) if s in steady][:SYMBOLS]
        expected = pl.concat([market.daily(s, first, last) for s in symbols])
        base = Settings(
            data_dir=tmp,
            ingest=IngestSettings(fetch_concurrency=4),
            resilience=ResilienceSettings(
                breaker=BreakerSettings(reset_timeout_s=5.0),
                retry=RetrySettings(max_attempts=3, base_delay_s=0.05, max_delay_s=1.0),
            ),
        )
        settings = settings_for_simulator(base, sim, PROVIDERS, timeout_s=CLIENT_TIMEOUT_S)
        with Platform.from_settings(settings) as p:
            t0 = time.perf_counter()
            job = p.ingest(symbols, first, last, providers=PROVIDERS)
            elapsed = time.perf_counter() - t0
            stored = p.bars(symbols, first, last)
            snap = {r["provider"]: r for r in p.runtime.acquisition.analytics.snapshot().to_dicts()}
            transitions = p.runtime.acquisition.analytics.transitions_frame().to_dicts()
            # every transition the breakers made, as the analytics saw it (none lost)
            made = [
                (t.provider, str(t.from_state), str(t.to_state))
                for t in p.runtime.acquisition.breakers.transitions()
            ]
            seen = [(t["provider"], t["from_state"], t["to_state"]) for t in transitions]
        served = sim.stats()["providers"]
    matched = exact_matches(stored, expected)
    report = {
        "bench": "backfill",
        "symbols": len(symbols),
        "years": YEARS,
        "sessions": f"{first}..{last}",
        "job_status": job.status.value,
        "job_errors": job.error_details[:5],
        "expected_bars": expected.height,
        "stored_bars": stored.height,
        "exact_bars": matched,
        "retrieved_pct": round(100 * matched / expected.height, 3),
        "violations": {k: v["violations"] for k, v in served.items()},
        "sim_calls": {k: v["calls"] for k, v in served.items()},
        "sim_faults": {k: v["faults"] for k, v in served.items() if v["faults"]},
        "calls": {k: v["calls"] for k, v in snap.items()},
        "errors": {k: v["errors_by_kind"] for k, v in snap.items()},
        "breaker_transitions": [
            f"{t['provider']}:{t['from_state']}->{t['to_state']}" for t in transitions
        ],
        "all_transitions_in_analytics": sorted(made) == sorted(seen),
        "elapsed_s": round(elapsed, 1),
    }
    print(json.dumps(report))
    missed = (
        report["retrieved_pct"] < 99.9
        or any(report["violations"].values())
        or not report["all_transitions_in_analytics"]
    )
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
