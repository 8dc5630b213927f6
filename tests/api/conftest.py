"""A live API over a real socket: uvicorn on 127.0.0.1 in a thread, on a fresh store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn

from quantivista.api.app import create_app
from quantivista.config import ApiSettings, Settings
from quantivista.platform import Platform
from quantivista.providers.simulator import SimulatedMarket

SYMBOLS = SimulatedMarket().symbols("2024-06-03")[5:8]  # the default settings' market


@dataclass
class LiveApi:
    """A running API: its URL and a way to stop it."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)


@contextmanager
def live_api(settings: Settings, **uvicorn_kwargs: Any) -> Iterator[LiveApi]:
    """Serve `create_app(settings)` on a free port until the block ends (graceful stop)."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on",
        **uvicorn_kwargs,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="qv-test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if uvicorn_kwargs.get("ssl_certfile") else "http"
    try:
        yield LiveApi(f"{scheme}://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class Credentials:
    client_id: str
    client_secret: str
    api_key: str


def make_client(settings: Settings, tenant: str, scopes: str) -> Credentials:
    with Platform.from_settings(settings) as p:
        issued = p.runtime.auth.create_client(tenant, scopes.split(","))
    return Credentials(issued.client_id, issued.client_secret, issued.api_key)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("api") / "qv"
    settings = Settings(data_dir=root)
    with Platform.from_settings(settings) as p:
        p.ingest(SYMBOLS, "2023-01-01", "2024-12-31")
    return settings


@pytest.fixture(scope="module")
def api(store: Settings) -> Iterator[LiveApi]:
    with live_api(store) as running:
        yield running


def bearer(api: LiveApi, creds: Credentials, scope: str | None = None) -> dict[str, str]:
    data = {"grant_type": "client_credentials", "client_id": creds.client_id,
            "client_secret": creds.client_secret}  # fmt: skip
    if scope:
        data["scope"] = scope
    with api.client() as http:
        reply = http.post("/api/v1/auth/token", data=data)
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


@pytest.fixture
def shared_limits(store: Settings, redis_url: str) -> Iterator[Callable[[list[str]], Settings]]:
    """Return a maker of the store's settings with API rate limits kept in Redis (under a
    prefix of this test's own); the test's keys are deleted afterwards."""
    import redis

    prefix = f"qv-test:apiperf:{uuid4().hex[:8]}"

    def settings(rate_limits: list[str]) -> Settings:
        return store.model_copy(
            update={
                "api": ApiSettings(rate_limits=rate_limits),
                "resilience": store.resilience.model_copy(
                    update={"backend": "redis", "redis_prefix": prefix}
                ),
                "services": store.services.model_copy(update={"redis_url": redis_url}),
            }
        )

    yield settings
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()
