"""Tracing: the span tree of an ingest and a write, API request spans continuing a caller's
trace, and a bus envelope's context continued in another process that exports by OTLP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from quantivista.api.app import create_app
from quantivista.bus.envelope import Envelope
from quantivista.bus.events import BarsQuarantined
from quantivista.config import Settings
from quantivista.ops.tracing import span
from quantivista.platform import Platform
from quantivista.providers.simulator import SimulatedMarket


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    # back to the no-op provider, as OpenTelemetry's own test helpers do, so the rest of the
    # suite does not record spans
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]


@pytest.fixture
def exporter(spans: InMemorySpanExporter) -> InMemorySpanExporter:
    spans.clear()
    return spans


def _children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[str]:
    assert parent.context is not None
    return sorted(
        s.name for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    )


def test_an_ingest_is_one_trace_acquire_normalize_validate_store_publish(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    symbols = SimulatedMarket().symbols("2024-06-03")[:2]
    with Platform.from_settings(Settings(data_dir=tmp_path / "qv")) as p:
        p.ingest(symbols, "2024-05-01", "2024-05-31")
    done = exporter.get_finished_spans()
    [batch] = [s for s in done if s.name == "ingest.batch"]
    assert batch.attributes is not None and batch.attributes["symbols"] == 2
    assert _children(done, batch) == ["acquire", "normalize", "publish", "store", "validate"]
    assert batch.context is not None
    trace_ids = {s.context.trace_id for s in done if s.context is not None}
    assert trace_ids == {batch.context.trace_id}  # nothing outside the batch's trace


def test_a_direct_write_is_a_pipeline_write_trace(
    tmp_path: Path, exporter: InMemorySpanExporter, make_bars: Any
) -> None:
    with Platform.from_settings(Settings(data_dir=tmp_path / "qv")) as p:
        p.write_bars(make_bars(["TRC"], sessions=3), source="trace-test")
    done = exporter.get_finished_spans()
    [write] = [s for s in done if s.name == "pipeline.write"]
    assert _children(done, write) == ["publish", "store", "validate"]


def test_an_api_request_continues_the_callers_trace(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    config = uvicorn.Config(
        create_app(Settings(data_dir=tmp_path / "qv")), host="127.0.0.1", port=0,
        log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        reply = httpx.get(
            f"http://127.0.0.1:{port}/healthz",
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert reply.status_code == 200
    [request] = [s for s in exporter.get_finished_spans() if s.name == "HTTP GET /healthz"]
    assert request.kind is trace.SpanKind.SERVER
    assert request.context is not None and request.parent is not None
    assert f"{request.context.trace_id:032x}" == trace_id
    assert f"{request.parent.span_id:016x}" == parent_id
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 200


# -- across processes: the envelope's headers, and an OTLP export --------------------------
class _Collector(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        type(self).bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


CONSUMER = textwrap.dedent(
    """
    import sys
    from opentelemetry import trace
    from quantivista.bus.envelope import Envelope
    from quantivista.config import TracingSettings
    from quantivista.ops.tracing import configure, consume

    assert configure(TracingSettings(otlp_endpoint=sys.argv[1]), "consumer")
    envelope = Envelope.from_json(sys.stdin.read())
    with consume("handle " + envelope.topic, envelope.headers, topic=envelope.topic):
        envelope.open()
    trace.get_tracer_provider().force_flush()
    """
)


def test_the_envelope_carries_the_trace_to_a_consumer_in_another_process(
    exporter: InMemorySpanExporter,
) -> None:
    handler = type("Collector", (_Collector,), {"bodies": []})
    collector = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    event = BarsQuarantined(
        occurred_at=datetime(2026, 1, 5, tzinfo=UTC), job_id="j1", source="s", rows=1,
        rules={"ohlc": 1},
    )  # fmt: skip
    try:
        with span("publish") as publishing:
            wire = Envelope.of(event).to_json()
        assert "traceparent" in json.loads(wire)["headers"]
        result = subprocess.run(
            [sys.executable, "-c", CONSUMER, endpoint], input=wire, capture_output=True,
            timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
    finally:
        collector.shutdown()
        collector.server_close()
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(handler.bodies))  # type: ignore[attr-defined]
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "quantivista-consumer"
    [handled] = [s for ss in resource.scope_spans for s in ss.spans]
    context = publishing.get_span_context()
    assert handled.name == "handle bars.quarantined"
    assert handled.trace_id == context.trace_id.to_bytes(16, "big")
    assert handled.parent_span_id == context.span_id.to_bytes(8, "big")
