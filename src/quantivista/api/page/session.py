"""The page's sign-in session: the access token in an HttpOnly, SameSite=Strict cookie.

The cookie holds the same JWT a client gets from `POST /api/v1/auth/token`, so it expires,
and dies with a revoked client, exactly like a bearer token; nothing is kept server-side.
"""

from __future__ import annotations

from fastapi import Request, Response

from quantivista.api.deps import Caller, admit, authenticate
from quantivista.api.state import ApiState
from quantivista.errors import AuthenticationError

__all__ = ["COOKIE", "clear_session", "safe_next", "set_session", "signed_in"]

COOKIE = "qv_session"


def signed_in(state: ApiState, request: Request) -> Caller:
    """Return the caller of the session cookie; count the request against its rate limit.

    `AuthenticationError` without a cookie or with one that no longer authenticates;
    `TooManyRequestsError` when the client's rate limit is spent.
    """
    token = request.cookies.get(COOKIE)
    if not token:
        raise AuthenticationError("sign in first")
    principal = authenticate(state, f"Bearer {token}", None)
    admit(state, request, principal)
    return Caller(principal, state.auth.tenant(principal.tenant))


def set_session(response: Response, request: Request, token: str, max_age_s: int) -> None:
    """Put the access token in the session cookie (Secure when served over HTTPS)."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response, request: Request) -> None:
    """Expire the session cookie."""
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def safe_next(target: str | None) -> str:
    """Return where to go after signing in: the page itself only (no open redirect)."""
    if target and (target == "/" or target.startswith("/?")) and "\\" not in target:
        return target
    return "/"
