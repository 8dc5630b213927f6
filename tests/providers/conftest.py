"""Shared helpers for the provider tests: recorded fixtures, a real local HTTP server, and a
Redis key prefix of the test's own (limiter and shared-state tests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import pytest
import yaml

# copies of ../shared/fixtures/providers, so a clone tests on its own
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "providers"


def fixture_path(provider: str, name: str) -> Path:
    """Return the path of a recorded fixture (skip the test when the fixtures are absent)."""
    path = FIXTURES / provider / name
    if not path.exists():
        pytest.skip(f"fixture {path} is not available")
    return path


def fixture_bytes(provider: str, name: str) -> bytes:
    """Return a fixture's bytes as served by the vendor."""
    return fixture_path(provider, name).read_bytes()


def envelope_body(provider: str, name: str) -> bytes:
    """Return the API body of a node-yahoo-finance2 recording (`response.bodyJson`)."""
    data = json.loads(fixture_bytes(provider, name))
    return json.dumps(data["response"]["bodyJson"]).encode()


def cassette(provider: str, name: str) -> tuple[int, bytes]:
    """Return `(status, body)` of the first interaction of a VCR cassette (both layouts)."""
    data = yaml.safe_load(fixture_bytes(provider, name))
    inter = (data.get("interactions") or data.get("http_interactions"))[0]
    resp = inter["response"]
    status = resp["status"]["code"]
    body = resp["body"]["string"]
    return int(status), body if isinstance(body, bytes) else body.encode()


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class LocalServer:
    """A tiny HTTP server on 127.0.0.1: `routes[path]` is a Route or a list served in turn."""

    def __init__(self) -> None:
        self.routes: dict[str, Route | list[Route] | Callable[[Seen], Route]] = {}
        self.requests: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(parts.path, parse_qs(parts.query), dict(self.headers))
                server.requests.append(seen)
                target: Any = server.routes.get(parts.path, Route(404, b"not here"))
                if isinstance(target, list):
                    route = target.pop(0) if len(target) > 1 else target[0]
                elif callable(target):
                    route = target(seen)
                else:
                    route = target
                self.send_response(route.status)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    server = LocalServer()
    yield server
    server.close()


def drop_redis_keys(url: str, prefix: str) -> None:
    """Delete every key under `prefix` (a test's own)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """Return a Redis key prefix of this test's own; delete its keys afterwards."""
    prefix = f"qv-test:{uuid4().hex[:8]}"
    yield prefix
    drop_redis_keys(redis_url, prefix)
