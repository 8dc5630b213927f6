"""The embedded store's leader lease: an exclusive `flock` on a file in the data directory.

The kernel drops the lock when its holder dies (even by `kill -9`), so a restarted or
standby process takes over without waiting out an expiry. Local file systems only: NFS
locks are not to be trusted for this.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO, Any

__all__ = ["FileLease"]


class FileLease:
    """One named lease under `root`: held by at most one open lease object at a time."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = Path(root) / f".{name}.lease"
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Say whether this object holds the lease."""
        return self._file is not None

    def acquire(self) -> bool:
        """Take the lease if it is free (never blocks); True while this object holds it."""
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another holder
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        handle.flush()
        self._file = handle
        return True

    def renew(self) -> bool:
        """Say whether the lease is still held (a flock lasts as long as its file is open)."""
        return self._file is not None

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def holder(self) -> dict[str, Any] | None:
        """Return who last took the lease (pid, host), if anyone did."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        return json.loads(text) if text else None
