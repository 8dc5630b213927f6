"""The provider simulator: one local HTTP/WebSocket server speaking five vendors' formats.

Each vendor lives under its own prefix (`http://host:port/<provider>` + the vendor's real
path). Every call passes the same gate: rate-limit windows (a call beyond any window is a
counted violation and gets the vendor's rate-limit answer), then `down`, latency and one
per-call fault draw; bar faults (outliers, missing bars) are applied by the `Feed`.
`/_sim/stats` reports calls, violations and faults per provider; `/_sim/reset` clears them.

Starlette + uvicorn: small, well-kept, ASGI (the platform's API uses FastAPI, built on the
same stack), with HTTP and WebSocket in one server that runs in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from quantivista.config import ProviderFaultSettings, RateWindow, SimulatorServerSettings
from quantivista.errors import ConfigurationError
from quantivista.providers.simulator.formats import (
    alpha_vantage,
    finnhub,
    iex_cloud,
    polygon,
    yahoo,
)
from quantivista.providers.simulator.formats.common import (
    Feed,
    Handler,
    Reply,
    SimRequest,
    VendorFormat,
    stable_salt,
)
from quantivista.providers.simulator.market import SimulatedMarket

__all__ = [
    "FREE_TIER_LIMITS",
    "PROVIDERS",
    "SimulatorHandle",
    "SimulatorServer",
    "run_simulator",
]

FORMATS: dict[str, VendorFormat] = {
    f.name: f
    for f in (
        alpha_vantage.FORMAT,
        yahoo.FORMAT,
        finnhub.FORMAT,
        iex_cloud.FORMAT,
        polygon.FORMAT,
    )
}
PROVIDERS: tuple[str, ...] = tuple(FORMATS)
# the vendors' documented free-tier limits (research/providers.md), for realistic runs
FREE_TIER_LIMITS: dict[str, tuple[RateWindow, ...]] = {
    "alpha_vantage": (RateWindow(calls=1, seconds=1), RateWindow(calls=25, seconds=86_400)),
    "yahoo": (RateWindow(calls=2000, seconds=3600),),  # undocumented; IP-based in reality
    "finnhub": (RateWindow(calls=30, seconds=1), RateWindow(calls=60, seconds=60)),
    "iex_cloud": (RateWindow(calls=100, seconds=1),),
    "polygon": (RateWindow(calls=5, seconds=60),),
}
# per-call fault kinds in the order their shares are laid out on [0, 1)
_CALL_FAULTS = ("timeout", "server_error", "error_body", "malformed")


class _ProviderState:
    """Counters, windows and the seeded draws of one provider (guarded by the server lock)."""

    def __init__(self, name: str, faults: ProviderFaultSettings, seed: int) -> None:
        self.name = name
        self.seed = seed
        self.configure(faults)
        self.reset()

    def configure(self, faults: ProviderFaultSettings) -> None:
        self.faults = faults
        self.windows: list[deque[float]] = [deque() for _ in faults.rate_limits]

    def reset(self) -> None:
        self.rng = np.random.default_rng([self.seed, stable_salt(self.name)])
        self.windows = [deque() for _ in self.faults.rate_limits]
        self.calls = 0
        self.served = 0
        self.violations = 0
        self.fault_counts: Counter[str] = Counter()

    def admit(self, now: float) -> tuple[RateWindow, int] | None:
        """Record a call; return (window, retry-after seconds) when it breaks a limit."""
        slack = self.faults.rate_limit_slack_s
        for window, log in zip(self.faults.rate_limits, self.windows, strict=True):
            span = max(window.seconds - slack, 0.0)
            while log and log[0] <= now - span:
                log.popleft()
        for window, log in zip(self.faults.rate_limits, self.windows, strict=True):
            if len(log) >= window.calls:
                wait = log[0] + max(window.seconds - slack, 0.0) - now
                return window, max(1, math.ceil(wait))
        for log in self.windows:
            log.append(now)
        return None

    def draw(self) -> str | None:
        """Pick this call's fault (or None) from one uniform number."""
        f = self.faults
        u = float(self.rng.random())
        edge = 0.0
        for kind, rate in zip(
            _CALL_FAULTS,
            (f.timeout_rate, f.error_rate, f.error_body_rate, f.malformed_rate),
            strict=True,
        ):
            edge += rate
            if u < edge:
                return kind
        return None

    def delay_s(self) -> float:
        f = self.faults
        jitter = float(self.rng.random()) * f.latency_jitter_ms if f.latency_jitter_ms else 0.0
        return (f.latency_ms + jitter) / 1000.0

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "served": self.served,
            "violations": self.violations,
            "faults": dict(sorted(self.fault_counts.items())),
        }


class SimulatorServer:
    """The ASGI app and its state; `run_simulator` runs it on a socket."""

    def __init__(
        self, settings: SimulatorServerSettings, market: SimulatedMarket | None = None
    ) -> None:
        unknown = sorted(set(settings.providers) - set(FORMATS))
        if unknown:
            raise ConfigurationError(
                "unknown providers in simulator settings", providers=unknown, known=PROVIDERS
            )
        self.settings = settings
        self.market = market or SimulatedMarket(
            settings.seed, settings.universe_size, as_of=settings.as_of
        )
        # the market factor now, not inside concurrent requests (an instrument's own path is
        # built on its first request and cached: a race only builds the same arrays twice)
        self.market.regimes()
        self._lock = threading.Lock()
        self._states = {
            name: _ProviderState(name, settings.faults_for(name), settings.seed) for name in FORMATS
        }
        self.ws_stats: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.app = Starlette(routes=self._routes(), lifespan=self._lifespan)

    # -- state -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Return per-provider calls, served answers, violations and injected faults."""
        with self._lock:
            return {
                "providers": {name: s.stats() for name, s in self._states.items()},
                "websocket": dict(sorted(self.ws_stats.items())),
            }

    def reset(self) -> None:
        """Zero every counter, empty the rate windows and restart the seeded draws."""
        with self._lock:
            for state in self._states.values():
                state.reset()
            self.ws_stats.clear()

    def configure(self, provider: str, faults: ProviderFaultSettings) -> None:
        """Replace the faults of one provider while the server runs."""
        if provider not in self._states:
            raise ConfigurationError("unknown simulated provider", provider=provider)
        with self._lock:
            self._states[provider].configure(faults)

    def count_fault(self, provider: str, kind: str, n: int = 1) -> None:
        """Add `n` to a provider's fault counter (thread-safe)."""
        with self._lock:
            self._states[provider].fault_counts[kind] += n

    def request_stop(self) -> None:
        """Wake every hanging call and WebSocket so the server can stop promptly."""
        loop, event = self._loop, self._stopping
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def wait_stopping(self, timeout_s: float) -> bool:
        """Sleep up to `timeout_s`; return True when the server is stopping."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- ASGI ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        yield
        self._stopping.set()

    def _routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/_sim/stats", self._stats_endpoint, methods=["GET"]),
            Route("/_sim/reset", self._reset_endpoint, methods=["POST", "GET"]),
            WebSocketRoute("/finnhub/ws", finnhub.websocket_endpoint(self)),
        ]
        for name, fmt in FORMATS.items():
            for path, handler in fmt.routes:
                routes.append(Route(f"/{name}{path}", self._endpoint(fmt, handler)))
        return routes

    async def _stats_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    def _endpoint(
        self, fmt: VendorFormat, handler: Handler
    ) -> Callable[[Request], Awaitable[Response]]:
        name = fmt.name

        async def endpoint(request: Request) -> Response:
            state = self._states[name]
            with self._lock:
                state.calls += 1
                refused = state.admit(time.monotonic())
                if refused:
                    state.violations += 1
                faults = state.faults
                kind = None if refused or faults.down else state.draw()
                delay = state.delay_s()
                status_draw = int(state.rng.integers(0, 3))
            if delay:
                await self.wait_stopping(delay)
            if refused:
                return _response(fmt.rate_limited(*refused))
            req = SimRequest(
                provider=name,
                path_params={k: str(v) for k, v in request.path_params.items()},
                query=dict(request.query_params),
                headers={k.lower(): v for k, v in request.headers.items()},
                base_url=str(request.base_url).rstrip("/") + f"/{name}",
            )
            if faults.down:
                self.count_fault(name, "down")
                return _response(fmt.server_error(503))
            if kind == "timeout":
                self.count_fault(name, "timeout")
                await self.wait_stopping(faults.hang_s)
                return _response(fmt.server_error(504))
            if kind == "server_error":
                self.count_fault(name, "server_error")
                return _response(fmt.server_error((500, 502, 503)[status_draw]))
            if kind == "error_body":
                self.count_fault(name, "error_body")
                with self._lock:
                    reply = fmt.error_body(req, state.rng)
                return _response(reply)
            feed = Feed(self.market, name, faults, lambda k, n: self.count_fault(name, k, n))
            reply = await run_in_threadpool(handler, req, feed)
            if kind == "malformed":
                self.count_fault(name, "malformed")
                reply = _malform(reply, status_draw)
            with self._lock:
                state.served += 1
            return _response(reply)

        return endpoint


# what broken answers look like in the wild: a cut connection, an outage page, nothing
_OUTAGE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Yahoo</title></head><body><p>Will be right back..."
    b"</p><p>Thank you for your patience.</p></body></html>"
)


def _malform(reply: Reply, variant: int) -> Reply:
    """Break a reply one of three ways, keeping its status and declared media type."""
    if variant == 0:
        return Reply(reply.status, reply.body[: len(reply.body) // 2], reply.media_type)
    if variant == 1:
        return Reply(reply.status, _OUTAGE_PAGE, reply.media_type)
    return Reply(reply.status, b"", reply.media_type)


def _response(reply: Reply) -> Response:
    return Response(
        reply.body,
        status_code=reply.status,
        media_type=reply.media_type,
        headers=dict(reply.headers),
    )


# -- running it ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulatorHandle:
    """A running simulator: where it listens and what it counted."""

    server: SimulatorServer
    host: str
    port: int

    @property
    def url(self) -> str:
        """Return the server root, e.g. http://127.0.0.1:8765."""
        return f"http://{self.host}:{self.port}"

    def base_url(self, provider: str) -> str:
        """Return a provider's base URL (its real paths go after it)."""
        if provider not in FORMATS:
            raise ConfigurationError("unknown simulated provider", provider=provider)
        return f"{self.url}/{provider}"

    def ws_url(self) -> str:
        """Return the Finnhub WebSocket URL."""
        return f"ws://{self.host}:{self.port}/finnhub/ws"

    @property
    def market(self) -> SimulatedMarket:
        """Return the market being served."""
        return self.server.market

    def stats(self) -> dict[str, Any]:
        """Return the counters (the same JSON as `/_sim/stats`)."""
        return self.server.stats()

    def reset(self) -> None:
        """Zero the counters and rate windows."""
        self.server.reset()

    def configure(self, provider: str, faults: ProviderFaultSettings) -> None:
        """Change one provider's faults while running."""
        self.server.configure(provider, faults)


@contextlib.contextmanager
def run_simulator(
    config: SimulatorServerSettings | None = None,
    port: int | None = 0,
    *,
    market: SimulatedMarket | None = None,
    startup_timeout_s: float = 10.0,
) -> Iterator[SimulatorHandle]:
    """Run the simulator on a local port in a background thread; stop it on exit.

    `port=0` picks a free port (the default, for tests); `port=None` uses `config.port`.
    """
    settings = config or SimulatorServerSettings()
    sim = SimulatorServer(settings, market)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every keep-alive response waits ~40 ms for a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port if port is None else port))
    sock.listen(128)
    host, bound_port = sock.getsockname()[:2]
    server = uvicorn.Server(
        uvicorn.Config(
            sim.app,
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="qv-simulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:  # a bounded wait for the startup flag uvicorn exposes
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise ConfigurationError("the provider simulator did not start", port=bound_port)
        time.sleep(0.01)
    try:
        yield SimulatorHandle(sim, host, bound_port)
    finally:
        sim.request_stop()
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
