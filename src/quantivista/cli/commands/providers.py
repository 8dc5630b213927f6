"""`qv providers` and `qv simulate-providers`."""

from __future__ import annotations

import json
import sys
import threading
from typing import Annotated, Any

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, err_console, errors_to_exit, session, settings
from quantivista.cli.render import Format, emit
from quantivista.config import RateWindow
from quantivista.services.maintenance import store_exists
from quantivista.services.providers import (
    capability_table,
    default_registry,
    shared_quota,
    shared_state,
)
from quantivista.services.simulation import free_tier_limits, serve_simulator, simulated_vendors

__all__ = ["provider_stats_table", "providers", "simulate_providers", "transitions_table"]


@app.command()
def providers(
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = (
        Format.table
    ),
) -> None:
    """List registered providers, their capabilities and limits, and the latest call stats.

    `--format csv` prints the capability table; `json` adds the call statistics.
    """
    config = settings()
    stats: dict[str, Any] | None = None
    live = False
    with errors_to_exit():
        if store_exists(config):  # capabilities need no store; statistics do
            with session() as rt:
                table = rt.providers.table()
                errors = rt.providers.load_errors()
                stats, live = rt.providers.stats()
        else:
            table = capability_table(default_registry, config)
            errors = dict(default_registry.load_errors)
    if fmt_ is Format.csv:
        emit(table, fmt_, "providers")
        return
    if fmt_ is Format.json:
        document = {"providers": table.to_dicts(), "load_errors": errors, "calls": stats}
        sys.stdout.write(json.dumps(document, default=str, indent=1) + "\n")
        return
    console.print(_providers_table(table))
    for name, error in sorted(errors.items()):
        err_console.print(f"[yellow]plug-in {escape(name)} failed to load:[/] {escape(error)}")
    try:
        quota = shared_quota(config)
    except Exception as exc:  # Redis down must not hide the rest of the report
        err_console.print(f"[yellow]cannot read the shared quota:[/] {escape(str(exc))}")
        quota = None
    if quota is not None:
        console.print(_quota_table(quota))
    try:
        state = shared_state(config, default_registry.names())
    except Exception as exc:  # as above: report what can be read
        err_console.print(f"[yellow]cannot read the shared provider state:[/] {escape(str(exc))}")
        state = None
    if state is not None and not state.is_empty():
        console.print(_shared_table(state))
    if not stats or not stats.get("providers"):
        console.print("no provider calls recorded yet: run [bold]qv ingest[/] or [bold]qv demo[/]")
        return
    console.print(provider_stats_table(stats, "live" if live else "last ingestion"))
    if stats.get("transitions"):
        console.print(transitions_table(stats["transitions"]))


def _shared_table(frame: pl.DataFrame) -> Table:
    table = Table(title="shared by every process (Redis)", title_justify="left")
    for col in ("provider", "breaker", "since (UTC)", "health", "calls", "failures", "reason"):
        table.add_column(col, justify="right" if col in ("health", "calls", "failures") else
                         "left")  # fmt: skip
    for row in frame.iter_rows(named=True):
        since = row["changed_at"]
        table.add_row(
            escape(row["provider"]),
            escape(row["breaker"] or "-"),
            since.strftime("%Y-%m-%d %H:%M:%S") if since else "-",
            "-" if row["health"] is None else f"{row['health']:.3f}",
            "-" if row["calls"] is None else f"{row['calls']:,}",
            "-" if row["failures"] is None else f"{row['failures']:,}",
            escape(row["reason"] or ""),
        )
    return table


def _providers_table(frame: pl.DataFrame) -> Table:
    table = Table(title="registered providers", title_justify="left")
    for col in ("provider", "timeframes", "assets", "prices", "realtime", "key", "cost/call"):
        table.add_column(col)
    table.add_column("priority", justify="right")
    table.add_column("rate limits")
    for row in frame.iter_rows(named=True):  # one row per registered provider
        table.add_row(
            escape(row["provider"]),
            row["timeframes"],
            row["assets"],
            row["prices"],
            "yes" if row["realtime"] else "",
            "needed" if row["requires_key"] else "",
            f"{row['cost_per_call']:g}" if row["cost_per_call"] else "free",
            str(row["priority"]),
            escape(row["rate_limits"]) or "none",
        )
    return table


def _quota_table(usage: pl.DataFrame) -> Table:
    table = Table(title="shared rate-limit quota (live, Redis)", title_justify="left")
    for col in usage.columns:
        table.add_column(col, justify="right" if usage[col].dtype.is_numeric() else "left")
    for row in usage.iter_rows():
        table.add_row(*(f"{v:,.1f}" if isinstance(v, float) else escape(str(v)) for v in row))
    return table


def provider_stats_table(stats: dict[str, Any], label: str) -> Table:
    """Return calls, errors, latency, breaker and quota per provider."""
    table = Table(title=f"provider calls ({label})", title_justify="left")
    table.add_column("provider")
    for col in ("calls", "ok", "errors", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for col in ("errors by kind", "breaker", "quota"):
        table.add_column(col)

    def ms(value: Any) -> str:
        return "" if value is None else f"{1000 * float(value):,.1f}"

    for row in stats["providers"]:
        state = str(row["breaker"])
        color = {"open": "red", "half_open": "yellow"}.get(state, "green")
        table.add_row(
            escape(str(row["provider"])),
            f"{row['calls']:,}",
            f"{row['ok']:,}",
            f"{row['errors']:,}",
            ms(row["latency_p50_s"]),
            ms(row["latency_p95_s"]),
            escape(str(row["errors_by_kind"])),
            f"[{color}]{state}[/] ({row['transitions']} transitions)",
            escape(str(row["quota"])),
        )
    requests = stats.get("requests") or {}
    if requests:
        table.caption = "requests: " + ", ".join(f"{k} {v:,}" for k, v in sorted(requests.items()))
    return table


def transitions_table(transitions: list[dict[str, Any]], limit: int = 20) -> Table:
    """Return the latest circuit-breaker transitions."""
    table = Table(title="circuit breaker transitions (latest)", title_justify="left")
    for col in ("at", "provider", "from", "to", "reason"):
        table.add_column(col)
    for t in transitions[-limit:]:
        table.add_row(
            str(t["at"])[:23],
            escape(str(t["provider"])),
            str(t["from_state"]),
            str(t["to_state"]),
            escape(str(t["reason"])),
        )
    return table


def rate_windows(specs: list[str]) -> tuple[RateWindow, ...]:
    """Parse "5/60" (5 calls per 60 s) into rate windows."""
    windows = []
    for spec in specs:
        calls, _, seconds = spec.partition("/")
        try:
            windows.append(RateWindow(calls=int(calls), seconds=float(seconds)))
        except ValueError as exc:
            raise typer.BadParameter(f"rate limit {spec!r} is not CALLS/SECONDS") from exc
    return tuple(windows)


@app.command("simulate-providers")
def simulate_providers(
    port: Annotated[int | None, typer.Option(help="Port (default: settings, 8765).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    fault_rate: Annotated[
        float | None, typer.Option(help="Share of calls answered with a 5xx, every provider.")
    ] = None,
    rate_limit: Annotated[
        list[str] | None,
        typer.Option(help="Window CALLS/SECONDS for every provider (repeatable), e.g. 5/60."),
    ] = None,
    down: Annotated[
        list[str] | None, typer.Option(help="A provider that answers 503 to all (repeatable).")
    ] = None,
    free_tier_limits_: Annotated[
        bool,
        typer.Option(
            "--free-tier-limits", help="Enforce each vendor's documented free-tier rate limits."
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the market and the faults.")] = None,
    universe_size: Annotated[int | None, typer.Option(help="Simulated instruments.")] = None,
) -> None:
    """Serve the simulated market in five vendors' wire formats until Ctrl-C.

    Faults per provider come from the `[simulator_server]` settings section (qv.toml);
    the options here override them for every provider.
    """
    base = settings()
    config = base.simulator_server
    update: dict[str, Any] = {}
    for key, value in (("host", host), ("seed", seed), ("universe_size", universe_size)):
        if value is not None:
            update[key] = value
    fault_update: dict[str, Any] = {}
    if fault_rate is not None:
        fault_update["error_rate"] = fault_rate
    if rate_limit:
        fault_update["rate_limits"] = [w.model_dump() for w in rate_windows(rate_limit)]
    vendors = simulated_vendors()
    tiers = free_tier_limits()
    faults = {}
    for name in vendors:
        fields = {**config.faults_for(name).model_dump(), **fault_update}
        if free_tier_limits_ and not rate_limit:
            fields["rate_limits"] = [w.model_dump() for w in tiers[name]]
        if name in (down or []):
            fields["down"] = True
        faults[name] = fields  # validated below with the whole section
    unknown = sorted(set(down or []) - set(vendors))
    if unknown:
        raise typer.BadParameter(f"unknown providers {unknown}; known: {list(vendors)}")
    update["providers"] = faults
    try:
        config = config.model_validate({**config.model_dump(), **update})
    except ValueError as exc:  # pydantic's ValidationError: show the reason, not a traceback
        raise typer.BadParameter(str(exc)) from exc
    with serve_simulator(config, base, port=port) as (sim, _):
        console.print(f"[bold]provider simulator[/] on {sim.url}", soft_wrap=True)
        for name in vendors:
            shown = config.faults_for(name).model_dump(exclude_defaults=True)
            text = ", ".join(f"{k}={v}" for k, v in shown.items()) or "no faults"
            console.print(
                f"  {name:<14} {sim.base_url(name)}  [dim]{escape(text)}[/]", soft_wrap=True
            )
        console.print(f"  {'finnhub ws':<14} {sim.ws_url()}", soft_wrap=True)
        console.print(f"  {'stats':<14} {sim.url}/_sim/stats  (POST /_sim/reset)", soft_wrap=True)
        console.print(f"symbols: {' '.join(sim.market.symbols()[:10])} ...  (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print(sim.stats())
