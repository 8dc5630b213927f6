"""The status page's HTML, built as strings; every value from outside goes through `esc`.

No template engine: the page is a handful of tables and two charts, and plain functions keep
the escaping visible at each call. Styles come from the app's own stylesheet; there is no
script at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from urllib.parse import urlencode

from quantivista.api.page.data import Chart, StatusView
from quantivista.api.page.svg import candles_svg, quality_svg
from quantivista.errors import QuantiVistaError
from quantivista.model.auth import Scope
from quantivista.model.jobs import IngestionJob
from quantivista.model.timeframe import Timeframe

__all__ = ["STYLESHEET", "error_page", "esc", "login_page", "status_page"]

STYLESHEET = "/_status/style.css"
FAVICON = "/_status/favicon.svg"


def esc(value: object) -> str:
    """Return `value` as text safe inside HTML elements and quoted attributes."""
    return escape("" if value is None else str(value), quote=True)


def document(title: str, body: str, *, page_class: str = "") -> str:
    """Return a whole HTML document around `body`."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f'<link rel="icon" href="{FAVICON}" type="image/svg+xml">'
        f'<link rel="stylesheet" href="{STYLESHEET}">'
        f'</head><body class="{esc(page_class)}">{body}</body></html>\n'
    )


def table(
    columns: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (),
    empty: str = "nothing yet",
) -> str:  # fmt: skip
    """Return a table; cells are already-escaped HTML, `numeric` columns align right."""
    heads = "".join(
        f"<th{' class=num' if i in numeric else ''}>{esc(c)}</th>" for i, c in enumerate(columns)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(columns)}" class="empty">{esc(empty)}</td></tr>'
    return f"<table><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def _when(value: datetime | None, pattern: str = "%Y-%m-%d %H:%M") -> str:
    return "" if value is None else esc(value.strftime(pattern))


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {esc(kind)}">{esc(text)}</span>'


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else ""


# -- sign-in ---------------------------------------------------------------------------------
def login_page(*, next_url: str, client_id: str = "", error: str | None = None) -> str:
    """Return the sign-in form (client id and secret of an API client)."""
    notice = f'<p class="notice error" role="alert">{esc(error)}</p>' if error else ""
    body = (
        '<main class="login"><form class="card" method="post" action="/login">'
        '<h1><span class="mark">QV</span> QuantiVista status</h1>'
        "<p class=muted>Sign in with an API client's id and secret "
        "(<code>qv auth create-client</code>).</p>"
        f"{notice}"
        '<label for="client_id">Client id</label>'
        f'<input id="client_id" name="client_id" value="{esc(client_id)}" required '
        'autocomplete="username" autofocus>'
        '<label for="client_secret">Client secret</label>'
        '<input id="client_secret" name="client_secret" type="password" required '
        'autocomplete="current-password">'
        f'<input type="hidden" name="next" value="{esc(next_url)}">'
        '<button type="submit">Sign in</button></form></main>'
    )
    return document("Sign in · QuantiVista", body, page_class="login-page")


def error_page(status: int, title: str, detail: str) -> str:
    """Return a small page for a refusal (403, 429) with a way out."""
    body = (
        f'<main class="login"><div class="card"><h1>{status} · {esc(title)}</h1>'
        f'<p>{esc(detail)}</p><form method="post" action="/logout">'
        '<button type="submit">Sign in as another client</button></form></div></main>'
    )
    return document(f"{title} · QuantiVista", body, page_class="login-page")


# -- the status page -------------------------------------------------------------------------
def status_page(view: StatusView) -> str:
    """Return the whole status page."""
    body = (
        _header(view)
        + '<main class="status">'
        + '<div class="row three">'
        + _store(view)
        + _providers(view)
        + _quality(view)
        + "</div>"
        + _chart(view)
        + _jobs(view)
        + _quarantine(view)
        + "</main>"
        + f"<footer>Rendered {_when(view.now, '%Y-%m-%d %H:%M:%S UTC')} · "
        f"store: {esc(view.backend)}</footer>"
    )
    return document("QuantiVista status", body)


def _header(view: StatusView) -> str:
    principal = view.who.principal
    scopes = " ".join(sorted(s.value for s in principal.scopes))
    return (
        '<header class="top"><div class="brand"><span class="mark">QV</span> QuantiVista '
        '<span class="muted">status</span></div>'
        f'<div class="who">tenant <strong>{esc(principal.tenant)}</strong> · client '
        f"<code>{esc(principal.client_id)}</code> · {esc(scopes)}</div>"
        '<form method="post" action="/logout"><button class="quiet" type="submit">'
        "Sign out</button></form></header>"
    )


def _section(ident: str, title: str, inner: str, extra: str = "") -> str:
    return (
        f'<section class="card {extra}" id="{ident}" aria-labelledby="{ident}-h">'
        f'<h2 id="{ident}-h">{esc(title)}</h2>{inner}</section>'
    )


def _store(view: StatusView) -> str:
    rows = [
        (
            esc(r["timeframe"]), _count(r["symbols"]), _count(r["rows"]),
            _when(r["first"], "%Y-%m-%d"), _when(r["last"], "%Y-%m-%d"),
        )
        for r in view.store.iter_rows(named=True)  # one row per timeframe
    ]  # fmt: skip
    tiers = [
        (esc(r["tier"]), _count(r["files"]), _count(r["rows"]), _size(r["bytes"]),
         "" if r["compression_ratio"] is None else f"{r['compression_ratio']:.1f}x")
        for r in view.tiers.iter_rows(named=True)  # hot, history, cold
    ]  # fmt: skip
    inner = table(
        ["timeframe", "symbols", "rows", "first bar", "last bar"], rows, numeric=(1, 2),
        empty="the store holds no bars",
    )  # fmt: skip
    inner += "<h3>Tiers</h3>" + table(
        ["tier", "files", "rows", "size", "compression"], tiers, numeric=(1, 2, 3, 4)
    )
    inner += (
        f'<p class="muted small">{esc(view.backend)} store · '
        f"{_n(view.quarantined, 'row')} held in quarantine</p>"
    )
    return _section("store", "Store", inner)


def _size(value: object) -> str:
    if not isinstance(value, int):
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,} B"


def _providers(view: StatusView) -> str:
    def breaker(state: str | None) -> str:
        if state is None:
            return _badge("idle", "muted")
        return _badge(state, {"closed": "ok", "half_open": "warn"}.get(state, "bad"))

    def latency(value: float | None) -> str:
        return "" if value is None else f"{value * 1000:,.0f} ms"

    rows = [
        (
            esc(r["provider"]), _count(r["calls"]), _count(r["errors"]),
            latency(r["latency_p50_s"]), breaker(r["breaker"]),
        )
        for r in view.providers.iter_rows(named=True)  # registered providers, a handful
    ]  # fmt: skip
    source = "this process" if view.providers_live else "last saved statistics"
    inner = table(["provider", "calls", "errors", "p50", "breaker"], rows, numeric=(1, 2, 3))
    inner += f'<p class="muted small">calls from {source}</p>'
    return _section("providers", "Providers", inner)


def _quality(view: StatusView) -> str:
    daily = view.quality
    if daily.height == 0:
        inner = '<p class="empty">no quality scores yet</p>'
    else:
        mean = float(daily["score"].mean())  # type: ignore[arg-type]
        low = daily.sort("score").row(0, named=True)
        inner = (
            quality_svg(daily)
            + f'<p class="muted small">daily mean score of 1d bars, {_n(daily.height, "session")} '
            f"up to {daily['date'][-1]:%Y-%m-%d}: mean {mean:.4f}, lowest {low['score']:.4f} "
            f"on {low['date']:%Y-%m-%d}</p>"
        )
    return _section("quality", "Quality by day", inner)


def _job_row(
    job: IngestionJob, admin: bool, progress: tuple[int, int] | None = None
) -> tuple[str, ...]:
    kind = {"succeeded": "ok", "partial": "warn", "failed": "bad"}.get(job.status.value, "muted")
    score = job.quality.quality_score if job.quality and job.quality.total_records else None
    more = len(job.symbols) - 3
    shown = ", ".join(job.symbols[:3]) + (f" +{more:,}" if more > 0 else "")
    cells = (
        f"<code>{esc(job.job_id)}</code>",
        _badge(job.status.value, kind),
        # a live job shows finished tasks of all (its workers' progress); an ended one its tasks
        f"{progress[0]:,}/{progress[1]:,}" if progress else f"{job.tasks:,}",
        esc(job.timeframe or ""),
        esc(shown),
        _count(job.records_processed),
        _count(job.records_failed),
        "" if score is None else f"{score:.4f}",
        _when(job.start_time),
    )
    return (*cells, esc(job.tenant or "platform")) if admin else cells


def _jobs(view: StatusView) -> str:
    admin = view.who.principal.can(Scope.ADMIN)
    columns = ["job", "status", "tasks", "tf", "symbols", "rows", "rejected", "score",
               "started (UTC)"]  # fmt: skip
    rows = [_job_row(j, admin, view.progress.get(j.job_id)) for j in view.jobs]
    inner = table(
        [*columns, "tenant"] if admin else columns, rows, numeric=(2, 5, 6, 7),
        empty="no jobs of this tenant yet",
    )  # fmt: skip
    return _section("jobs", "Recent jobs", inner, "wide")


def _quarantine(view: StatusView) -> str:
    rows = [
        (
            esc(r["symbol"]), esc(r["timeframe"]),
            _when(r["ts"], "%Y-%m-%d %H:%M" if _intraday(r["timeframe"]) else "%Y-%m-%d"),
            esc(r["rule"]),
            esc(r["reason"]), f"<code>{esc(r['job_id'])}</code>",
        )
        for r in view.quarantine.iter_rows(named=True)  # the latest QUARANTINE_SHOWN rows
    ]  # fmt: skip
    inner = table(
        ["symbol", "tf", "bar (UTC)", "rule", "reason", "job"], rows, empty="no rows held",
    )  # fmt: skip
    shown = view.quarantine.height
    inner += (
        f'<p class="muted small">{_n(view.quarantined, "row")} held; the latest {shown} shown</p>'
    )
    return _section("quarantine", "Quarantine", inner, "wide")


def _intraday(timeframe: str) -> bool:
    try:
        return Timeframe.parse(timeframe).is_intraday
    except (QuantiVistaError, ValueError):
        return True


def _link(chart: Chart, **change: str | int) -> str:
    request = chart.request
    params: dict[str, str | int] = {
        "symbol": request.symbol or "", "timeframe": request.timeframe,
        "adjust": request.adjust, "days": request.days,
    }  # fmt: skip
    params.update(change)
    return esc("/?" + urlencode(params))


def _chart_controls(view: StatusView) -> str:
    chart = view.chart
    request = chart.request
    options = "".join(f'<option value="{esc(s)}"></option>' for s in view.symbols[:5000])
    toggles = "".join(
        f'<a href="{_link(chart, adjust=mode)}"'
        + (' aria-current="true" class="on"' if request.adjust == mode else "")
        + f">{label}</a>"
        for mode, label in (("none", "Raw"), ("all", "Adjusted"))
    )
    return (
        '<form class="controls" method="get" action="/">'
        '<label>Symbol <input name="symbol" list="symbols" '
        f'value="{esc(request.symbol or "")}" size="10" autocomplete="off"></label>'
        f'<datalist id="symbols">{options}</datalist>'
        f'<label>Timeframe <input name="timeframe" value="{esc(request.timeframe)}" size="4">'
        "</label>"
        f'<label>Days <input name="days" type="number" min="5" max="3650" '
        f'value="{request.days}"></label>'
        f'<input type="hidden" name="adjust" value="{esc(request.adjust)}">'
        '<button type="submit">Show</button>'
        f'<nav class="toggle" aria-label="prices">{toggles}</nav></form>'
    )


def _chart(view: StatusView) -> str:
    chart = view.chart
    request = chart.request
    notices = "".join(
        f'<p class="notice">{esc(text)}</p>' for text in (request.problem, chart.message) if text
    )
    drawing = ""
    if chart.bars.height:
        intraday = Timeframe.parse(request.timeframe).is_intraday
        basis = {"none": "raw prices", "splits": "split-adjusted", "all": "adjusted prices"}[
            request.adjust
        ]
        label = f"{request.symbol} {request.timeframe}, {basis}"
        first, last = chart.bars["ts"].min(), chart.bars["ts"].max()
        assert isinstance(first, datetime) and isinstance(last, datetime)
        closes = chart.bars["close"]
        drawn = chart.bars.height
        capped = f" (the last {drawn} of {chart.total})" if chart.total > drawn else ""
        drawing = (
            candles_svg(chart.bars, label=label, splits=chart.splits, intraday=intraday)
            + f'<p class="muted small">{_n(drawn, "bar")}{capped}, {first:%Y-%m-%d} to '
            f"{last:%Y-%m-%d}, {esc(basis)}; close {closes[0]:,.2f} → {closes[-1]:,.2f}; "
            f"{_n(chart.splits.height, 'split')} in range. Hover a candle for its prices.</p>"
        )
    title = f"Chart · {request.symbol}" if request.symbol else "Chart"
    return _section("chart", title, _chart_controls(view) + notices + drawing, "wide")
