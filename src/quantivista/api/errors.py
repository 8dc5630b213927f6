"""The one mapping of the platform's errors to HTTP: RFC 9457 problem+json bodies."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from quantivista.errors import (
    AuthenticationError,
    CalendarError,
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    QuantiVistaError,
    StorageError,
    StorageRejectedError,
    StorageUsageError,
    TooManyRequestsError,
)

__all__ = ["COMMON_RESPONSES", "Problem", "install", "problem", "status_of"]

PROBLEM = "application/problem+json"


class Problem(BaseModel):
    """An error answer (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    context: dict[str, Any] | None = None
    errors: list[dict[str, str]] | None = None


def _documented(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}  # fmt: skip


# what every authenticated route may answer besides its own result
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("missing, wrong, expired or revoked credentials"),
    403: _documented("a scope or an entitlement the caller lacks"),
    404: _documented("not found (or not the caller's tenant's)"),
    422: _documented("invalid parameters, each named"),
    429: _documented("the client's rate limit is spent; see Retry-After"),
    502: _documented("a data vendor failed"),
    503: _documented("the store does not answer"),
}

_STATUS: tuple[tuple[type[QuantiVistaError], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (TooManyRequestsError, 429),
    (NotFoundError, 404),
    (InvalidInputError, 422),
    (CalendarError, 422),
    (ProviderError, 502),
    # the request or its data is wrong for the store: asking again fails the same way
    (StorageUsageError, 422),
    (StorageRejectedError, 422),
    (StorageError, 503),
    (ConfigurationError, 500),
)


def status_of(exc: QuantiVistaError) -> int:
    """Return the HTTP status of a platform error (the most specific class wins)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """Return a problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers: platform errors, bad parameters and unknown routes."""

    @app.exception_handler(QuantiVistaError)
    async def platform_error(request: Request, exc: QuantiVistaError) -> JSONResponse:
        status = status_of(exc)
        headers = {}
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, TooManyRequestsError):
            headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
        context = {k: v for k, v in exc.context.items() if isinstance(v, str | int | float)}
        return problem(
            status, type(exc).__name__, exc.message, headers=headers or None, context=context
        )

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"parameter": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
             "in": str(e["loc"][0]), "message": e["msg"]}
            for e in exc.errors()
        ]  # fmt: skip
        names = ", ".join(e["parameter"] for e in errors)
        return problem(422, "InvalidParameters", f"invalid parameters: {names}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, "HTTPError", str(exc.detail), headers=headers)
