"""The Market Data API as one FastAPI app: REST under /api/v1, probes, metrics, docs.

    app = create_app(Settings())        # what `qv serve` runs under uvicorn

Versioning: every route lives under /api/v1. A route that will go away first answers with
`Deprecation` and `Sunset` headers (RFC 9745, RFC 8594) for at least 90 days; v1 changes
only by adding optional parameters and fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from quantivista._version import __version__
from quantivista.acquisition.limits import MemoryBackend, RateLimiter, RedisBackend
from quantivista.api import errors, stream
from quantivista.api.cache import ResponseCache
from quantivista.api.fastpath import FastPath, Receive, Scope_, Send
from quantivista.api.graphql import graphql_router
from quantivista.api.lease import LeasedLimiter
from quantivista.api.metrics import ApiMetrics
from quantivista.api.middleware import MeasureMiddleware
from quantivista.api.page import router as status_page
from quantivista.api.relay import BrokerRelay
from quantivista.api.routes import audit, exports, ingestion, market, operations
from quantivista.api.state import ApiState
from quantivista.api.stream import StreamHub
from quantivista.clock import Clock
from quantivista.config import Settings
from quantivista.ops.alerting import start_alerting
from quantivista.ops.metrics import REGISTRY, watch_process
from quantivista.ops.tracing import configure as configure_tracing
from quantivista.providers.registry import ProviderRegistry
from quantivista.runtime import Runtime
from quantivista.services.encode import warm_up

__all__ = ["DEPRECATED", "QuantiVistaApi", "create_app"]

# path -> (deprecation date, sunset date) of routes on their way out (none yet)
DEPRECATED: dict[str, tuple[str, str]] = {}


def _state(settings: Settings, runtime: Runtime) -> ApiState:
    shared = settings.resilience.backend == "redis"
    redis_url = settings.services.redis_url if shared else None
    prefix = f"{settings.resilience.redis_prefix}:api"
    limiter: RateLimiter | LeasedLimiter
    if redis_url:  # shared by every API process: tokens leased a block per Redis call
        backend = RedisBackend(redis_url, prefix=prefix, server_clock=True)  # one clock: Redis
        limiter = LeasedLimiter(backend, runtime.clock)
    else:
        limiter = RateLimiter({}, clock=runtime.clock, backend=MemoryBackend())
    metrics = ApiMetrics()
    return ApiState(
        runtime=runtime,
        auth=runtime.auth,
        limiter=limiter,
        cache=ResponseCache(
            settings.api.cache_mb * 1024 * 1024,
            runtime.epoch,
            metrics,
            redis_url,
            prefix=f"{settings.resilience.redis_prefix}:api-cache",
        ),
        metrics=metrics,
    )


def _relay(settings: Settings, runtime: Runtime, hub: StreamHub) -> BrokerRelay | None:
    """Follow the broker's bar and trade topics for the WebSocket clients, when asked to."""
    wanted = settings.api.relay
    if wanted is None:  # by default: when another process can publish to the broker
        wanted = not settings.bus.url.startswith("memory:")
    if not wanted:
        return None
    relay = BrokerRelay(runtime.broker, runtime.codecs, hub.relay, settings.api.relay_topics)
    relay.start()
    return relay


async def _build_routes(app: FastAPI) -> None:
    """Have FastAPI build its per-route state now rather than on the first request.

    FastAPI builds an included router's routes (their parameter models) the first time a
    request is matched against them: ~60 ms of a server's first request, measured. A path
    no route has is matched against all of them; sent to the router directly, it touches
    no middleware (no metrics, no trace).
    """
    path = "/-build-routes-"
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": [], "app": app}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        del message

    with contextlib.suppress(HTTPException):  # the expected 404
        await app.router(scope, receive, send)


class QuantiVistaApi(FastAPI):
    """FastAPI with the fast path in front: a cached bars answer skips the framework whole
    (its per-request set-up and middleware stack cost more than serving the answer)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_path = FastPath()

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if not await self.fast_path.served(scope, send):
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: ProviderRegistry | None = None,
) -> FastAPI:
    """Return the API app; the platform's runtime opens when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, clock=clock, registry=registry)
        state = _state(settings, runtime)
        warm_up()
        hub = StreamHub(state, heartbeat_s=settings.api.ws_heartbeat_s)
        hub.start(asyncio.get_running_loop())
        relay = _relay(settings, runtime, hub)
        app.state.qv = state
        if isinstance(app, QuantiVistaApi):
            app.fast_path.state = state
        app.state.hub = hub
        app.state.relay = relay
        configure_tracing(settings.tracing, "api")
        alerting = threading.Event()
        start_alerting(
            settings.alerting,
            [state.metrics.registry, runtime.acquisition.analytics.registry],
            service="api", stop=alerting, clock=runtime.clock,
        )  # fmt: skip
        watch_process(
            "api",
            data_dir=settings.data_dir,
            markets={
                settings.ingest.calendar: lambda: runtime.calendar().is_open(runtime.clock.now())
            },
        )
        await _build_routes(app)  # before uvicorn accepts the first connection
        # the start-up heap (libraries, settings, the runtime) lives as long as the process:
        # kept out of the collector, a full collection no longer stalls requests scanning it
        gc.freeze()
        try:
            yield
        finally:
            if isinstance(app, QuantiVistaApi):
                app.fast_path.state = None
            if relay is not None:
                relay.stop()
            alerting.set()
            hub.stop()
            state.cache.close()
            state.limiter.close()
            runtime.close()

    app = QuantiVistaApi(
        title="QuantiVista Market Data API",
        version=__version__,
        summary="Bars, corporate actions, reference data and data quality over HTTP.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(market.router)
    app.include_router(operations.router)
    app.include_router(audit.router)
    app.include_router(exports.router)
    app.include_router(ingestion.router)
    app.include_router(stream.router)
    app.include_router(graphql_router(), include_in_schema=False)  # its own schema: GraphQL
    app.include_router(status_page)
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-None-Match"],
            expose_headers=["ETag", "X-RateLimit-Limit", "X-RateLimit-Remaining", "Retry-After"],
        )

    app.add_middleware(MeasureMiddleware, deprecated=DEPRECATED)

    @app.get("/healthz", tags=["operations"], include_in_schema=True)
    def healthz() -> dict[str, str]:
        """Say the process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz(request: Request) -> Response:
        """Say whether the store answers (503 when it does not)."""
        state: ApiState = request.app.state.qv
        try:
            state.runtime.backend.catalog.get_state("readyz")
        except Exception as exc:  # any failure means "not ready"; the reason is in the body
            return errors.problem(503, "NotReady", f"the store does not answer: {exc}")
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics: the platform's (ops.metrics), the API's, providers' and breakers'."""
        state: ApiState = request.app.state.qv
        body = b"".join(
            generate_latest(r)
            for r in (
                REGISTRY,
                state.metrics.registry,
                state.runtime.acquisition.analytics.registry,
            )
        )
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def uvicorn_config(settings: Settings) -> dict[str, Any]:
    """Return uvicorn's keyword arguments for `settings.api` (host, port, workers, TLS)."""
    api = settings.api
    config: dict[str, Any] = {
        "host": api.host,
        "port": api.port,
        "workers": api.workers,
        "log_level": settings.log_level.lower(),
        "timeout_graceful_shutdown": 10,
    }
    if api.ssl_certfile is not None:
        config["ssl_certfile"] = str(api.ssl_certfile)
        config["ssl_keyfile"] = str(api.ssl_keyfile) if api.ssl_keyfile else None
    return config
