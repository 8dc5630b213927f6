"""A pure ASGI middleware: request metrics and spans, rate-limit and deprecation headers.

Pure ASGI (not Starlette's BaseHTTPMiddleware, which runs every request through extra
tasks and streams): it only watches the response start message go by.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
from opentelemetry.trace import SpanKind

from quantivista.api.state import ApiState
from quantivista.ops import tracing
from quantivista.services.audit import Actor

__all__ = ["MeasureMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


_W3C = (b"traceparent", b"tracestate")
_READS = ("GET", "HEAD", "OPTIONS")


class MeasureMiddleware:
    """Count requests and their latency by route; add X-RateLimit-* and Deprecation headers."""

    def __init__(self, app: App, deprecated: dict[str, tuple[str, str]]) -> None:
        self.app = app
        self.deprecated = deprecated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                extra = scope.get("state", {}).get("rate_limit") or {}
                route = getattr(scope.get("route"), "path", None)
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
                if route in self.deprecated:
                    deprecated, sunset = self.deprecated[route]
                    headers += [(b"deprecation", deprecated.encode()),
                                (b"sunset", sunset.encode())]  # fmt: skip
                message["headers"] = headers
            await send(message)

        # only the W3C headers matter to the propagator: skip decoding the others
        carried = {k.decode(): v.decode() for k, v in scope.get("headers", []) if k in _W3C}
        method = scope.get("method", "GET")
        with tracing.tracer().start_as_current_span(
            f"HTTP {method}", context=tracing.extract(carried) if carried else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        ) as span:  # fmt: skip
            try:
                await self.app(scope, receive, watched)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"HTTP {method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                self._count(scope, status, started)
        if method not in _READS:
            await self._audit(scope, method, status)

    @staticmethod
    async def _audit(scope: Scope, method: str, status: int) -> None:
        """Record who changed what (off the event loop: the log is a database write)."""
        app = scope.get("app")
        state: ApiState | None = getattr(getattr(app, "state", None), "qv", None)
        if state is None:
            return
        seen = scope.get("state", {})
        client = seen.get("client_id")
        route = getattr(scope.get("route"), "path", scope.get("path", ""))
        actor = Actor(f"api:{client}" if client else "api:anonymous", seen.get("tenant"))
        await anyio.to_thread.run_sync(
            functools.partial(
                state.runtime.audit.record,
                f"{method} {route}",
                scope.get("path", ""),
                outcome="ok" if status < 400 else f"http_{status}",
                actor=actor,
            )
        )

    @staticmethod
    def _count(scope: Scope, status: int, started: float) -> None:
        app = scope.get("app")
        state: ApiState | None = getattr(getattr(app, "state", None), "qv", None)
        if state is not None:
            path = getattr(scope.get("route"), "path", "unmatched")
            now = time.perf_counter()
            state.metrics.served(path, status, now - started, now)
