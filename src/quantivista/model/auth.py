"""API clients, tenants and their entitlements."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["ApiClient", "Principal", "Scope", "Tenant"]


class Scope(StrEnum):
    """What a client may do."""

    READ_BARS = "read:bars"
    READ_REFERENCE = "read:reference"
    WRITE_INGEST = "write:ingest"
    ADMIN = "admin"


class Tenant(BaseModel):
    """A customer of the platform: its clients see its private data only.

    Entitlements restrict what its clients may read; None means everything.
    `symbols` are shell-style patterns (`AAPL`, `BRK.*`).
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    datasets: list[str] | None = None  # bars, actions, instruments, quality, ...
    symbols: list[str] | None = None
    timeframes: list[str] | None = None


class ApiClient(BaseModel):
    """One client credential: its tenant, scopes and the hash of its secret."""

    model_config = ConfigDict(frozen=True)

    client_id: str
    tenant: str
    scopes: list[Scope]
    secret_hash: str  # scrypt, with its salt: the secret itself is never stored
    name: str = ""
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None


class Principal(BaseModel):
    """Who a request acts for: the client, its tenant and the scopes it was granted."""

    model_config = ConfigDict(frozen=True)

    client_id: str
    tenant: str
    scopes: frozenset[Scope]

    def can(self, scope: Scope) -> bool:
        """Say whether the principal holds `scope` (admin holds every scope)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes
