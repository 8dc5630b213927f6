"""The PostgreSQL backend's leader lease: a session advisory lock on its own connection.

The server drops the lock when the session ends, so a holder that dies (or loses its
network) frees the lease; `renew` notices a broken connection and reports the lease lost.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from typing import Any

import psycopg

from quantivista.storage.postgres.db import maps_storage_errors

__all__ = ["AdvisoryLease"]


def lock_key(name: str) -> int:
    """Return the signed 64-bit advisory lock key of a lease name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@maps_storage_errors
class AdvisoryLease:
    """One named lease in a database: `pg_try_advisory_lock` on a dedicated connection."""

    def __init__(self, dsn: str, name: str) -> None:
        self._dsn = dsn
        self.name = name
        self.key = lock_key(name)
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """Say whether this object holds the lease."""
        return self._held

    def acquire(self) -> bool:
        """Take the lease if it is free (never blocks); True while this object holds it."""
        if self._held:
            return self.renew()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error:
            self._drop()
            return False
        self._held = bool(row and row[0])
        return self._held

    def renew(self) -> bool:
        """Check the session (and so the lock) is alive; False once it is lost."""
        if not self._held or self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self._drop()
        return self._held

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._conn is not None and self._held:
            with suppress(psycopg.Error):  # the session is gone: so is the lock
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self._drop()

    def _drop(self) -> None:
        self._held = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
