"""File primitives the lake, its cache and its cold index share: identity and locks."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["file_identity", "flocked"]


def file_identity(path: Path) -> tuple[int, int, int]:
    """Return (inode, mtime ns, size): a file replaced by rename never keeps all three."""
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@contextmanager
def flocked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_file` (created if missing) for the block."""
    with open(lock_file, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
