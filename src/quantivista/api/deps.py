"""Request dependencies: who is calling (token or API key), what they may do, rate limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from quantivista.api.state import ApiState
from quantivista.errors import AuthenticationError, PermissionDeniedError
from quantivista.model.auth import Principal, Scope, Tenant

__all__ = ["Caller", "admit", "api_state", "authenticate", "authenticated", "caller", "require"]


async def api_state(request: Request) -> ApiState:
    """Return the API process's shared state."""
    state = request.app.state.qv
    assert isinstance(state, ApiState)
    return state


State = Annotated[ApiState, Depends(api_state)]


class Caller:
    """The authenticated principal of a request and its tenant's entitlements."""

    def __init__(self, principal: Principal, tenant: Tenant) -> None:
        self.principal = principal
        self.tenant = tenant

    @property
    def client_id(self) -> str:
        """Return the calling client's id."""
        return self.principal.client_id


def authenticate(state: ApiState, authorization: str | None, api_key: str | None) -> Principal:
    """Return the principal of a bearer token or an API key; `AuthenticationError` if none."""
    if authorization:
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token:
            raise AuthenticationError("Authorization must be 'Bearer <token>'")
        return state.auth.from_token(token.strip())
    if api_key:
        return state.auth.from_api_key(api_key.strip())
    raise AuthenticationError("credentials required: a bearer token or an X-API-Key header")


async def authenticated(
    state: ApiState, authorization: str | None, api_key: str | None
) -> Principal:
    """`authenticate`, off the event loop when it would hash a secret: an API key not
    proven in this process yet (scrypt, tens of ms) is checked on a worker thread, so a
    client's first request does not stall every other request of the process."""
    if not authorization and api_key and state.auth.needs_proof(api_key.strip()):
        return await anyio.to_thread.run_sync(authenticate, state, authorization, api_key)
    return authenticate(state, authorization, api_key)


_BEARER = HTTPBearer(auto_error=False, description="an access token from /api/v1/auth/token")
_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="qv_<client_id>_<secret>")


async def caller(
    request: Request,
    state: State,
    token: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
    api_key: Annotated[str | None, Depends(_KEY)] = None,
) -> Caller:
    """Authenticate the request and count it against the client's rate limit.

    The limit's usage goes into `X-RateLimit-*` headers (added by the app's middleware).
    Runs on the event loop: every step is in memory (a proven key, a cached client and
    tenant, an in-process limiter or a token of this process's Redis lease; a round trip
    only per block of tokens, see `api.lease`); a key's first proof runs on a thread.
    """
    del token, api_key  # declared for the OpenAPI security schemes; read from the headers
    principal = await authenticated(
        state, request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    admit(state, request, principal)
    return Caller(principal, state.auth.tenant(principal.tenant))


def admit(state: ApiState, request: Request, principal: Principal) -> None:
    """Count the request against `principal`'s rate limit (`TooManyRequestsError` when it is
    spent; the usage goes into `X-RateLimit-*` headers) and mark it as the client's and its
    tenant's (for the audit trail: the API's and the page's requests alike)."""
    usage = state.admit(principal.client_id)
    if usage is not None:
        request.state.rate_limit = {
            "X-RateLimit-Limit": str(usage.rate.limit),
            "X-RateLimit-Remaining": str(usage.left),
            "X-RateLimit-Reset": f"{usage.resets_in_s:.0f}",
        }
    request.state.client_id = principal.client_id
    request.state.tenant = principal.tenant


def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """Return a dependency that admits callers holding `scope`."""

    async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.principal.can(scope):
            raise PermissionDeniedError(f"this needs the {scope.value} scope", scope=scope.value)
        return who

    return check
