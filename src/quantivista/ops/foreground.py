"""Foreground work of this process, that background upkeep yields to.

A streaming writer's micro-batch (validate, store, publish: ~15 ms) beside a background
fold or merge of the lake's delta files, or a score compaction, took 2-3x its CPU in wall
time: the upkeep's Python steps hold the GIL and its polars calls fill polars' thread pool
(`perf/append_tail.py`). Upkeep is not urgent, so between its steps it waits while a write
runs (`wait_idle`), up to a bound: a process that writes back to back still gets its
upkeep done, in the gaps or after the bound."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

YIELD_S = 0.05  # the longest a background step waits for the foreground to pause


class Foreground:
    """Counts the foreground work under way; background steps wait for none."""

    def __init__(self) -> None:
        self._active = 0
        self._idle = threading.Condition(threading.Lock())

    @contextmanager
    def running(self) -> Iterator[None]:
        """Mark the block as foreground work (nested and concurrent blocks count)."""
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                if not self._active:
                    self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no foreground work runs, at most `timeout` seconds (`YIELD_S`); say
        whether none runs (False: the bound passed, go on anyway)."""
        with self._idle:
            return self._idle.wait_for(
                lambda: not self._active, YIELD_S if timeout is None else timeout
            )


FOREGROUND = Foreground()  # the process's: writers mark their batches, upkeep yields
