"""The status page's routes: sign-in, sign-out, the page, its stylesheet and icon.

    GET  /login    the form          POST /login   token into an HttpOnly cookie, then /
    GET  /         the status page (303 to /login without a valid session)
    GET|POST /logout   forget the cookie

Pages are never cached and carry a Content-Security-Policy that allows only the app's own
stylesheet and icon: no script runs, nothing is fetched from elsewhere.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from quantivista.api.deps import State
from quantivista.api.page import html
from quantivista.api.page.data import ChartRequest, gather
from quantivista.api.page.session import COOKIE, clear_session, safe_next, set_session, signed_in
from quantivista.errors import AuthenticationError, TooManyRequestsError
from quantivista.model.auth import Scope

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1f4e79"/>'
    '<path d="M4 11V6M8 12V4M12 10V7" stroke="#fff" stroke-width="2"/></svg>'
)


def _page(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def _same_origin(request: Request) -> bool:
    """Refuse form posts from other sites (a browser always sends Origin on a POST)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


@router.get("/login")
def login_form(request: Request, state: State, next: str | None = None) -> Response:
    """Show the sign-in form (or go straight to the page with a valid session)."""
    try:
        signed_in(state, request)
    except AuthenticationError:
        return _page(html.login_page(next_url=safe_next(next)))
    except TooManyRequestsError:
        pass  # signed in, but over its limit: the page says so
    return _redirect(safe_next(next))


@router.post("/login")
def login(
    request: Request,
    state: State,
    client_id: Annotated[str, Form()] = "",
    client_secret: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Exchange client credentials for a token kept in an HttpOnly, SameSite=Strict cookie."""
    target = safe_next(next)
    if not _same_origin(request):
        return _page(html.error_page(403, "Forbidden", "sign in from this site's form"), 403)
    client_id = client_id.strip()
    try:
        issued = state.auth.token(client_id, client_secret)
        principal = state.auth.from_token(issued.access_token)
    except AuthenticationError:
        page = html.login_page(
            next_url=target, client_id=client_id, error="Wrong client id or secret."
        )
        return _page(page, 401)
    if not principal.can(Scope.READ_BARS):
        page = html.login_page(
            next_url=target, client_id=client_id,
            error="This client lacks the read:bars scope the status page needs.",
        )  # fmt: skip
        return _page(page, 403)
    response = _redirect(target)
    set_session(response, request, issued.access_token, issued.expires_in)
    return response


@router.api_route("/logout", methods=["GET", "POST"])
def logout(request: Request) -> Response:
    """Forget the session cookie and show the sign-in form."""
    response = _redirect("/login")
    clear_session(response, request)
    return response


@router.get("/")
def status(
    request: Request,
    state: State,
    symbol: str | None = None,
    timeframe: str | None = None,
    adjust: str | None = None,
    days: str | None = None,
) -> Response:
    """Show the status page to a signed-in client holding read:bars."""
    try:
        who = signed_in(state, request)
    except AuthenticationError:
        query = request.url.query
        response = _redirect("/login?" + urlencode({"next": "/?" + query}) if query else "/login")
        if request.cookies.get(COOKIE):
            clear_session(response, request)
        return response
    except TooManyRequestsError as exc:
        wait = str(max(1, round(exc.retry_after_s)))
        page = html.error_page(429, "Too many requests", f"try again in {wait} s")
        return _page(page, 429, {"Retry-After": wait})
    if not who.principal.can(Scope.READ_BARS):
        page = html.error_page(403, "Forbidden", "the status page needs the read:bars scope")
        return _page(page, 403)
    chart = ChartRequest.parse(symbol, timeframe, adjust, days)
    return _page(html.status_page(gather(state.runtime, who, chart)))


@cache
def _stylesheet() -> str:
    return files("quantivista.api.page").joinpath("style.css").read_text(encoding="utf-8")


@router.get(html.STYLESHEET)
def stylesheet() -> Response:
    """Serve the page's stylesheet."""
    return Response(
        _stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get(html.FAVICON)
def favicon() -> Response:
    """Serve the page's icon."""
    return Response(
        FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )
