"""Run a long-lived service: probes on their port, SIGTERM/SIGINT -> graceful stop.

    result = run_daemon("stream", settings.probes, main, registries=[...], checks={...})

The start-up heap is frozen (`gc.freeze`) before `main` runs. `main(stop)` runs in an event
loop until it returns; a signal sets `stop` and marks the probes as draining (`/readyz` and
`/healthz` answer 503), so `main` finishes its batch, flushes and returns. A second signal
is not special-cased: `main` decides how fast it stops.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry

from quantivista.config import ProbeSettings
from quantivista.ops.probes import Check, ProbeServer

__all__ = ["run_daemon"]

T = TypeVar("T")


def run_daemon(
    service: str,
    probes: ProbeSettings,
    main: Callable[[asyncio.Event], Awaitable[T]],
    *,
    registries: Iterable[CollectorRegistry] = (),
    checks: Mapping[str, Check] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> T:
    """Serve probes and run `main` until it returns; return its result."""
    server = ProbeServer(service, probes, registries=registries)
    for name, check in (checks or {}).items():
        server.add_check(name, check)

    async def run() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            server.draining()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    with server:
        if on_ready is not None:
            on_ready(server.url)
        # the start-up heap (libraries, settings, the runtime) lives as long as the process:
        # kept out of the collector, a full collection walks only what came after (a stream's
        # micro-batch waited ~45 ms for one walking the whole heap, a few times a minute)
        gc.freeze()
        return asyncio.run(run())
