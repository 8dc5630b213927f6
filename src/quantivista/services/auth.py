"""API authentication: clients with secrets, OAuth 2.0 client-credentials tokens, API keys.

A client belongs to a tenant and holds scopes. Its secret is shown once, at creation, and
kept only as an scrypt hash. It can be exchanged for a short-lived JWT (`token`), or sent
as an API key (`qv_<client_id>_<secret>`) by scripts. Tokens are HS256-signed with
`api.jwt_secret`, or with a key generated once and kept in the store so that every API
process of a platform accepts every other's tokens. Revoking a client rejects its API key
and every token issued to it at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from uuid import uuid4

import jwt

from quantivista.clock import Clock
from quantivista.config import ApiSettings
from quantivista.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from quantivista.model.auth import ApiClient, Principal, Scope, Tenant
from quantivista.storage.contracts import ClientStore, JobCatalog

__all__ = ["AuthService", "IssuedClient", "Token"]

_KEY_STATE = "api_signing_key"
_ALGORITHM = "HS256"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_CACHE_S = 5.0  # a revocation reaches every API process within this long


@dataclass(frozen=True)
class IssuedClient:
    """A new client's credentials: the only time the secret is shown."""

    client_id: str
    client_secret: str
    tenant: str
    scopes: list[str]

    @property
    def api_key(self) -> str:
        """Return the API key form of the credentials (for `X-API-Key`)."""
        return f"qv_{self.client_id}_{self.client_secret}"


@dataclass(frozen=True)
class Token:
    """An OAuth 2.0 access token response."""

    access_token: str
    expires_in: int
    scope: str
    token_type: str = "bearer"


def _hash(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _matches(secret: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        expected = _hash(secret, bytes.fromhex(salt)).split("$")[2]
    except ValueError:
        return False
    return hmac.compare_digest(expected, digest)


class AuthService:
    """Create and revoke clients; turn credentials and tokens into principals."""

    def __init__(
        self, clients: ClientStore, catalog: JobCatalog, settings: ApiSettings, clock: Clock
    ) -> None:
        self.clients = clients
        self.catalog = catalog
        self.settings = settings
        self.clock = clock
        self._key: bytes | None = None
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, ApiClient]] = {}  # client_id -> (when, record)
        # API keys proven once, by a fast digest -> (client_id, the hash they matched):
        # scrypt costs tens of ms, too much per request
        self._keys: dict[bytes, tuple[str, str]] = {}
        self._proving: dict[bytes, threading.Lock] = {}  # keys being proven -> their lock
        self._tenants: dict[str, tuple[float, Tenant]] = {}
        # credentials (an API key, a token) already turned into a principal -> (when the client
        # record they were checked against was read, the principal, the token's exp): good
        # as long as that record, so a request costs a dict lookup, not a digest, a JWT
        # signature check and a model
        self._proven: dict[str, tuple[float, Principal, int | None]] = {}

    # -- clients ---------------------------------------------------------------------------
    def create_client(self, tenant: str, scopes: Iterable[str], *, name: str = "") -> IssuedClient:
        """Create a client of `tenant` with `scopes`; return its credentials (shown once)."""
        try:
            granted = sorted({Scope(s.strip()) for s in scopes if s.strip()})
        except ValueError as exc:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInputError(f"unknown scope ({exc}); known: {known}") from None
        if not granted:
            raise InvalidInputError("a client needs at least one scope")
        Tenant(name=tenant)  # validates the name
        client_id = uuid4().hex[:16]
        secret = secrets.token_urlsafe(32)
        self.clients.save_client(
            ApiClient(
                client_id=client_id,
                tenant=tenant,
                scopes=granted,
                secret_hash=_hash(secret),
                name=name,
                created_at=self.clock.now(),
            )
        )
        return IssuedClient(client_id, secret, tenant, [s.value for s in granted])

    def revoke(self, client_id: str) -> ApiClient:
        """Revoke a client: its key and every token issued to it stop working."""
        client = self.clients.client(client_id)
        revoked = client.model_copy(update={"revoked_at": self.clock.now()})
        self.clients.save_client(revoked)
        with self._lock:
            self._seen.pop(client_id, None)
            self._keys = {k: v for k, v in self._keys.items() if v[0] != client_id}
            self._proven = {k: v for k, v in self._proven.items() if v[1].client_id != client_id}
        return revoked

    def set_tenant(
        self,
        name: str,
        *,
        datasets: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
        timeframes: Sequence[str] | None = None,
    ) -> Tenant:
        """Record a tenant's entitlements (None: unrestricted)."""
        tenant = Tenant(
            name=name,
            datasets=list(datasets) if datasets is not None else None,
            symbols=list(symbols) if symbols is not None else None,
            timeframes=list(timeframes) if timeframes is not None else None,
        )
        self.clients.save_tenant(tenant)
        with self._lock:
            self._tenants.pop(name, None)
        return tenant

    # -- credentials -> principals ---------------------------------------------------------
    def token(self, client_id: str, client_secret: str, scope: str | None = None) -> Token:
        """Exchange client credentials for an access token (OAuth 2.0 client credentials)."""
        client = self._verified(client_id, client_secret)
        granted = {s.value for s in client.scopes}
        asked = set(scope.split()) if scope else granted
        if not asked <= granted:
            raise PermissionDeniedError(
                "the client does not hold the scopes it asked for",
                asked=sorted(asked - granted),
            )
        now = int(self.clock.now().timestamp())
        scope_text = " ".join(sorted(asked))
        claims: dict[str, str | int] = {
            "sub": client.client_id,
            "tenant": client.tenant,
            "scope": scope_text,
            "iat": now,
            "exp": now + self.settings.token_ttl_s,
            "jti": uuid4().hex,
        }
        encoded = jwt.encode(claims, self._signing_key(), algorithm=_ALGORITHM)
        return Token(encoded, self.settings.token_ttl_s, scope_text)

    def from_token(self, token: str) -> Principal:
        """Return the principal of a bearer token; `AuthenticationError` when it is not valid."""
        known = self.recalled(token)
        if known is not None:
            return known
        try:
            claims = jwt.decode(
                token,
                self._signing_key(),
                algorithms=[_ALGORITHM],
                # expiry is checked below against the platform's clock, not the wall clock
                options={
                    "require": ["exp", "iat", "sub", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"not a valid access token ({exc})") from None
        if int(claims["exp"]) <= int(self.clock.now().timestamp()):
            raise AuthenticationError("the access token has expired")
        client = self._active(str(claims["sub"]))
        scopes = frozenset(Scope(s) for s in str(claims.get("scope", "")).split() if s)
        principal = Principal(client_id=client.client_id, tenant=client.tenant, scopes=scopes)
        return self._remember(token, principal, int(claims["exp"]))

    def from_api_key(self, key: str) -> Principal:
        """Return the principal of an API key (`qv_<client_id>_<secret>`)."""
        known = self.recalled(key)
        if known is not None:
            return known
        prefix, _, rest = key.partition("_")
        client_id, _, secret = rest.partition("_")
        if prefix != "qv" or not client_id or not secret:
            raise AuthenticationError("not a QuantiVista API key")
        digest = hashlib.sha256(key.encode()).digest()
        client = self._proven_key(digest)
        if client is None:
            with self._lock:
                proving = self._proving.setdefault(digest, threading.Lock())
            # one proof of a key at a time: requests that bring a new key together (a
            # client's first burst, many WebSockets) wait for the first one's hash
            with proving:
                client = self._proven_key(digest)
                if client is None:
                    client = self._verified(client_id, secret)
                    with self._lock:
                        if len(self._keys) > 10_000:
                            self._keys.clear()
                        self._keys[digest] = (client.client_id, client.secret_hash)
            with self._lock:
                self._proving.pop(digest, None)
        principal = Principal(
            client_id=client.client_id, tenant=client.tenant, scopes=frozenset(client.scopes)
        )
        return self._remember(key, principal, None)

    def _proven_key(self, digest: bytes) -> ApiClient | None:
        """Return the client of a key proven before (by its digest), while the client's
        stored hash is the one it was proven against; None: the key must prove itself.

        A key proven once is not hashed again (scrypt is meant to be slow: tens of ms);
        the record is re-read every _CACHE_S, so revocation and rotation still count.
        """
        with self._lock:
            proven = self._keys.get(digest)
        if proven is None:
            return None
        client = self._active(proven[0])
        return client if client.secret_hash == proven[1] else None

    def needs_proof(self, key: str) -> bool:
        """Say whether `from_api_key(key)` would hash the key's secret (scrypt: tens of ms,
        a worker thread's job rather than an event loop's): a key not proven in this
        process yet, or proven against a secret hash the client no longer has."""
        if self.recalled(key) is not None:
            return False
        with self._lock:
            proven = self._keys.get(hashlib.sha256(key.encode()).digest())
            seen = self._seen.get(proven[0]) if proven is not None else None
        return proven is None or seen is None or seen[1].secret_hash != proven[1]

    def tenant(self, name: str) -> Tenant:
        """Return a tenant's entitlements (unrestricted when it has no record).

        Cached a few seconds, like clients: a change reaches every API process within that.
        """
        now = time.monotonic()
        with self._lock:
            seen = self._tenants.get(name)
        if seen is not None and now - seen[0] <= _CACHE_S:
            return seen[1]
        tenant = self.clients.tenant(name) or Tenant(name=name)
        with self._lock:
            self._tenants[name] = (now, tenant)
        return tenant

    @staticmethod
    def entitled(tenant: Tenant, *, dataset: str, symbols: Iterable[str] = (),
                 timeframe: str | None = None) -> None:  # fmt: skip
        """Raise `PermissionDeniedError` unless the tenant may read these data."""
        if tenant.datasets is not None and dataset not in tenant.datasets:
            raise PermissionDeniedError(f"tenant {tenant.name} is not entitled to {dataset}")
        if (
            timeframe is not None
            and tenant.timeframes is not None
            and timeframe not in tenant.timeframes
        ):
            raise PermissionDeniedError(f"tenant {tenant.name} is not entitled to {timeframe} bars")
        if tenant.symbols is not None:
            denied = [s for s in symbols if not any(fnmatchcase(s, p) for p in tenant.symbols)]
            if denied:
                raise PermissionDeniedError(
                    f"tenant {tenant.name} is not entitled to {', '.join(denied[:5])}",
                    symbols=denied[:20],
                )

    # -- internals -------------------------------------------------------------------------
    def recalled(self, credential: str) -> Principal | None:
        """Return the principal `credential` (an API key, a token) was proven to be lately,
        while that still holds (a dict lookup); None: check it the full way."""
        known = self._proven.get(credential)
        if known is None or time.monotonic() - known[0] > _CACHE_S:
            return None
        if known[2] is not None and known[2] <= int(self.clock.now().timestamp()):
            return None  # an expired token: the full check says so
        return known[1]

    def _remember(self, credential: str, principal: Principal, exp: int | None) -> Principal:
        seen = self._seen.get(principal.client_id)
        if seen is not None:  # good until its client record is due to be read again
            with self._lock:
                if len(self._proven) > 10_000:
                    self._proven.clear()
                self._proven[credential] = (seen[0], principal, exp)
        return principal

    def _verified(self, client_id: str, secret: str) -> ApiClient:
        client = self._active(client_id, fresh=True)
        if not _matches(secret, client.secret_hash):
            raise AuthenticationError("wrong client credentials")
        return client

    def _active(self, client_id: str, *, fresh: bool = False) -> ApiClient:
        """Return the client record (cached a few seconds); refuse unknown and revoked ones."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(client_id)
        if seen is None or fresh or now - seen[0] > _CACHE_S:
            try:
                client = self.clients.client(client_id)
            except NotFoundError:
                raise AuthenticationError("unknown client") from None
            with self._lock:
                self._seen[client_id] = (now, client)
        else:
            client = seen[1]
        if client.revoked_at is not None:
            raise AuthenticationError("the client was revoked")
        return client

    def _signing_key(self) -> bytes:
        if self._key is None:
            configured = self.settings.jwt_secret
            if configured is not None:
                self._key = configured.get_secret_value().encode()
            else:
                # the first API process makes it; every other one reads the same key
                kept = self.catalog.setdefault_state(_KEY_STATE, {"key": secrets.token_hex(32)})
                self._key = str(kept["key"]).encode()
        return self._key
