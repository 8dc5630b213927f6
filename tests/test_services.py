"""The test harness's access to real servers: skip when absent, fail when required."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


RequireService = Callable[..., None]


def test_reachable_service_passes(services: RequireService, listening_port: int) -> None:
    services("Thing", "127.0.0.1", listening_port, required=True)


def test_unreachable_service_skips_with_a_clear_reason(services: RequireService) -> None:
    port = closed_port()
    with pytest.raises(pytest.skip.Exception, match=f"Thing is not reachable at 127.0.0.1:{port}"):
        services("Thing", "127.0.0.1", port, timeout_s=0.5, required=False)


def test_unreachable_service_fails_when_services_are_required(services: RequireService) -> None:
    port = closed_port()
    with pytest.raises(pytest.fail.Exception, match="QV_REQUIRE_SERVICES=1"):
        services("Thing", "127.0.0.1", port, timeout_s=0.5, required=True)


@pytest.mark.postgres
def test_postgres_fixture(postgres_dsn: str) -> None:
    parts = urlsplit(postgres_dsn)
    assert parts.scheme.startswith("postgres")
    assert parts.hostname


@pytest.mark.redis
def test_redis_fixture(redis_url: str) -> None:
    assert urlsplit(redis_url).scheme == "redis"


@pytest.mark.nats
def test_nats_fixture(nats_url: str) -> None:
    assert urlsplit(nats_url).scheme == "nats"
