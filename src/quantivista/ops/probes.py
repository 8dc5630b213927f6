"""`/healthz`, `/readyz` and `/metrics` for the long-running processes that are not the API.

    probes = ProbeServer("stream", settings.probes, registries=[metrics.registry])
    probes.add_check("bus", lambda: bus.connected)
    with probes:            # serves on a thread until the block ends
        run_forever()

`/healthz` says the process is alive (200 while it is not shutting down), `/readyz` runs the
readiness checks (503 with each failing check's reason), `/metrics` is the Prometheus text of
the shared `ops.metrics.REGISTRY` and every registry given. A thread-per-request server from
the standard library is enough here: probes are scraped a few times a minute, and it keeps
the service's event loop free.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from quantivista.config import ProbeSettings
from quantivista.errors import ConfigurationError
from quantivista.ops.metrics import REGISTRY

__all__ = ["Check", "ProbeServer"]

Check = Callable[[], bool | str | None]
"""A readiness check: True/None is ready; False or a string (the reason) is not."""


class ProbeServer:
    """Health, readiness and metrics endpoints of one service process, on their own thread."""

    def __init__(
        self,
        service: str,
        settings: ProbeSettings,
        *,
        registries: Iterable[CollectorRegistry] = (),
        port: int | None = None,
    ) -> None:
        self.service = service
        self._settings = settings
        self._registries = [REGISTRY, *(r for r in registries if r is not REGISTRY)]
        self._checks: dict[str, Check] = {}
        self._port = settings.port_of(service) if port is None else port
        self._started = time.monotonic()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_check(self, name: str, check: Check) -> None:
        """Make readiness depend on `check` (run on every `/readyz`)."""
        self._checks[name] = check

    def add_registry(self, registry: CollectorRegistry) -> None:
        """Expose `registry` at `/metrics` too."""
        self._registries.append(registry)

    @property
    def url(self) -> str:
        """Return the base URL the probes answer on (after `start`)."""
        if self._server is None:
            raise RuntimeError("the probe server is not started")
        host, port = self._server.server_address[:2]
        scheme = "https" if self._settings.ssl_certfile else "http"
        return f"{scheme}://{host!s}:{port}"

    def start(self) -> ProbeServer:
        """Listen and serve on a daemon thread; return self."""
        handler = _handler_for(self)
        try:
            server = ThreadingHTTPServer((self._settings.host, self._port), handler)
        except OSError as exc:
            raise ConfigurationError(
                f"the {self.service} probes cannot listen on {self._settings.host}:{self._port}:"
                f" {exc.strerror}"
            ) from None
        server.daemon_threads = True
        if self._settings.ssl_certfile is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._settings.ssl_certfile, self._settings.ssl_keyfile)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"qv-probes-{self.service}", daemon=True
        )
        self._thread.start()
        return self

    def draining(self) -> None:
        """Mark the process as shutting down: `/readyz` and `/healthz` answer 503 from now."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ProbeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- answers -------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """Return the status and body of `/healthz`."""
        body = {
            "status": "stopping" if self._stopping.is_set() else "ok",
            "service": self.service,
            "uptime_s": round(time.monotonic() - self._started, 3),
        }
        return (503 if self._stopping.is_set() else 200), body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """Return the status and body of `/readyz`: every check's outcome."""
        results: dict[str, str] = {}
        for name, check in list(self._checks.items()):
            try:
                outcome = check()
            except Exception as exc:  # a failing check means "not ready"; its reason is shown
                outcome = f"{type(exc).__name__}: {exc}"
            if outcome is None or outcome is True:
                results[name] = "ok"
            else:
                results[name] = outcome if isinstance(outcome, str) else "not ready"
        ready = not self._stopping.is_set() and all(v == "ok" for v in results.values())
        status = "ready" if ready else ("stopping" if self._stopping.is_set() else "not ready")
        return (200 if ready else 503), {
            "status": status,
            "service": self.service,
            "checks": results,
        }

    def metrics(self) -> bytes:
        """Return the Prometheus text of every registry."""
        return b"".join(generate_latest(registry) for registry in self._registries)


def _handler_for(probes: ProbeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "quantivista-probes"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._json(*probes.health())
            elif path == "/readyz":
                self._json(*probes.readiness())
            elif path == "/metrics":
                self._send(200, probes.metrics(), CONTENT_TYPE_LATEST)
            else:
                self._json(404, {"status": "not found", "path": path})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes are not worth a line each."""

    return Handler
