"""A lake's background merges and folds in a child process (`storage.tidy_process`).

A fold in the writer's process competes with it for the GIL (its Python steps) and for
polars' thread pool (its concats, gathers and sorts): a streaming writer's micro-batch
beside a fold took 2-2.5x its CPU in wall time. In a child process at a lower priority
the fold shares the CPUs only, and the kernel lets the writer run first. The child opens
the same lake and runs `tidy` on it (`bars.tidy_in_child`); the files, locks and footers
are what every process of a lake shares already, so the writer sees the result as any
other process's fold (a fold's base names the base it was folded from, so the writer's
last-bar marks survive it: `bars_writes._known`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

_NICE = int(os.environ.get("QV_TIDY_NICE", "10"))  # the child's niceness


class ChildProcess:
    """One child process (started on first use with `start(*args)`, started again if it
    dies) that runs module-level functions for this process."""

    def __init__(self, start: Callable[..., None], *args: Any) -> None:
        self._start, self._args = start, args
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Return `fn(*args)` run in the child (its exception, raised here)."""
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1,
                    mp_context=get_context("spawn"),  # no copy of this process's threads, locks
                    initializer=_niced,
                    initargs=(self._start, *self._args),
                )
            pool = self._pool
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:  # the child died (killed, out of memory): a new one next time
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False)
            raise

    def close(self) -> None:
        """Stop the child (after what it is running)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _niced(start: Callable[..., None], *args: Any) -> None:
    os.nice(_NICE)
    start(*args)
