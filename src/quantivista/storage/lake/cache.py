"""An in-process cache of decoded lake files, keyed by file identity.

Each entry remembers the file's identity: (inode, mtime, size) for a hot partition file.
Writers replace partition files by rename, which gives them a new inode, so any write, by
this process or another, makes the stale entry miss on the next read: invalidation needs no
messages. Cold files (on any fsspec filesystem) use their size and mtime or ETag instead,
as the cold index recorded them (`lookup` takes the identity from the caller).

A hot file is decoded from one open handle, and its entry keyed by that handle's identity
(`fstat`), not by a `stat` of the path taken before or after: a file replaced by another
process between the two would otherwise be remembered under the wrong identity.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import IO, Generic, Protocol, TypeVar

from quantivista.storage.lake.files import file_identity, handle_identity

__all__ = ["FileCache"]

_Key = Hashable


class _Sized(Protocol):
    def estimated_size(self) -> int | float: ...


T = TypeVar("T", bound=_Sized)


class FileCache(Generic[T]):
    """A least-recently-used map from file path to its decoded contents, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[_Key, T, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: Path, decode: Callable[[IO[bytes]], T], part: str = "") -> T:
        """Return the contents of `path`, decoding them when absent or when the file changed.

        `decode` reads the file from an open handle; a missing file raises
        `FileNotFoundError`. `part` names a part of the file that `decode` reads (some
        symbols): it is remembered apart from the whole file and from other parts.
        """
        name = f"{path}#{part}" if part else str(path)
        if self.max_bytes > 0:
            key = file_identity(path)
            with self._lock:
                entry = self._entries.get(name)
                if entry is not None and entry[0] == key:
                    self._entries.move_to_end(name)
                    self.hits += 1
                    return entry[1]
        with open(path, "rb") as handle:
            value = decode(handle)
            key = handle_identity(handle)
        if self.max_bytes > 0:
            self._store(name, key, value, miss=True)
        return value

    def peek(self, path: Path) -> T | None:
        """Return the decoded contents of `path` if remembered and the file is unchanged."""
        if self.max_bytes <= 0:
            return None
        name = str(path)
        with self._lock:
            entry = self._entries.get(name)
        if entry is None or entry[0] != file_identity(path):
            return None
        with self._lock:
            if name in self._entries:
                self._entries.move_to_end(name)
            self.hits += 1
        return entry[1]

    def lookup(self, name: str, key: Hashable, load: Callable[[], T]) -> T:
        """Return the entry `name` if it has identity `key`; else load, remember, return it."""
        if self.max_bytes <= 0:
            return load()
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry[0] == key:
                self._entries.move_to_end(name)
                self.hits += 1
                return entry[1]
        value = load()
        self._store(name, key, value, miss=True)
        return value

    def put(self, path: Path, value: T) -> None:
        """Remember `value` as the contents of `path` as it is now (after writing it)."""
        if self.max_bytes > 0:
            self._store(str(path), file_identity(path), value, miss=False)

    def _store(self, name: str, key: _Key, value: T, *, miss: bool) -> None:
        size = int(value.estimated_size())
        with self._lock:
            self.misses += miss
            old = self._entries.pop(name, None)
            if old is not None:
                self._bytes -= old[2]
            if size <= self.max_bytes:
                self._entries[name] = (key, value, size)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, (_, _, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
