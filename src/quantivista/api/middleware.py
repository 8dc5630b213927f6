"""A pure ASGI middleware: request metrics, rate-limit and deprecation headers.

Pure ASGI (not Starlette's BaseHTTPMiddleware, which runs every request through extra
tasks and streams): it only watches the response start message go by.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from quantivista.api.state import ApiState

__all__ = ["MeasureMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


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

        try:
            await self.app(scope, receive, watched)
        finally:
            app = scope.get("app")
            state: ApiState | None = getattr(getattr(app, "state", None), "qv", None)
            if state is not None:
                path = getattr(scope.get("route"), "path", "unmatched")
                state.metrics.requests.labels(path, str(status)).inc()
                state.metrics.latency.labels(path).observe(time.perf_counter() - started)
