"""Throughput and latency of the provider simulator over real local sockets (prints JSON).

One client, sequential calls: a one-year daily window per call for each vendor format.
"""

from __future__ import annotations

import json
import time

import httpx

from quantivista.config import SimulatorServerSettings
from quantivista.providers.simulator.server import run_simulator

CALLS = 100


def main() -> None:
    settings = SimulatorServerSettings(seed=1, universe_size=20, as_of="2026-11-23")
    results: dict[str, object] = {"bench": "simulator_server", "calls_per_provider": CALLS}
    t_start = time.perf_counter()
    with run_simulator(settings) as sim, httpx.Client(timeout=30) as client:
        results["startup_s"] = round(time.perf_counter() - t_start, 3)
        symbols = sim.market.symbols()
        requests = {
            "alpha_vantage": lambda s: (
                sim.base_url("alpha_vantage") + "/query",
                {"function": "TIME_SERIES_DAILY", "symbol": s, "apikey": "k"},
            ),
            "yahoo": lambda s: (
                sim.base_url("yahoo") + f"/v8/finance/chart/{s}",
                {"interval": "1d", "range": "1y", "events": "div,splits"},
            ),
            "finnhub": lambda s: (
                sim.base_url("finnhub") + "/api/v1/stock/candle",
                {"symbol": s, "resolution": "D", "from": 1_731_000_000, "to": 1_763_000_000,
                 "token": "k"},
            ),
            "iex_cloud": lambda s: (
                sim.base_url("iex_cloud") + f"/stable/stock/{s}/chart/1y", {"token": "k"}
            ),
            "polygon": lambda s: (
                sim.base_url("polygon") + f"/v2/aggs/ticker/{s}/range/1/day/2025-11-01/2026-11-01",
                {"apiKey": "k"},
            ),
        }  # fmt: skip
        for name, build in requests.items():
            latencies = []
            for i in range(CALLS):
                url, params = build(symbols[i % len(symbols)])
                t0 = time.perf_counter()
                r = client.get(url, params=params)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200, (name, r.status_code, r.text[:200])
            latencies.sort()
            results[name] = {
                "req_per_s": round(CALLS / sum(latencies), 1),
                "p50_ms": round(latencies[CALLS // 2] * 1000, 2),
                "p95_ms": round(latencies[int(CALLS * 0.95)] * 1000, 2),
            }
        stats = sim.stats()["providers"]
        results["violations"] = sum(p["violations"] for p in stats.values())
    print(json.dumps(results))


if __name__ == "__main__":
    main()
