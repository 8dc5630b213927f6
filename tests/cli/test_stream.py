"""`qv stream` as a process over NATS: probes answer, SIGTERM flushes, store and topic agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from quantivista.bus.codecs import Codecs
from quantivista.bus.events import BarBatch
from quantivista.bus.frames import from_ipc
from quantivista.bus.nats import NatsBroker
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


def probe_url(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "probes on" in line:
            return line.rsplit(" ", 1)[-1].strip()
        if proc.poll() is not None:
            break
    pytest.fail(f"qv stream did not start: {proc.stderr.read() if proc.stderr else ''}")


def test_qv_stream_over_nats_serves_probes_and_stops_cleanly(tmp_path: Path, nats_url: str) -> None:
    prefix = f"t{uuid4().hex[:10]}"
    bus = f"{nats_url}?prefix={prefix}"
    env = {
        "QV_DATA_DIR": str(tmp_path / "data"),
        "QV_BUS__URL": bus,
        "QV_PROBES__PORTS": json.dumps({"stream": 0}),
        "QV_STREAM__IDLE_S": "3600",
    }
    proc = qv("stream", "--source", "synthetic", "--symbols", "AAA,BBB,CCC", "--rate", "3000",
              env=env)  # fmt: skip
    broker = NatsBroker(bus)
    try:
        url = probe_url(proc)
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"broker": "ok"}
        time.sleep(1.5)
        metrics = httpx.get(f"{url}/metrics").text
        taken = [ln for ln in metrics.splitlines() if ln.startswith("qv_stream_trades_total")]
        assert taken and float(taken[0].split()[-1]) > 0
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
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for topic in broker.topics():
            broker.delete_topic(topic)
        broker.close()
