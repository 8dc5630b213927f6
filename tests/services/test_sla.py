"""`qv sla`: uptime in market hours from probe samples, freshness from stored bars against
the exchange's closes, retrieval success and quality from jobs, the probe over a real socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from quantivista.api.app import create_app
from quantivista.cli import app as cli
from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.platform import Platform
from quantivista.providers.simulator import SimulatedMarket
from quantivista.runtime import Runtime
from quantivista.services.sla import SlaService, day_range

NOW = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)  # Monday 06:00 in New York


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("sla") / "qv")
    clock = TestClock(NOW)
    with Platform.from_settings(settings, clock=clock) as p:
        job = p.ingest(SimulatedMarket().symbols("2024-06-03")[:2], "2024-05-27", "2024-05-31")
        assert job.status.value == "succeeded"
        log = p.runtime.audit.log
        log.add_sla(NOW - timedelta(hours=5), "api", False, None, "down at night")  # not counted
        for i in range(10):  # 11:00-11:09 UTC = 07:00 New York: in market hours
            ok = i not in (3, 7)
            log.add_sla(
                NOW + timedelta(hours=1, minutes=i), "api", ok, 0.01 * (i + 1) if ok else None
            )
    return settings


def test_the_report_measures(store: Settings) -> None:
    with Runtime(store) as rt:
        report = SlaService.from_runtime(rt).report(*day_range(date(2024, 5, 27), date(2024, 6, 3)))
    values = dict(zip(report.measures["measure"], report.measures["value"], strict=True))
    assert values["uptime (market hours)"] == pytest.approx(0.8)
    # daily bars of May 28-31 (27th: Memorial Day) stored on Jun 3 10:00 UTC; closes 20:00 UTC
    ages = [(NOW - datetime(2024, 5, d, 20, tzinfo=UTC)).total_seconds() for d in (28, 29, 30, 31)]
    assert values["freshness p50 (s)"] == pytest.approx((ages[1] + ages[2]) / 2)
    assert values["retrieval success"] == 1.0
    assert values["quality score"] == 1.0
    ok_latencies = sorted(0.01 * (i + 1) for i in range(10) if i not in (3, 7))
    assert values["API latency p50 (s)"] == pytest.approx((ok_latencies[3] + ok_latencies[4]) / 2)
    met = dict(zip(report.measures["measure"], report.measures["met"], strict=True))
    assert met["uptime (market hours)"] is False and met["quality score"] is True
    daily = report.daily.filter(report.daily["probes"] > 0)
    assert daily.rows() == [(date(2024, 6, 3), 10, 8, 0.8)]
    assert report.daily["session"].to_list()[0] == date(2024, 5, 28)  # sessions only


def test_qv_sla_prints_a_table_and_a_chart(store: Settings) -> None:
    runner = CliRunner()
    root = str(store.data_dir)
    shown = runner.invoke(
        cli, ["--data-dir", root, "sla", "--from", "2024-05-27", "--to", "2024-06-03"]
    )
    assert shown.exit_code == 0, shown.output
    assert "uptime" in shown.output and "80.0%" in shown.output  # cells wrap at 80 columns
    assert "Uptime per session" in shown.output and "████" in shown.output
    as_json = runner.invoke(
        cli, ["--data-dir", root, "sla", "--from", "2024-05-27", "--to", "2024-06-03", "-f", "json"]
    )
    document = json.loads(as_json.output)
    assert document["measures"][0]["measure"] == "uptime (market hours)"


def test_the_probe_requests_the_api_over_a_socket(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "qv")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    try:
        with Runtime(settings.model_copy(update={"sla": settings.sla.model_copy(
            update={"api_url": f"http://127.0.0.1:{port}"})})) as rt:  # fmt: skip
            up = SlaService.from_runtime(rt).probe()
            service = SlaService.from_runtime(rt)
            service.api_url = f"http://127.0.0.1:{closed}"
            down = service.probe()
            samples = rt.audit.log.sla(NOW.replace(year=2000), datetime.now(UTC) + timedelta(1))
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert up["ok"] is True and 0 < up["latency_s"] < 5
    assert down["ok"] is False and "ConnectError" in down["detail"]
    assert samples["ok"].to_list() == [True, False]
