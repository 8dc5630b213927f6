"""Parser throughput of the vendor clients on large synthetic bodies (prints one JSON line)."""

from __future__ import annotations

import json
import time

from quantivista.providers.alpha_vantage import parse_time_series
from quantivista.providers.polygon import parse_aggs
from quantivista.providers.yahoo import parse_chart

N = 100_000


def _timed(label: str, func: object, *args: object) -> tuple[str, float]:
    start = time.perf_counter()
    func(*args)  # type: ignore[operator]
    return label, N / (time.perf_counter() - start)


def main() -> None:
    t0 = 1_000_000_000
    polygon = json.dumps({"status": "OK", "results": [
        {"o": 1.0 + i % 7, "h": 9.0, "l": 0.5, "c": 2.0, "v": 1000 + i, "vw": 1.5, "n": 3,
         "t": (t0 + 60 * i) * 1000} for i in range(N)]})  # fmt: skip
    quote = {k: [1.0 + i % 5 for i in range(N)] for k in ("open", "high", "low", "close", "volume")}
    yahoo = json.dumps({"chart": {"error": None, "result": [{
        "meta": {"dataGranularity": "1m", "exchangeTimezoneName": "America/New_York"},
        "timestamp": [t0 + 60 * i for i in range(N)],
        "events": {"splits": {"1": {"date": t0 + 60 * N // 2, "numerator": 4, "denominator": 1}}},
        "indicators": {"quote": [quote]}}]}})  # fmt: skip
    stamps = [time.strftime("%Y-%m-%d %H:%M:00", time.gmtime(t0 + 60 * i)) for i in range(N)]
    row = {
        "1. open": "1.5",
        "2. high": "2.0",
        "3. low": "1.0",
        "4. close": "1.7",
        "5. volume": "10",
    }
    alpha = json.dumps({"Time Series (1min)": dict.fromkeys(stamps, row)})
    rates = dict(
        [
            _timed("polygon_bars_per_s", parse_aggs, polygon, "X", "1m"),
            _timed("yahoo_bars_per_s", parse_chart, yahoo, "X"),
            _timed("alpha_vantage_bars_per_s", parse_time_series, alpha, "X"),
        ]
    )
    print(
        json.dumps(
            {"bench": "provider_parsers", "bars": N, **{k: round(v) for k, v in rates.items()}}
        )
    )


if __name__ == "__main__":
    main()
