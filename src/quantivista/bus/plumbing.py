"""What the broker clients share: the topic prefix of a broker URL, and a private event loop
thread that lets synchronous callers drive an asyncio client (nats-py).

    prefix = url_prefix("nats://127.0.0.1:4222?prefix=qv")   # "qv" (the default too)
    loop = LoopThread("qv-nats", timeout_s=10)
    value = loop.run(client.call())        # wait for it
    future = loop.submit(client.call())    # or not (a concurrent.futures.Future)
    loop.stop()                            # cancel what is left, stop and close the loop
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

__all__ = ["LoopThread", "url_prefix"]

T = TypeVar("T")


def url_prefix(url: str, default: str = "qv") -> str:
    """Return the `?prefix=` of a broker URL (what its topic names start with)."""
    return parse_qs(urlsplit(url).query).get("prefix", [default])[0]


class LoopThread:
    """An asyncio event loop running on a daemon thread of its own."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule `coro` on the loop (in call order); return its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for it (3 x `timeout_s` unless told)."""
        return self.submit(coro).result(timeout if timeout is not None else self.timeout_s * 3)

    def stop(self) -> None:
        """Cancel the loop's tasks, stop it and close it (after the client closed)."""

        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_rest(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()
