"""`qv stream` as a process over NATS and over Kafka (a Tansu of the test's own): probes
answer, SIGTERM flushes, store and topics agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from brokers import Tansu
from procs import metric, probe_url, reap
from quantivista.bus.codecs import Codecs
from quantivista.bus.connect import open_broker
from quantivista.bus.events import BarBatch
from quantivista.bus.frames import from_ipc
from quantivista.bus.registry import SchemaRegistry
from quantivista.config import Settings
from quantivista.model.timeframe import Timeframe
from quantivista.runtime import Runtime

pytestmark = [pytest.mark.nats, pytest.mark.slow]


def qv(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "quantivista.cli", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(params=["nats", "kafka"])
def bus(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker URL with a prefix of the test's own: the NATS server, or a Tansu of its own."""
    prefix = f"t{uuid4().hex[:10]}"
    if request.param == "nats":
        yield f"{request.getfixturevalue('nats_url')}?prefix={prefix}"
        return
    tansu = Tansu()  # memory storage
    tansu.start()
    try:
        yield f"{tansu.url}?prefix={prefix}"
    finally:
        tansu.stop()


def test_qv_stream_serves_probes_stops_cleanly_and_stores_what_it_publishes(
    tmp_path: Path, bus: str
) -> None:
    env = {
        "QV_DATA_DIR": str(tmp_path / "data"),
        "QV_BUS__URL": bus,
        "QV_PROBES__PORTS": json.dumps({"stream": 0}),
        "QV_STREAM__IDLE_S": "3600",
    }
    proc = qv("stream", "--source", "synthetic", "--symbols", "AAA,BBB,CCC", "--rate", "3000",
              env=env)  # fmt: skip
    broker = open_broker(bus)
    try:
        url = probe_url(proc)
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"broker": "ok"}
        deadline = time.monotonic() + 60  # 1,000 trades: 0.3 s alone, longer on a busy machine
        while metric(url, "qv_stream_trades_total") <= 1000:
            assert time.monotonic() < deadline, "fewer than 1,000 trades in 60 s"
            time.sleep(0.1)
        metrics = httpx.get(f"{url}/metrics").text
        assert "qv_stream_latency_seconds_bucket" in metrics
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["trades"] > 1000 and stats["bars"] >= 3

        # what was published is what was stored: every flushed bar, once per symbol
        settings = Settings(data_dir=tmp_path / "data")
        with Runtime.from_settings(settings, create=False) as runtime:
            codecs = Codecs(SchemaRegistry(runtime.backend.catalog))
            sent = [codecs.decode(m.value) for m in broker.read("bars.normalized")]
            raw = [codecs.decode(m.value) for m in broker.read("bars.raw.1m")]
            now = datetime.now(UTC)
            stored = runtime.backend.bars.read(
                ["AAA", "BBB", "CCC"], Timeframe.parse("1m"), now - timedelta(minutes=10), now
            )
        assert len(sent) == stats["published"]
        assert all(isinstance(e, BarBatch) for e in sent)
        assert sum(from_ipc(e.bars).height for e in sent if isinstance(e, BarBatch)) == (
            stats["bars"] + stats["corrections"]
        )
        assert int(stored["trades"].sum()) == stats["trades"]
        assert "qv_stream_stage_seconds_bucket" in metrics  # the per-stage budget
        # nothing was quarantined: the raw topic holds the same bars, as built
        assert stats["quarantined"] == 0
        assert sum(from_ipc(e.bars).height for e in raw if isinstance(e, BarBatch)) == (
            stats["bars"] + stats["corrections"]
        )
    finally:
        reap(proc)
        for topic in broker.topics():
            broker.delete_topic(topic)
        broker.close()
