"""API fast path benchmark (not a test): CPU per cached bars answer, in process, beside a bare app.

Calls the app's ASGI entry directly (no sockets) for a cached `GET /api/v1/bars` with an API
key (auth, entitlements, rate limit, headers and metrics as in `qv serve`), alternating with
a bare ASGI app that sends the same bytes. Between calls a 4 MB buffer is written so that
each call starts with cold CPU caches, as under wrk where the kernel and the client run in
between; without that the hot loop hides most of the cost. Reports the median and quartiles
of process CPU time per call and the fast path's extra over the bare app: a measure of our
own per-request work that other processes on the machine sway much less than requests/s.

Usage: python perf/api_fastpath.py [--calls 4000] [--runs 3] [--limiter redis|memory];
prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantivista.api.app import create_app
from quantivista.config import Settings
from quantivista.platform import Platform
from storage import universe

_QUERY = b"symbols=S0000&start=2023-01-01&end=2023-12-31"
_THRASH = bytearray(4 << 20)

Message = MutableMapping[str, Any]


def _scope(app: Any, key: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/api/v1/bars", "raw_path": b"/api/v1/bars",
        "query_string": _QUERY, "root_path": "", "state": {}, "app": app,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"x-api-key", key)],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def _measure(settings: Settings, key: str, calls: int) -> dict[str, float]:
    app = create_app(settings)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async with app.router.lifespan_context(app):
        await app(_scope(app, key.encode()), receive, send)  # a miss: fills the cache
        assert sent[0]["status"] == 200, sent[0]
        body = sent[1]["body"]

        async def bare(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})

        spent: dict[str, list[int]] = {"api": [], "bare": []}
        for round_ in range(calls + 300):
            for name, target in (("api", app), ("bare", bare)):
                sent.clear()
                _THRASH[::64] = bytes(len(_THRASH) // 64)  # evict the CPU caches
                started = time.process_time_ns()
                await target(_scope(app, key.encode()), receive, send)
                if round_ >= 300:  # after the warm-up
                    spent[name].append(time.process_time_ns() - started)
            assert sent[0]["status"] == 200 and sent[1]["body"] is body
    q = {name: [v / 1e3 for v in statistics.quantiles(got, n=4)] for name, got in spent.items()}
    return {
        "api_us_p25": round(q["api"][0], 2), "api_us_median": round(q["api"][1], 2),
        "api_us_p75": round(q["api"][2], 2), "bare_us_median": round(q["bare"][1], 2),
        "extra_us_median": round(q["api"][1] - q["bare"][1], 2),
    }  # fmt: skip


def main() -> None:
    """Run the measurement `--runs` times and print one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limiter", choices=["redis", "memory"], default="redis")
    args = parser.parse_args()
    out: dict[str, Any] = {"bench": "api_fastpath", "load_avg_1m": round(os.getloadavg()[0], 2),
                           "limiter": args.limiter}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "qv", log_level="WARNING")
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update={"rate_limits": ["1000000/second"]})}
        )
        if args.limiter == "redis":  # shared limits, leased a block per Redis call
            resilience = settings.resilience.model_copy(
                update={"backend": "redis", "redis_prefix": f"qv-perf:apiperf:{os.getpid()}"}
            )
            settings = settings.model_copy(update={"resilience": resilience})
        with Platform.from_settings(settings) as p:
            p.write_bars(universe(1, 1), source="perf", timeframe="1d")
            key = p.runtime.auth.create_client("perf", ["read:bars"]).api_key
        out["runs"] = [asyncio.run(_measure(settings, key, args.calls)) for _ in range(args.runs)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
