"""The lake's partition lock stripes, each one lock file opened once per process.

A write takes the locks of every partition it touches (a streaming micro-batch: about 40
of the 64 stripes). Opening and closing a lock file per stripe and write cost more than
the write's own rows, so each stripe's file stays open for the life of the `StripeLocks`
and a write only `flock`s and unlocks it.

Across processes nothing changes: `flock` excludes other open file descriptions, so a
process holding a stripe excludes every other process, and any `files.flocked` call on the
same file (a snapshot's `frozen`, which opens the files anew). Within a process, the kept
descriptor is shared by its threads, and a `flock` on a description the thread's process
already holds would succeed at once: each stripe also has a `threading.Lock`, taken before
the `flock` and released after it. A forked child must not use the parent's descriptors
(the same open file descriptions: parent and child would not exclude each other), so the
table notices a new process id and opens its own files, never unlocking the inherited ones.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["StripeLocks"]


class StripeLocks:
    """`stripes` lock files in `directory` (`NN.lock`), kept open, taken in stripe order."""

    def __init__(self, directory: Path, stripes: int) -> None:
        self._dir = directory
        self._stripes = stripes
        self._fds: list[int | None] = [None] * stripes
        self._mutexes = [threading.Lock() for _ in range(stripes)]
        self._opening = threading.Lock()
        self._pid = os.getpid()
        # the descriptors close with the object (no ResourceWarning: they are plain fds)
        weakref.finalize(self, _close_all, self._fds, self._pid)

    def path(self, stripe: int) -> Path:
        """Return the lock file of `stripe`."""
        return self._dir / f"{stripe:02d}.lock"

    def _fd(self, stripe: int) -> int:
        fd = self._fds[stripe]
        if fd is None:
            with self._opening:
                fd = self._fds[stripe]
                if fd is None:
                    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                    fd = self._fds[stripe] = os.open(self.path(stripe), flags, 0o644)
        return fd

    def _forked(self) -> None:
        """Forget the parent's descriptors and mutexes (a forked child)."""
        with self._opening:
            if self._pid == os.getpid():
                return
            for i in range(self._stripes):
                self._fds[i] = None  # the parent's: left open, never unlocked here
            self._mutexes = [threading.Lock() for _ in range(self._stripes)]
            self._pid = os.getpid()

    @contextmanager
    def held(self, stripes: Iterable[int]) -> Iterator[None]:
        """Hold `stripes` (in ascending order, so writers never deadlock) for the block."""
        if self._pid != os.getpid():
            self._forked()
        taken: list[tuple[threading.Lock, int]] = []
        mutexes = self._mutexes
        try:
            for stripe in sorted(set(stripes)):
                mutex = mutexes[stripe]
                mutex.acquire()
                try:
                    fd = self._fd(stripe)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    mutex.release()
                    raise
                taken.append((mutex, fd))
            yield
        finally:
            for mutex, fd in reversed(taken):
                fcntl.flock(fd, fcntl.LOCK_UN)
                mutex.release()


def _close_all(fds: list[int | None], pid: int) -> None:
    if os.getpid() != pid:
        return
    for fd in fds:
        if fd is not None:
            os.close(fd)
