"""The probe server of the non-API services, over real sockets (plain and TLS)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from quantivista.config import ProbeSettings
from quantivista.errors import ConfigurationError
from quantivista.ops.probes import ProbeServer
from quantivista.testing.tls import self_signed_certificate


def _settings(**changes: object) -> ProbeSettings:
    return ProbeSettings(ports={"stream": 0}, **changes)  # type: ignore[arg-type]


def test_health_readiness_and_metrics() -> None:
    registry = CollectorRegistry()
    Counter("qv_test_events", "events seen", registry=registry).inc(3)
    ready: dict[str, object] = {"bus": True}
    with ProbeServer("stream", _settings(), registries=[registry]) as probes:
        probes.add_check("bus", lambda: ready["bus"])  # type: ignore[arg-type,return-value]
        with httpx.Client(base_url=probes.url) as http:
            health = http.get("/healthz")
            assert health.status_code == 200
            assert health.json()["service"] == "stream"
            assert http.get("/readyz").json() == {
                "status": "ready", "service": "stream", "checks": {"bus": "ok"}
            }  # fmt: skip
            ready["bus"] = "NATS disconnected"
            not_ready = http.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["bus"] == "NATS disconnected"
            assert "qv_test_events_total 3.0" in http.get("/metrics").text
            assert http.get("/nope").status_code == 404


def test_a_raising_check_is_not_ready_with_its_reason() -> None:
    def broken() -> bool:
        raise OSError("store unreachable")

    with ProbeServer("stream", _settings()) as probes:
        probes.add_check("store", broken)
        reply = httpx.get(f"{probes.url}/readyz")
    assert reply.status_code == 503
    assert reply.json()["checks"]["store"] == "OSError: store unreachable"


def test_draining_answers_503_before_the_listener_closes() -> None:
    with ProbeServer("stream", _settings()) as probes:
        probes.draining()
        assert httpx.get(f"{probes.url}/readyz").json()["status"] == "stopping"
        assert httpx.get(f"{probes.url}/healthz").status_code == 503
        url = probes.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")


def test_a_taken_port_is_a_configuration_error() -> None:
    with ProbeServer("stream", _settings()) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(ConfigurationError, match="cannot listen"):
            ProbeServer("stream", _settings(), port=port).start()


def test_tls_with_a_generated_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with ProbeServer("stream", _settings(ssl_certfile=cert, ssl_keyfile=key)) as probes:
        assert probes.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{probes.url}/healthz", verify=trusted).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{probes.url}/healthz")  # the system trust store does not know it
