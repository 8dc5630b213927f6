"""`qv demo`: ingest a simulated universe and show what landed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape
from rich.panel import Panel

from quantivista.cli.app import app, console, session, settings
from quantivista.cli.commands.ingest import run_ingest
from quantivista.cli.commands.providers import provider_stats_table, transitions_table
from quantivista.cli.render import (
    actions_summary,
    chart_panel,
    job_line,
    quality_panel,
    store_table,
)
from quantivista.config import ProviderFaultSettings, RateWindow, Settings, SimulatorServerSettings
from quantivista.runtime import Runtime
from quantivista.services.queries import BarQuery
from quantivista.services.simulation import serve_simulator

__all__ = ["DEMO_VENDORS", "demo"]

DEMO_VENDORS = ["iex_cloud", "yahoo", "polygon"]  # first in line down, then primary, backup


@app.command()
def demo(
    symbols: Annotated[int, typer.Option(help="How many simulated symbols.")] = 50,
    years: Annotated[int, typer.Option(help="Years of daily bars.")] = 5,
    sessions: Annotated[int, typer.Option(help="Sessions of 1-minute bars.")] = 5,
    fault_rate: Annotated[
        float, typer.Option(help="Share of bars the simulator damages, to show quarantine.")
    ] = 0.0005,
    via_simulator: Annotated[
        bool,
        typer.Option(
            help="Serve the market from the provider simulator and ingest it through the "
            "real vendor clients, limits, breakers and failover (over local sockets)."
        ),
    ] = False,
) -> None:
    """Ingest a simulated universe (daily and 1-minute bars) and show what landed."""
    if via_simulator:  # vendors' faults are in their calls (shown in the provider table)
        fault_rate = 0.0
    base = settings()
    base = base.model_copy(
        update={"simulator": base.simulator.model_copy(update={"fault_rate": fault_rate})}
    )
    started = time.perf_counter()
    with _demo_source(base, via_simulator) as (config, vendors), session(config, create=True) as rt:
        cal = rt.calendar()
        today = rt.clock.now().date()
        # the simulated market has closed through yesterday
        last = cal.sessions(today - timedelta(days=10), today - timedelta(days=1))[-1]
        first = date(last.year - years, last.month, min(last.day, 28)) + timedelta(days=1)
        universe = rt.simulation.universe(first, last, symbols)
        recent = cal.sessions(last - timedelta(days=sessions * 2 + 10), last)[-sessions:]
        console.print(
            Panel.fit(
                f"[bold]QuantiVista demo[/]: {len(universe)} simulated symbols, daily bars "
                f"{first} .. {last}, 1-minute bars for {len(recent)} sessions "
                f"{recent[0]} .. {recent[-1]}\n"
                f"store: {escape(rt.maintenance.describes)}\n"
                "[dim]tickers are fictional (six letters); prices come from a seeded market "
                f"model; {fault_rate:.2%} of bars are damaged on purpose to show quarantine[/]"
            )
        )
        daily = run_ingest(rt, universe, first, last, "1d", vendors, "daily bars")
        intraday = run_ingest(rt, universe, recent[0], recent[-1], "1m", vendors, "1-minute bars")
        elapsed = time.perf_counter() - started
        job_line(daily)
        job_line(intraday)
        console.print(store_table(rt.queries.status(), rt.maintenance.storage_report()))
        console.print(quality_panel([daily, intraday], rt.quality.quarantined()))
        shown = _show_actions_and_chart(rt, universe, first)
        if via_simulator:
            _provider_report(rt)
    where = escape(str(config.data_dir.resolve()))
    console.print(
        f"\n[bold green]done[/] in {elapsed:.1f} s. Data lives in [bold]{where}[/]. Try:\n"
        f"  qv bars {shown} --start {last - timedelta(days=30)}\n"
        f"  qv bars {shown} -t 1m --start {recent[-1]} --format chart\n"
        f"  qv status\n  qv quarantine"
    )


def _show_actions_and_chart(rt: Runtime, universe: list[str], first: date) -> str:
    """Print the actions and a raw vs adjusted chart of a name with a split; return it."""
    actions = rt.queries.actions()
    if actions.height:
        console.print(actions_summary(actions))
    shown = _chart_symbol(rt.queries.actions(universe), universe, first)
    console.print(chart_panel(rt.queries.bars(BarQuery.of(shown)), shown, "1d"))
    adjusted = rt.queries.bars(BarQuery.of(shown, adjust="all"))
    console.print(chart_panel(adjusted, shown, "1d", "adjusted for splits and dividends"))
    return shown


def _chart_symbol(actions: pl.DataFrame, universe: list[str], first: date) -> str:
    """Pick a name whose chart shows why adjustment matters: one with a split, if any."""
    split = actions.filter((pl.col("action_type") == "split") & (pl.col("ex_date") > first))
    names = [s for s in split["symbol"].to_list() if s in universe]
    return names[0] if names else universe[-1]  # the list starts with renamed/merged ones


def _provider_report(rt: Runtime) -> None:
    stats = rt.providers.stats()[0] or {}
    if stats.get("providers"):
        console.print(provider_stats_table(stats, "this demo"))
    if stats.get("transitions"):
        console.print(transitions_table(stats["transitions"]))


@contextmanager
def _demo_source(
    config: Settings, via_simulator: bool
) -> Iterator[tuple[Settings, list[str] | None]]:
    """Yield the demo's settings and providers: the default, or vendors served by a simulator.

    With the simulator, IEX Cloud (first in line) is down, so its breaker opens and Yahoo
    serves; Yahoo fails 5% of calls, and Polygon takes over when its retries run out. The
    simulator enforces rate limits and our limiter uses the same windows.
    """
    if not via_simulator:
        yield config, None
        return
    limits = (RateWindow(calls=20, seconds=1), RateWindow(calls=600, seconds=60))
    limited = {"rate_limits": limits}
    server = SimulatorServerSettings(
        seed=config.simulator.seed,  # the same market the demo picks its universe from
        universe_size=config.simulator.universe_size,
        providers={
            "yahoo": ProviderFaultSettings(error_rate=0.03, malformed_rate=0.02, **limited),
            "iex_cloud": ProviderFaultSettings(down=True, **limited),
            "polygon": ProviderFaultSettings(**limited),
        },
    )
    with serve_simulator(server, config, vendors=DEMO_VENDORS, timeout_s=5.0) as (sim, pointed):
        console.print(f"[bold]provider simulator[/] on {sim.url}: {', '.join(DEMO_VENDORS)}")
        yield pointed, DEMO_VENDORS
        served = sim.stats()["providers"]
        violations = sum(served[name]["violations"] for name in DEMO_VENDORS)
        console.print(f"simulator: rate-limit violations counted: [bold]{violations}[/]")
