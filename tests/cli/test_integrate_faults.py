"""`qv integrate` under faults: kill -9 mid-stream and a broker restart lose and double nothing.

The test starts its own broker on a free port, so restarting it disturbs no one else: a NATS
server (JetStream, file storage), or Tansu (Kafka protocol) keeping its data in S3 on a local
moto server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import polars as pl
import pytest

from brokers import Tansu
from conftest import s3_bucket
from procs import metric, probe_url, reaped, terminate
from quantivista.bus.base import Broker
from quantivista.bus.codecs import Codecs
from quantivista.bus.connect import open_broker
from quantivista.bus.events import BarBatch
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.registry import SchemaRegistry
from quantivista.config import Settings
from quantivista.errors import BusError
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.runtime import Runtime

pytestmark = [pytest.mark.nats, pytest.mark.slow]

# Debian's package puts it in sbin, which a user's PATH may lack
NATS_SERVER = shutil.which("nats-server") or shutil.which(
    "nats-server", path="/usr/sbin:/usr/local/sbin"
)
T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
MESSAGES = 200
# Tansu keeps every record in S3 (a moto server here), and each of its fetches lists the
# partition's objects: ~20 requests/s on a slow day, so 200 messages took over 300 s
TANSU_MESSAGES = 48
PER_MESSAGE = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A JetStream server of this test's own, restartable on the same port and storage."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(NATS_SERVER),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None


@pytest.fixture(params=["nats", "kafka"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsServer | Tansu]:
    """A broker of the test's own that keeps its data over a restart."""
    found: NatsServer | Tansu
    if request.param == "kafka":
        endpoint = request.getfixturevalue("s3_endpoint")
        found = Tansu(s3_endpoint=endpoint, bucket=s3_bucket(endpoint))
    else:
        if NATS_SERVER is None:
            pytest.skip("nats-server is not installed")
        found = NatsServer(tmp_path / "nats")
    found.start()
    yield found
    found.stop()


def broker_url(server: NatsServer | Tansu) -> str:
    prefix = f"t{uuid4().hex[:8]}"
    if isinstance(server, Tansu):
        return f"{server.url}?prefix={prefix}"
    return f"nats://127.0.0.1:{server.port}?prefix={prefix}"


def message_bars(k: int) -> pl.DataFrame:
    """The bars of message k: one symbol, five consecutive minutes, prices that encode k."""
    symbol = SYMBOLS[k % len(SYMBOLS)]
    first = (k // len(SYMBOLS)) * PER_MESSAGE
    ts = [T0 + timedelta(minutes=first + i) for i in range(PER_MESSAGE)]
    close = [100.0 + 0.01 * (first + i) for i in range(PER_MESSAGE)]
    return coerce_bars(
        pl.DataFrame({"symbol": symbol, "ts": ts, "open": close, "high": [c + 0.05 for c in close],
                      "low": [c - 0.05 for c in close], "close": close,
                      "volume": [100.0 + i for i in range(PER_MESSAGE)], "provider": "finnhub"}),
        timeframe="1m",
    )  # fmt: skip


def publish(broker: Broker, codecs: Codecs, ks: range) -> None:
    for k in ks:
        frame = message_bars(k)
        symbol = str(frame["symbol"][0])
        event = BarBatch(occurred_at=T0, source="finnhub", stage="raw", timeframe="1m",
                         rows=frame.height, symbols=[symbol], bars=to_ipc(frame))  # fmt: skip
        value, headers = codecs.encode(event, "avro", key=symbol)
        for _ in range(100):  # the server may still be coming back
            try:
                broker.publish("bars.raw.1m", value, key=symbol, headers=headers)
                break
            except (BusError, TimeoutError):
                time.sleep(0.2)
        else:
            raise AssertionError("could not publish after the restart")


def integrate(env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "quantivista.cli", "integrate", "--group", "g", *extra],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def enriched_keys(broker: Broker, codecs: Codecs) -> pl.DataFrame:
    frames = []
    for message in broker.read("bars.enriched"):
        event = codecs.decode(message.value)
        assert isinstance(event, BarBatch)
        frames.append(from_ipc(event.bars).select("symbol", "ts", "close", "sector"))
    return pl.concat(frames) if frames else pl.DataFrame()


def enriched_count(broker: Broker, codecs: Codecs) -> int:
    """Return how many distinct bars the enriched topic holds (0 while the broker is away)."""
    try:
        sent = enriched_keys(broker, codecs)
    except BusError:
        return 0
    return sent.select("symbol", "ts").unique().height if sent.height else 0


def test_kill_9_and_a_broker_restart_lose_and_double_nothing(
    tmp_path: Path, server: NatsServer | Tansu
) -> None:
    url = broker_url(server)
    messages = MESSAGES if isinstance(server, NatsServer) else TANSU_MESSAGES
    data = tmp_path / "data"
    env = {
        "QV_DATA_DIR": str(data),
        "QV_BUS__URL": url,
        "QV_PROBES__PORTS": json.dumps({"integrate": 0}),
        "QV_INTEGRATE__BATCH": "4",
        "QV_INTEGRATE__ACK_WAIT_S": "3",
    }
    with Runtime.from_settings(Settings(data_dir=data), create=True) as runtime:
        codecs = Codecs(SchemaRegistry(runtime.backend.catalog))  # schemas in the shared catalog
        broker = open_broker(url)
        broker.create_topic("bars.raw.1m", partitions=4)
        publish(broker, codecs, range(messages // 2))

    with reaped(integrate(env)) as first:
        url = probe_url(first)
        applied, deadline = 0.0, time.monotonic() + 120
        while applied < 10 and time.monotonic() < deadline:  # until it is part-way through
            applied = metric(url, "qv_integrate_messages_total")  # its own count: no broker
            time.sleep(0.2)  # a batch takes longer: the kill lands within one or two
        first.kill()  # kill -9: no flush, no ack of the batch in hand
    # a batch is 4 messages: this many applied, whatever the load, is part-way
    assert 10 <= applied < messages // 2, applied

    server.stop()  # the broker goes away mid-stream and comes back
    server.start()
    publish(broker, codecs, range(messages // 2, messages))

    with reaped(integrate(env)) as second:  # until every bar is on the enriched topic
        url, deadline = probe_url(second), time.monotonic() + 300
        # first its own count (cheap): it has at least the new half to apply
        while (got := metric(url, "qv_integrate_messages_total")) < messages // 2:
            if time.monotonic() >= deadline:
                second.kill()
                tail = second.communicate()[1][-3000:]
                raise AssertionError(f"the second run applied {got} messages in 300 s:\n{tail}")
            time.sleep(0.5)
        # then the topic: each look reads all of it through the broker (and S3 for Tansu)
        while enriched_count(broker, codecs) < messages * PER_MESSAGE:
            assert second.poll() is None, second.communicate()[1]
            assert time.monotonic() < deadline, "the second run did not catch up in 300 s"
            time.sleep(3.0)
        second.send_signal(signal.SIGTERM)  # a graceful stop: prints its stats
        out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["dead_lettered"] == 0 and stats["messages"] >= messages // 2

    expected = pl.concat([message_bars(k) for k in range(messages)]).select("symbol", "ts", "close")
    with Runtime.from_settings(Settings(data_dir=data), create=False) as runtime:
        stored = runtime.backend.bars.read(
            SYMBOLS, Timeframe.parse("1m"), T0, T0 + timedelta(days=2)
        ).select("symbol", "ts", "close")
    # 0 lost, 0 doubled: the store holds every bar exactly once, with its value
    assert stored.height == messages * PER_MESSAGE
    assert stored.sort("symbol", "ts").equals(expected.sort("symbol", "ts"))
    # every bar reached the enriched topic at least once
    sent = enriched_keys(broker, codecs)
    assert sent.select("symbol", "ts").unique().height == messages * PER_MESSAGE
    assert sent.join(expected, on=["symbol", "ts"], how="anti").is_empty()
    broker.close()
