"""Streaming: trades -> 1-minute bars -> validated, stored and published, in one run.

Prints one JSON line:
- `inproc_trades_per_s`: trades through the whole pipeline in-process (aggregation, store of
  released bars, publish of trades and bars to the in-memory broker), micro-batches of 20,000;
- `inproc_bus_events_per_s`: events through the in-process bus to one subscriber;
- `memory_broker_msgs_per_s`: publish + fetch + ack on the in-memory broker (100-byte messages);
- over NATS (127.0.0.1:4222, skipped if unreachable) at `RATE` trades/s for `SECONDS` s with
  10 ms micro-batches: the achieved rate and the p50/p99/max latency from a trade's arrival
  to its micro-batch's bars stored and published (`nats_batch_*`: every micro-batch;
  `nats_bar_*`: micro-batches that released bars). Event time runs 30x faster than the clock
  so that minutes close every two seconds (many bar releases in a short run).
  `nats_stage_p50_ms` / `nats_stage_p99_ms`: the budget per stage (fold = trades published
  and folded into bars; publish_raw; store = validate + store write; publish = normalized
  bars), so the store's share shows on its own;
- `nats_peer_p99_ms`: the physical limit in the same run: a bare JetStream publish of 4
  messages of the same size, waiting for the acks (what one release's publish cannot beat);
- `load`: the 1-minute load average before and after (the machine is shared).
Targets: p99 < 50 ms at 20,000 trades/s over NATS; in-process >= 200,000 events/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import numpy as np
import polars as pl

from quantivista.bus.base import Broker
from quantivista.bus.events import BarsIngested
from quantivista.bus.memory import InMemoryBus
from quantivista.bus.memory_broker import MemoryBroker
from quantivista.config import Settings, StorageSettings
from quantivista.processing.trade_bars import TRADE_SCHEMA
from quantivista.providers.live import synthetic_trades
from quantivista.runtime import Runtime

SYMBOLS = [f"S{i:03d}" for i in range(50)]
RATE = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000  # `python perf/stream.py 2000`
SECONDS = 20.0
NATS = "nats://127.0.0.1:4222"


def _settings(data: Path, bus: str, batch_ms: int, backend: str = "lake") -> Settings:
    storage = StorageSettings(write_threads=1)
    if backend == "postgres":  # a schema of its own, dropped at the end
        storage = StorageSettings(backend="postgres", postgres_schema=f"perf_{uuid4().hex[:8]}")
    return Settings(
        data_dir=data,
        storage=storage,
        bus={"url": bus, "codec": "avro"},
        stream={"batch_ms": batch_ms, "lateness_s": 1.0, "idle_s": 3600.0},
    )


def inproc_pipeline(root: Path, n: int = 1_000_000, batch: int = 20_000) -> float:
    rng = np.random.default_rng(3)
    start = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
    frames = []
    base_us = int(start.timestamp() * 1e6)
    for i in range(n // batch):  # 20,000 trades per 100 ms of event time
        frames.append(
            pl.DataFrame(
                {
                    "symbol": np.array(SYMBOLS)[rng.integers(0, len(SYMBOLS), batch)],
                    "ts": pl.Series(
                        base_us + 100_000 * i + np.sort(rng.integers(0, 100_000, batch))
                    ).cast(pl.Datetime("us", "UTC")),
                    "price": rng.uniform(99, 101, batch),
                    "size": rng.integers(1, 500, batch).astype(float),
                    "provider": ["synthetic"] * batch,
                },
                schema=TRADE_SCHEMA,
            )
        )
    with Runtime.from_settings(_settings(root / "inproc", "memory://", 100)) as runtime:
        service = runtime.stream_service("synthetic")
        began = time.perf_counter()
        for frame in frames:
            service.process(frame)
        service.flush()
        took = time.perf_counter() - began
        service.close()
    return n / took


def inproc_bus(n: int = 300_000) -> float:
    bus = InMemoryBus()
    seen = []
    bus.subscribe("bars.>", seen.append)
    event = BarsIngested(occurred_at=datetime.now(UTC), job_id="j", source="s", timeframe="1m",
                         symbols=["A"], rows_written=1, rows_unchanged=0)  # fmt: skip
    began = time.perf_counter()
    for _ in range(n):
        bus.publish(event)
    took = time.perf_counter() - began
    assert len(seen) == n
    return n / took


def memory_broker(n: int = 200_000) -> float:
    broker = MemoryBroker()
    broker.create_topic("t", partitions=4)
    payload = b"x" * 100
    items = [(SYMBOLS[i % len(SYMBOLS)], payload, None) for i in range(1000)]
    sub = broker.subscribe("t", "g")
    began = time.perf_counter()
    done = 0
    while done < n:
        broker.publish_many("t", items)
        while True:
            got = sub.fetch(1000, timeout_s=0)
            if not got:
                break
            for m in got:
                sub.ack(m)
            done += len(got)
    return done / (time.perf_counter() - began)


def _reachable(name: str, port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def nats_latency(root: Path, backend: str) -> dict[str, float]:
    prefix = f"perf{uuid4().hex[:8]}"
    settings = _settings(root / backend, f"{NATS}?prefix={prefix}", 10, backend)
    with Runtime.from_settings(settings) as rt:
        service = rt.stream_service("synthetic")
        feed = synthetic_trades(SYMBOLS, rate=RATE, tick_s=0.002, time_scale=30.0)

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(SECONDS, stop.set)
            await service.run(feed, stop)

        began = time.perf_counter()
        asyncio.run(main())
        took = time.perf_counter() - began
        batch = np.array(service.latencies) * 1000
        bars = np.array(service.bar_latencies) * 1000
        tag = "nats" if backend == "lake" else f"nats_{backend}"
        out = {
            "nats_trades_per_s": round(service.stats.trades / took),
            "nats_bars": service.stats.bars + service.stats.corrections,
            "nats_batch_p50_ms": round(float(np.percentile(batch, 50)), 2),
            "nats_batch_p99_ms": round(float(np.percentile(batch, 99)), 2),
            "nats_bar_p50_ms": round(float(np.percentile(bars, 50)), 2) if bars.size else None,
            "nats_bar_p99_ms": round(float(np.percentile(bars, 99)), 2) if bars.size else None,
            "nats_bar_max_ms": round(float(bars.max()), 2) if bars.size else None,
            "nats_bar_batches": int(bars.size),
            "nats_stage_p50_ms": _percentiles(service.stage_times, 50),
            "nats_stage_p99_ms": _percentiles(service.stage_times, 99),
            "nats_peer_p99_ms": _bare_publish_p99(rt.broker, prefix),
        }
        service.close()
        broker = rt.broker
        for topic in broker.topics():
            broker.delete_topic(topic)  # type: ignore[attr-defined]
        if backend == "postgres":
            _drop_schema(settings)
    return {k.replace("nats", tag, 1): v for k, v in out.items()}  # type: ignore[misc]


def _percentiles(times: dict[str, Iterable[float]], q: float) -> dict[str, float]:
    out = {}
    for stage, values in times.items():
        ms = np.array(list(values)) * 1000
        if ms.size:
            out[stage] = round(float(np.percentile(ms, q)), 2)
    return out


def _bare_publish_p99(broker: Broker, prefix: str, n: int = 300) -> float:
    """p99 of publishing 4 messages of one release's size and waiting for the acks."""
    topic = f"peer{prefix}"
    broker.create_topic(topic, partitions=4)
    items = [(SYMBOLS[i], b"x" * 4_000, {"qv-symbols": SYMBOLS[i]}) for i in range(4)]
    took = []
    for _ in range(n):
        began = time.perf_counter()
        broker.publish_many(topic, items)
        took.append(time.perf_counter() - began)
    broker.delete_topic(topic)  # type: ignore[attr-defined]
    return round(float(np.percentile(np.array(took) * 1000, 99)), 2)


def _drop_schema(settings: Settings) -> None:
    import psycopg

    dsn = settings.services.postgres_dsn.get_secret_value()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{settings.storage.postgres_schema}" CASCADE')


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result: dict[str, object] = {
            "rate": RATE,
            "load_before": round(os.getloadavg()[0], 2),
            "inproc_trades_per_s": round(inproc_pipeline(root)),
            "inproc_bus_events_per_s": round(inproc_bus()),
            "memory_broker_msgs_per_s": round(memory_broker()),
        }
        if _reachable(NATS, 4222):
            result.update(nats_latency(root, "lake"))
            if _reachable("postgres", 5432):
                result.update(nats_latency(root, "postgres"))
        result["load_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
