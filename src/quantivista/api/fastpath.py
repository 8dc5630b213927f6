"""A fast path for cached bar responses, in front of the FastAPI routes.

A cached `GET /api/v1/bars` answer is served straight from the response cache: the raw
query string is the cache key, credentials come from the auth caches, entitlements from the
few parameters they need. Parsing and validating a dozen query parameters through FastAPI's
dependency machinery costs several times more than that. Anything else (a miss, missing or
bad credentials, a refusal) goes to the regular route, which answers it the regular way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from quantivista.api.cache import Chunk
from quantivista.api.deps import authenticate
from quantivista.api.state import ApiState
from quantivista.errors import QuantiVistaError
from quantivista.model.auth import Scope, Tenant

__all__ = ["BARS_PATH", "FastPath", "bars_cache_key"]

Scope_ = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope_, Receive, Send], Awaitable[None]]

BARS_PATH = "/api/v1/bars"


def bars_cache_key(query_string: str) -> str:
    """Return the response-cache key of a bars request (its raw query string)."""
    return f"bars|{query_string}"


def _entitlement_params(query: str) -> tuple[list[str], str]:
    """Return the symbols and the timeframe of a bars query string (what entitlements need)."""
    symbols: list[str] = []
    timeframe = "1d"
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "symbols":
            symbols += [s.strip() for s in unquote_plus(value).split(",") if s.strip()]
        elif name == "timeframe":
            timeframe = unquote_plus(value)
    return symbols, timeframe


class FastPath:
    """Serve cached bars responses without the framework (the app calls it first).

    `state` is the API process's state while the app runs (None before start-up).
    """

    def __init__(self) -> None:
        self.state: ApiState | None = None
        # (tenant, query) -> the tenant record the query was found entitled under: the same
        # record (auth caches it a few seconds) means the same answer
        self._entitled: dict[tuple[str, str], Tenant] = {}

    async def served(self, scope: Scope_, send: Send) -> bool:
        """Answer `scope` from the cache and return True, or return False to pass it on."""
        state = self.state
        if (
            state is None
            or scope["type"] != "http"
            or scope["path"] != BARS_PATH
            or scope["method"] != "GET"
        ):
            return False
        started = time.perf_counter()
        query = scope["query_string"].decode("latin-1")
        hit = state.cache.get(bars_cache_key(query))
        if hit is None:
            return False
        authorization = api_key = if_none_match = None
        for name, value in scope["headers"]:  # names come lower-cased
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        try:
            if authorization or not api_key:
                principal = authenticate(state, authorization, api_key)
            else:  # a key proven lately; another goes the route's way (which proves a new
                # key on a worker thread, not on the event loop)
                recalled = state.auth.recalled(api_key.strip())
                if recalled is None:
                    return False
                principal = recalled
            if not principal.can(Scope.READ_BARS):
                return False
            self._check_entitled(state, principal.tenant, query)
            usage = state.admit(principal.client_id)
        except QuantiVistaError:
            return False  # the route answers refusals, with their problem documents
        parts: tuple[Chunk, ...] = ()
        if if_none_match == hit.etag:  # without Content-Type and Content-Length
            status, body, out = 304, b"", list(hit.head[:-2])
        else:
            status, body, parts, out = 200, hit.body, hit.parts, list(hit.head)
        if usage is not None:
            out += [
                (b"x-ratelimit-limit", str(usage.rate.limit).encode()),
                (b"x-ratelimit-remaining", str(usage.left).encode()),
                (b"x-ratelimit-reset", f"{usage.resets_in_s:.0f}".encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": out})
        for part in parts:  # a bulk answer, as it was streamed
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": body})
        now = time.perf_counter()
        state.metrics.served(BARS_PATH, status, now - started, now)
        return True

    def _check_entitled(self, state: ApiState, tenant_name: str, query: str) -> None:
        """Raise `PermissionDeniedError` unless the tenant may read what `query` asks for."""
        tenant = state.auth.tenant(tenant_name)
        key = (tenant_name, query)
        if self._entitled.get(key) is tenant:
            return
        symbols, timeframe = _entitlement_params(query)
        state.auth.entitled(tenant, dataset="bars", symbols=symbols, timeframe=timeframe)
        if len(self._entitled) > 10_000:
            self._entitled.clear()
        self._entitled[key] = tenant
