"""`qv`: the command line over the library (a thin shell: every command calls `Platform`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from quantivista.config import Settings
from quantivista.errors import QuantiVistaError
from quantivista.model.flags import QualityFlag
from quantivista.model.jobs import IngestionJob
from quantivista.platform import Platform

app = typer.Typer(
    name="qv",
    help="QuantiVista market-data platform: ingest, validate, store and query bars.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

_state: dict[str, Any] = {}


class OutputFormat(StrEnum):
    """How `qv bars` prints."""

    table = "table"
    csv = "csv"
    parquet = "parquet"
    chart = "chart"


@app.callback()
def _main(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", "-d", help="Data directory (QV_DATA_DIR).")
    ] = None,
) -> None:
    settings = Settings()
    if data_dir is not None:
        settings = settings.with_data_dir(data_dir)
    _state["settings"] = settings


def _settings() -> Settings:
    settings = _state.get("settings")
    return settings if isinstance(settings, Settings) else Settings()


@contextmanager
def _platform(settings: Settings | None = None) -> Iterator[Platform]:
    try:
        with Platform.from_settings(settings or _settings()) as platform:
            yield platform
    except QuantiVistaError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[symbol]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _run_ingest(
    p: Platform,
    symbols: Sequence[str],
    start: str | date,
    end: str | date,
    timeframe: str,
    providers: Sequence[str] | None,
    label: str,
) -> IngestionJob:
    with _progress() as bar:
        task = bar.add_task(label, total=len(symbols), symbol="")

        def tick(symbol: str, done: int, total: int) -> None:
            bar.update(task, completed=done, symbol=symbol)

        return p.ingest(
            symbols, start=start, end=end, timeframe=timeframe, providers=providers, progress=tick
        )


# -- commands ------------------------------------------------------------------------------
@app.command()
def ingest(
    symbols: Annotated[list[str], typer.Argument(help="Symbols to ingest.")],
    start: Annotated[str, typer.Option(help="First date (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last date, inclusive (YYYY-MM-DD).")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1m, 5m, 1h, 1d...")] = "1d",
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", "-p", help="Provider, repeat for failover order."),
    ] = None,
) -> None:
    """Fetch bars from providers, validate them and store them."""
    with _platform() as p:
        job = _run_ingest(p, symbols, start, end, timeframe, provider, "ingesting")
        _print_job(job)
        if job.status.value == "failed":
            raise typer.Exit(code=1)


@app.command()
def bars(
    symbol: Annotated[str, typer.Argument(help="Symbol to read.")],
    start: Annotated[str | None, typer.Option(help="First date (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (inclusive).")] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")] = "1d",
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown in table format (head and tail).")] = 20,
    adjust: Annotated[str, typer.Option(help="none, splits or all.")] = "none",
    dividend_convention: Annotated[
        str, typer.Option(help="crsp (Yahoo/Lean) or alpha_vantage.")
    ] = "crsp",
) -> None:
    """Print stored bars of one symbol as a table, a chart, CSV or Parquet."""
    with _platform() as p:
        df = p.bars(
            symbol,
            start=start,
            end=end,
            timeframe=timeframe,
            adjust=adjust,  # type: ignore[arg-type]  # checked by Platform.bars
            dividend_convention=dividend_convention,  # type: ignore[arg-type]
        )
    if df.is_empty():
        err_console.print(f"no {timeframe} bars stored for {symbol} in that range")
        raise typer.Exit(code=1)
    if fmt is OutputFormat.parquet:
        if output is None:
            err_console.print("--format parquet needs --output FILE")
            raise typer.Exit(code=2)
        df.write_parquet(output, compression="zstd")
        console.print(f"wrote {df.height:,} bars to {output}")
    elif fmt is OutputFormat.csv:
        text = df.write_csv()
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
    elif fmt is OutputFormat.chart:
        label = "raw prices" if adjust == "none" else f"adjusted: {adjust}"
        console.print(_chart_panel(df, symbol, timeframe, label))
    else:
        console.print(_bars_table(df, symbol, timeframe, limit))


@app.command()
def status() -> None:
    """Show what the store holds, the recent jobs and the quarantine."""
    with _platform() as p:
        stats = p.status()
        jobs = p.jobs(limit=5)
        quarantined = p.quarantine_store.count()
        actions = p.actions()
    console.print(f"[bold]data directory:[/] {_settings().data_dir.resolve()}")
    if stats.is_empty():
        console.print("the store is empty: try [bold]qv demo[/] or [bold]qv ingest[/]")
        return
    console.print(_store_table(stats))
    console.print(
        f"corporate actions stored: {actions.height:,}    rows in quarantine: {quarantined:,}"
    )
    if jobs:
        console.print(_jobs_table(jobs))


@app.command()
def jobs(limit: Annotated[int, typer.Option(help="How many jobs.")] = 20) -> None:
    """List recent ingestion jobs."""
    with _platform() as p:
        console.print(_jobs_table(p.jobs(limit=limit)))


@app.command()
def quarantine(
    symbols: Annotated[list[str] | None, typer.Argument(help="Only these symbols.")] = None,
    job: Annotated[str | None, typer.Option(help="Only rows of this job.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 30,
) -> None:
    """Show rows that failed validation, with the rule and the reason."""
    with _platform() as p:
        df = p.quarantine(symbols or None, job_id=job)
    if df.is_empty():
        console.print("quarantine is empty")
        return
    table = Table(title=f"quarantine: {df.height:,} rows", header_style="bold")
    for col in (
        "symbol",
        "timeframe",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "rule",
        "job_id",
    ):
        table.add_column(col, justify="right" if col in _NUMERIC else "left")
    for row in df.head(limit).iter_rows(named=True):
        table.add_row(
            *[
                _fmt(row[c])
                for c in (
                    "symbol",
                    "timeframe",
                    "ts",
                    "open",
                    "high",
                    "low",
                    "close",
                    "volume",
                    "rule",
                    "job_id",
                )
            ]
        )
    console.print(table)


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
    settings = _settings()
    settings = settings.model_copy(
        update={"simulator": settings.simulator.model_copy(update={"fault_rate": fault_rate})}
    )
    started = time.perf_counter()
    with (
        _demo_source(settings, via_simulator) as (settings, vendors),
        _platform(settings) as p,
    ):
        market = _market_of(p)
        cal = p.calendar()
        today = p.clock.now().date()
        # the simulated market has closed through yesterday
        last = cal.sessions(today - timedelta(days=10), today - timedelta(days=1))[-1]
        first = date(last.year - years, last.month, min(last.day, 28)) + timedelta(days=1)
        universe = _demo_universe(market, first, last, symbols)
        recent = cal.sessions(last - timedelta(days=sessions * 2 + 10), last)[-sessions:]
        console.print(
            Panel.fit(
                f"[bold]QuantiVista demo[/]: {len(universe)} simulated symbols, daily bars "
                f"{first} .. {last}, 1-minute bars for {len(recent)} sessions "
                f"{recent[0]} .. {recent[-1]}\n"
                f"data directory: {settings.data_dir.resolve()}\n"
                "[dim]tickers are fictional (six letters); prices come from a seeded market "
                f"model; {fault_rate:.2%} of bars are damaged on purpose to show quarantine[/]"
            )
        )
        daily = _run_ingest(p, universe, first, last, "1d", vendors, "daily bars")
        intraday = _run_ingest(p, universe, recent[0], recent[-1], "1m", vendors, "1-minute bars")
        elapsed = time.perf_counter() - started
        _print_job(daily)
        _print_job(intraday)
        stats = p.status()
        console.print(_store_summary(stats))
        console.print(_quality_panel([daily, intraday], p.quarantine().height))
        actions = p.actions()
        if actions.height:
            console.print(_actions_table(actions))
        shown = _chart_symbol(p.actions(universe), universe, first)
        console.print(_chart_panel(p.bars(shown, timeframe="1d"), shown, "1d"))
        adjusted = p.bars(shown, timeframe="1d", adjust="all")
        console.print(_chart_panel(adjusted, shown, "1d", "adjusted for splits and dividends"))
    console.print(
        f"\n[bold green]done[/] in {elapsed:.1f} s. Data lives in "
        f"[bold]{settings.data_dir.resolve()}[/]. Try:\n"
        f"  qv bars {shown} --start {last - timedelta(days=30)}\n"
        f"  qv bars {shown} -t 1m --start {recent[-1]} --format chart\n"
        f"  qv status\n  qv quarantine"
    )


def _chart_symbol(actions: pl.DataFrame, universe: list[str], first: date) -> str:
    """Pick a name whose chart shows why adjustment matters: one with a split, if any."""
    split = actions.filter((pl.col("action_type") == "split") & (pl.col("ex_date") > first))
    names = [s for s in split["symbol"].to_list() if s in universe]
    return names[0] if names else universe[-1]  # the list starts with renamed/merged ones


def _market_of(p: Platform) -> Any:
    provider = p.provider("synthetic")
    market = getattr(provider, "market", None)
    if market is None:
        raise QuantiVistaError("the synthetic provider exposes no market model")
    return market


def _demo_universe(market: Any, first: date, last: date, size: int) -> list[str]:
    """Pick `size` tickers trading in the window, always including renamed/merged ones."""
    history: pl.DataFrame = market.ticker_history()
    alive = history.filter(
        (pl.col("valid_from") <= last)
        & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= first))
    )
    special = alive.filter(pl.col("valid_to").is_not_null() | (pl.col("valid_from") > first))
    chosen = list(dict.fromkeys(special["symbol"].to_list()))
    for sym in alive["symbol"].to_list():
        if len(chosen) >= size:
            break
        if sym not in chosen:
            chosen.append(sym)
    return chosen


# -- rendering -----------------------------------------------------------------------------
_NUMERIC = {"open", "high", "low", "close", "volume", "vwap", "trades", "rows", "bytes"}
_SPARKS = "▁▂▃▄▅▆▇█"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100_000 else f"{value:,.4f}".rstrip("0").rstrip(".")
    return str(value)


def _bars_table(df: pl.DataFrame, symbol: str, timeframe: str, limit: int) -> Table:
    shown = df if df.height <= limit else pl.concat([df.head(limit // 2), df.tail(limit // 2)])
    lo, hi = df["ts"].min(), df["ts"].max()
    table = Table(
        title=f"{symbol} {timeframe}: {df.height:,} bars {lo!s} .. {hi!s}",
        header_style="bold",
    )
    cols = ["ts", "open", "high", "low", "close", "volume", "provider", "quality_flags"]
    for col in cols:
        table.add_column(
            "flags" if col == "quality_flags" else col,
            justify="right" if col in _NUMERIC else "left",
        )
    for i, row in enumerate(shown.iter_rows(named=True)):
        if df.height > limit and i == limit // 2:
            table.add_row(*["…"] * len(cols))
        flags = ",".join(QualityFlag.names_of(row["quality_flags"])) or "-"
        table.add_row(*[_fmt(row[c]) for c in cols[:-1]], flags)
    return table


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """Return a one-line unicode chart of `values`, resampled to `width` characters."""
    clean = [v for v in values if v is not None]
    if not clean:
        return ""
    step = max(1, len(clean) // width)
    points = [clean[i] for i in range(0, len(clean), step)][-width:]
    lo, hi = min(points), max(points)
    span = hi - lo or 1.0
    return "".join(_SPARKS[min(7, int((v - lo) / span * 7.999))] for v in points)


def _day(value: Any) -> str:
    return value.strftime("%Y-%m-%d") if hasattr(value, "strftime") else str(value)


def _chart_panel(
    df: pl.DataFrame, symbol: str, timeframe: str, prices: str = "raw prices"
) -> Panel:
    closes = df["close"].to_list()
    volumes = df["volume"].to_list()
    body = (
        f"close  {sparkline(closes, 72)}  {_fmt(closes[0])} → {_fmt(closes[-1])}\n"
        f"volume {sparkline(volumes, 72)}  max {_fmt(max(v for v in volumes if v is not None))}"
    )
    return Panel(
        body,
        title=f"{symbol} {timeframe}  {_day(df['ts'].min())} .. {_day(df['ts'].max())}  ({prices})",
        expand=False,
    )


def _store_table(stats: pl.DataFrame) -> Table:
    table = Table(title="store", header_style="bold")
    for col in ("timeframe", "symbols", "rows", "first", "last", "files", "MB"):
        table.add_column(col, justify="right")
    summary = (
        stats.group_by("timeframe")
        .agg(
            symbols=pl.len(),
            rows=pl.col("rows").sum(),
            first=pl.col("first_ts").min(),
            last=pl.col("last_ts").max(),
            files=pl.col("files").sum(),
            bytes=pl.col("bytes").sum(),
        )
        .sort("timeframe")
    )
    for r in summary.iter_rows(named=True):
        table.add_row(
            r["timeframe"],
            f"{r['symbols']:,}",
            f"{r['rows']:,}",
            f"{r['first']:%Y-%m-%d %H:%M}",
            f"{r['last']:%Y-%m-%d %H:%M}",
            f"{r['files']:,}",
            f"{r['bytes'] / 1e6:,.1f}",
        )
    return table


def _store_summary(stats: pl.DataFrame) -> Table:
    return _store_table(stats)


def _jobs_table(jobs: list[IngestionJob]) -> Table:
    table = Table(title="recent jobs", header_style="bold")
    for col in ("job", "status", "timeframe", "symbols", "rows", "failed", "score", "seconds"):
        table.add_column(col, justify="right" if col not in ("job", "status") else "left")
    for job in jobs:
        score = f"{job.quality.quality_score:.4f}" if job.quality else "-"
        secs = f"{job.duration_s:.1f}" if job.duration_s is not None else "-"
        table.add_row(
            job.job_id,
            job.status.value,
            job.timeframe or "-",
            f"{len(job.symbols):,}",
            f"{job.records_processed:,}",
            f"{job.records_failed:,}",
            score,
            secs,
        )
    return table


def _print_job(job: IngestionJob) -> None:
    colour = {"succeeded": "green", "partial": "yellow", "failed": "red"}.get(
        job.status.value, "white"
    )
    score = f"{job.quality.quality_score:.4f}" if job.quality else "-"
    console.print(
        f"[{colour}]{job.status.value}[/] {job.job_id}: {job.records_processed:,} bars "
        f"({job.timeframe}), {job.records_failed:,} rejected, quality score {score}, "
        f"{job.duration_s or 0:.1f} s"
    )
    for detail in job.error_details[:5]:
        console.print(
            f"  [yellow]•[/] {detail.get('symbol', '')} {detail.get('kind')}: "
            f"{detail.get('message')}"
        )
    if len(job.error_details) > 5:
        console.print(f"  … and {len(job.error_details) - 5} more")


def _quality_panel(jobs: list[IngestionJob], quarantined: int) -> Table:
    table = Table(title="data quality", header_style="bold")
    table.add_column("rule")
    for job in jobs:
        table.add_column(job.timeframe or "?", justify="right")
    rules = sorted({r for j in jobs if j.quality for r in j.quality.rule_counts})
    table.add_row(
        "[bold]rows checked[/]",
        *[f"{j.quality.total_records:,}" if j.quality else "-" for j in jobs],
    )
    table.add_row(
        "[bold]rows stored[/]",
        *[
            f"{j.quality.total_records - j.quality.invalid_records:,}" if j.quality else "-"
            for j in jobs
        ],
    )
    for rule in rules:
        table.add_row(
            rule, *[f"{j.quality.rule_counts.get(rule, 0):,}" if j.quality else "-" for j in jobs]
        )
    table.add_row(
        "[bold]quality score[/]",
        *[f"{j.quality.quality_score:.4f}" if j.quality else "-" for j in jobs],
    )
    table.caption = f"{quarantined:,} rows in quarantine (qv quarantine)"
    return table


def _actions_table(actions: pl.DataFrame) -> Table:
    table = Table(title=f"corporate actions: {actions.height:,}", header_style="bold")
    for col in ("type", "count", "example"):
        table.add_column(col)
    for (kind,), part in actions.group_by("action_type", maintain_order=True):
        ex = part.row(0, named=True)
        if ex["new_symbol"]:
            detail = f"-> {ex['new_symbol']}"
        elif ex["ratio"] is not None:
            detail = f"ratio {ex['ratio']:g}"
        elif ex["amount"] is not None:
            detail = f"{ex['amount']:g} {ex['currency'] or ''}"
        else:
            detail = ""
        table.add_row(str(kind), f"{part.height:,}", f"{ex['symbol']} {ex['ex_date']} {detail}")
    return table


# -- issue 6: reference data, corporate actions, benchmarks
@app.command()
def actions(
    symbol: Annotated[str, typer.Argument(help="Symbol whose corporate actions to show.")],
) -> None:
    """Show the stored corporate actions of a symbol (splits, dividends, renames, ...)."""
    with _platform() as p:
        df = p.actions(symbol)
    if df.is_empty():
        err_console.print(f"no corporate actions stored for {symbol}")
        raise typer.Exit(code=1)
    table = Table(title=f"corporate actions of {symbol}: {df.height:,}", header_style="bold")
    for col in ("ex_date", "symbol", "type", "ratio", "amount", "currency", "new symbol", "source"):
        table.add_column(col, justify="right" if col in ("ratio", "amount") else "left")
    for row in df.iter_rows(named=True):
        table.add_row(
            str(row["ex_date"]),
            row["symbol"],
            row["action_type"],
            _fmt(row["ratio"]) if row["ratio"] is not None else "",
            f"{row['amount']:.6g}" if row["amount"] is not None else "",
            row["currency"] or "",
            row["new_symbol"] or "",
            row["provider"] or "",
        )
    console.print(table)


@app.command()
def instruments(
    symbol: Annotated[str | None, typer.Argument(help="Ticker to look up.")] = None,
    on: Annotated[str | None, typer.Option(help="Date of the lookup (default: latest).")] = None,
    load: Annotated[
        Path | None, typer.Option(help="Load instruments from a CSV or JSON file first.")
    ] = None,
    history: Annotated[Path | None, typer.Option(help="Symbol-history CSV for --load.")] = None,
) -> None:
    """List instruments, or look one up by ticker on a date (point in time)."""
    with _platform() as p:
        master = p.instruments
        if load is not None:
            report = (
                master.load_json(load)
                if load.suffix.lower() == ".json"
                else master.load_csv(load, history=history)
            )
            console.print(
                f"loaded {report.instruments:,} instruments, {report.history:,} ticker "
                f"intervals, rejected {report.rejected.height:,}"
            )
            for row in report.rejected.iter_rows(named=True):
                err_console.print(f"  [yellow]rejected[/] {row['instrument_id']}: {row['reason']}")
        if symbol is None:
            frame = master.instruments()
            table = Table(title=f"instruments: {frame.height:,}", header_style="bold")
            shown = ("instrument_id", "name", "asset_class", "currency", "exchange", "isin")
            for col in shown:
                table.add_column(col)
            for row in frame.iter_rows(named=True):
                table.add_row(*[str(row[c] or "") for c in shown])
            console.print(table)
            return
        found = master.lookup(symbol, on=on)
        if found is None:
            err_console.print(f"no instrument used {symbol} {'on ' + on if on else ''}".strip())
            raise typer.Exit(code=1)
        table = Table(title=f"{symbol} {'on ' + on if on else ''}".strip(), header_style="bold")
        table.add_column("field")
        table.add_column("value")
        for key, value in found.model_dump().items():
            if value is not None:
                table.add_row(key, str(value))
        hist = master.history(found.instrument_id)
        tickers = ", ".join(
            f"{r['symbol']} {r['valid_from'] or '…'}..{r['valid_to'] or ''}"
            for r in hist.iter_rows(named=True)
        )
        table.add_row("tickers", tickers)
        console.print(table)


@app.command()
def benchmark(
    symbols: Annotated[list[str], typer.Argument(help="Constituents of the custom benchmark.")],
    against: Annotated[
        str | None, typer.Option(help="Compare with this stored symbol (e.g. an index).")
    ] = None,
    weights: Annotated[
        str, typer.Option(help="equal, or fixed weights like AAPL=0.6,MSFT=0.4.")
    ] = "equal",
    rebalance: Annotated[str, typer.Option(help="none, monthly, quarterly, annual.")] = "quarterly",
    total_return: Annotated[bool, typer.Option(help="Reinvest dividends.")] = False,
    start: Annotated[str | None, typer.Option(help="First date (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (inclusive).")] = None,
) -> None:
    """Build a custom benchmark from stored bars and show its analytics."""
    from quantivista.benchmarks import compare, custom_benchmark, period_returns

    chosen: Any = weights
    if weights != "equal":
        try:
            chosen = {k: float(v) for k, v in (item.split("=") for item in weights.split(","))}
        except ValueError:
            err_console.print("--weights must be equal or SYMBOL=WEIGHT,...")
            raise typer.Exit(code=2) from None
    with _platform() as p:
        raw = p.bars(symbols, start=start, end=end)
        if raw.is_empty():
            err_console.print("no bars stored for those symbols in that range")
            raise typer.Exit(code=1)
        levels = custom_benchmark(
            raw,
            chosen,
            rebalance=rebalance,  # type: ignore[arg-type]  # checked by custom_benchmark
            total_return=total_return,
            actions=p.actions(symbols),
        )
        other = (
            p.bars(against, start=start, end=end, adjust="all").select("ts", level="close")
            if against
            else None
        )
    yearly = period_returns(levels, "1y")
    table = Table(title="custom benchmark: yearly returns", header_style="bold")
    table.add_column("year")
    table.add_column("return", justify="right")
    for row in yearly.iter_rows(named=True):
        table.add_row(str(row["period"].year), f"{row['ret']:+.2%}")
    console.print(table)
    if other is not None and other.height:
        stats = compare(levels, other)
        cmp_table = Table(title=f"against {against}", header_style="bold")
        cmp_table.add_column("measure")
        cmp_table.add_column("value", justify="right")
        for key, value in stats.items():
            cmp_table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(cmp_table)


# -- issue 3: provider simulator ----------------------------------------------------------
def _rate_windows(specs: list[str]) -> tuple[Any, ...]:
    """Parse "5/60" (5 calls per 60 s) into rate windows."""
    from quantivista.config import RateWindow

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
    free_tier_limits: Annotated[
        bool, typer.Option(help="Enforce each vendor's documented free-tier rate limits.")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the market and the faults.")] = None,
    universe_size: Annotated[int | None, typer.Option(help="Simulated instruments.")] = None,
) -> None:
    """Serve the simulated market in five vendors' wire formats until Ctrl-C.

    Faults per provider come from the `[simulator_server]` settings section (qv.toml);
    the options here override them for every provider.
    """
    import threading

    from quantivista.providers.simulator.server import (
        FREE_TIER_LIMITS,
        PROVIDERS,
        run_simulator,
    )

    config = _settings().simulator_server
    update: dict[str, Any] = {}
    for key, value in (("host", host), ("seed", seed), ("universe_size", universe_size)):
        if value is not None:
            update[key] = value
    fault_update: dict[str, Any] = {}
    if fault_rate is not None:
        fault_update["error_rate"] = fault_rate
    if rate_limit:
        fault_update["rate_limits"] = [w.model_dump() for w in _rate_windows(rate_limit)]
    providers = {}
    for name in PROVIDERS:
        fields = {**config.faults_for(name).model_dump(), **fault_update}
        if free_tier_limits and not rate_limit:
            fields["rate_limits"] = [w.model_dump() for w in FREE_TIER_LIMITS[name]]
        if name in (down or []):
            fields["down"] = True
        providers[name] = fields  # validated below with the whole section
    unknown = sorted(set(down or []) - set(PROVIDERS))
    if unknown:
        raise typer.BadParameter(f"unknown providers {unknown}; known: {list(PROVIDERS)}")
    update["providers"] = providers
    try:
        config = config.model_validate({**config.model_dump(), **update})
    except ValueError as exc:  # pydantic's ValidationError: show the reason, not a traceback
        raise typer.BadParameter(str(exc)) from exc
    with run_simulator(config, port=port) as sim:
        console.print(f"[bold]provider simulator[/] on {sim.url}", soft_wrap=True)
        for name in PROVIDERS:
            shown = config.faults_for(name).model_dump(exclude_defaults=True)
            text = ", ".join(f"{k}={v}" for k, v in shown.items()) or "no faults"
            console.print(f"  {name:<14} {sim.base_url(name)}  [dim]{text}[/]", soft_wrap=True)
        console.print(f"  {'finnhub ws':<14} {sim.ws_url()}", soft_wrap=True)
        console.print(f"  {'stats':<14} {sim.url}/_sim/stats  (POST /_sim/reset)", soft_wrap=True)
        console.print(f"symbols: {' '.join(sim.market.symbols()[:10])} ...  (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            console.print(sim.stats())


# -- issue 3: provider resilience and analytics ------------------------------------------------
@app.command()
def providers() -> None:
    """List registered providers, their capabilities and limits, and the latest call stats."""
    from quantivista.acquisition.analytics import ProviderAnalytics
    from quantivista.platform import PROVIDER_STATS_FILE

    with _platform() as p:
        console.print(_providers_table(p))
        if p.registry.load_errors:
            for name, error in sorted(p.registry.load_errors.items()):
                err_console.print(f"[yellow]plug-in {name!r} failed to load:[/] {error}")
        live = p.analytics.has_data
        stats = (
            p.analytics.as_dict() if live else ProviderAnalytics.load(p.root / PROVIDER_STATS_FILE)
        )
        if p.settings.resilience.backend == "redis":  # shared quota: live from any process
            try:
                console.print(_quota_table(p.limiter.usage_frame()))
            except Exception as exc:  # Redis down must not hide the rest of the report
                err_console.print(f"[yellow]cannot read the shared quota:[/] {exc}")
    if not stats or not stats.get("providers"):
        console.print("no provider calls recorded yet: run [bold]qv ingest[/] or [bold]qv demo[/]")
        return
    console.print(_provider_stats_table(stats, "live" if live else "last ingestion"))
    if stats.get("transitions"):
        console.print(_transitions_table(stats["transitions"]))


def _providers_table(p: Platform) -> Table:
    table = Table(title="registered providers", title_justify="left")
    for col in ("provider", "timeframes", "assets", "prices", "realtime", "key", "cost/call"):
        table.add_column(col)
    table.add_column("priority", justify="right")
    table.add_column("rate limits")
    limits = p.settings.resilience.limits
    for name in p.registry.names():
        caps = p.registry.get(name).capabilities
        table.add_row(
            name,
            " ".join(sorted(caps.timeframes, key=_timeframe_order)),
            " ".join(sorted(a.value for a in caps.asset_classes)),
            caps.adjustment.value,
            "yes" if caps.realtime else "",
            "needed" if caps.requires_key else "",
            f"{caps.cost_per_call:g}" if caps.cost_per_call else "free",
            str(caps.priority),
            ", ".join(limits.get(name, [])) or "none",
        )
    return table


def _quota_table(usage: pl.DataFrame) -> Table:
    table = Table(title="shared rate-limit quota (live, Redis)", title_justify="left")
    for col in usage.columns:
        table.add_column(col, justify="right" if usage[col].dtype.is_numeric() else "left")
    for row in usage.iter_rows():
        table.add_row(*(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row))
    return table


def _timeframe_order(tf: str) -> tuple[int, int]:
    from quantivista.model.timeframe import Timeframe

    try:
        return Timeframe.parse(tf).sort_key()
    except QuantiVistaError:  # an odd timeframe string of a plug-in sorts last
        return (1 << 30, 0)


def _provider_stats_table(stats: dict[str, Any], label: str) -> Table:
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
            str(row["provider"]),
            f"{row['calls']:,}",
            f"{row['ok']:,}",
            f"{row['errors']:,}",
            ms(row["latency_p50_s"]),
            ms(row["latency_p95_s"]),
            str(row["errors_by_kind"]),
            f"[{color}]{state}[/] ({row['transitions']} transitions)",
            str(row["quota"]),
        )
    requests = stats.get("requests") or {}
    if requests:
        table.caption = "requests: " + ", ".join(f"{k} {v:,}" for k, v in sorted(requests.items()))
    return table


def _transitions_table(transitions: list[dict[str, Any]], limit: int = 20) -> Table:
    table = Table(title="circuit breaker transitions (latest)", title_justify="left")
    for col in ("at", "provider", "from", "to", "reason"):
        table.add_column(col)
    for t in transitions[-limit:]:
        table.add_row(
            str(t["at"])[:23],
            str(t["provider"]),
            str(t["from_state"]),
            str(t["to_state"]),
            str(t["reason"]),
        )
    return table


# -- issue 5: storage
@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL over views bars, actions, quarantine.")],
    limit: Annotated[int, typer.Option(help="Rows to show.")] = 50,
) -> None:
    """Run SQL (DuckDB) over the lake and print the result as a table."""
    from quantivista.storage.lake.sql import sql_query

    try:
        settings = _settings()
        df = sql_query(settings.data_dir, query, settings.storage)
    except QuantiVistaError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    table = Table(header_style="bold", caption=f"{df.height:,} rows")
    for name in df.columns:
        table.add_column(name, justify="right" if df.schema[name].is_numeric() else "left")
    for row in df.head(limit).iter_rows():
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


@app.command()
def backup(dest: Annotated[Path, typer.Argument(help="New, empty backup directory.")]) -> None:
    """Snapshot the data directory (and PostgreSQL bars) into DEST with a checksummed manifest."""
    from quantivista.storage.lake.backup import PostgresBars
    from quantivista.storage.lake.backup import backup as run_backup

    settings = _settings()
    try:
        manifest = run_backup(settings.data_dir, dest, PostgresBars.from_settings(settings))
    except QuantiVistaError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    size = sum(f["bytes"] for f in manifest["files"].values())
    console.print(f"backed up {len(manifest['files']):,} files ({size:,} bytes) to {dest}")
    if "postgres" in manifest:
        pg = manifest["postgres"]
        rows = ", ".join(f"{t} {info['rows']:,} rows" for t, info in pg["tables"].items())
        console.print(f"PostgreSQL schema {pg['schema']} (migration {pg['revision']}): {rows}")


@app.command()
def restore(src: Annotated[Path, typer.Argument(help="A directory made by `qv backup`.")]) -> None:
    """Verify the backup SRC and restore it into the (empty) data directory and schema."""
    from quantivista.storage.lake.backup import PostgresBars
    from quantivista.storage.lake.backup import restore as run_restore

    settings = _settings()
    postgres = PostgresBars.from_settings(settings)
    try:
        manifest = run_restore(src, settings.data_dir, postgres)
    except QuantiVistaError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    console.print(f"restored {len(manifest['files']):,} verified files into {settings.data_dir}")
    if postgres is not None:
        rows = sum(info["rows"] for info in manifest["postgres"]["tables"].values())
        console.print(f"loaded {rows:,} rows into PostgreSQL schema {postgres.schema}")


@app.command("storage-report")
def storage_report_cmd() -> None:
    """Print rows, bytes and compression ratio per storage tier (lake or PostgreSQL)."""
    from quantivista.storage.lake.bars import ParquetLake, storage_report

    settings = _settings()
    if settings.storage.backend == "postgres":
        from quantivista.storage.postgres.bars import PostgresStore

        try:
            store = PostgresStore(
                settings.services.postgres_dsn.get_secret_value(),
                settings.storage.postgres_schema,
                pool_size=1,
            )
        except QuantiVistaError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from exc
        try:
            report = store.storage_report()
        finally:
            store.close()
        title = f"storage (PostgreSQL schema {settings.storage.postgres_schema})"
    else:
        report = storage_report(ParquetLake(settings.data_dir, settings.storage))
        title = "storage"
    table = Table(title=title, header_style="bold")
    for name in report.columns:
        table.add_column(name, justify="left" if name == "tier" else "right")
    for tier, files, rows, size, raw, ratio in report.iter_rows():
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        table.add_row(tier, f"{files:,}", f"{rows:,}", f"{size:,}", f"{raw:,}", ratio_text)
    console.print(table)


@app.command()
def retention() -> None:
    """Apply storage.hot_days: archive older bars to storage.archive_url, or drop them."""
    from datetime import UTC, datetime, timedelta

    from quantivista.storage.base import RetentionPolicy, apply_retention
    from quantivista.storage.lake.bars import ParquetLake
    from quantivista.storage.lake.retention import archive_expired

    settings = _settings()
    hot_days = settings.storage.hot_days
    if not hot_days:
        console.print("no retention configured (storage.hot_days)")
        return
    lake = ParquetLake(settings.data_dir, settings.storage)
    now = datetime.now(UTC)
    if lake.cold is not None:
        moved = archive_expired(lake, hot_days, now)
        verb = f"archived to {settings.storage.archive_url}"
    else:
        policy = RetentionPolicy({tf: timedelta(days=d) for tf, d in hot_days.items()})
        moved = apply_retention(lake, policy, now)
        verb = "deleted"
    for tf, rows in moved.items():
        console.print(f"{tf}: {rows:,} bars {verb}")


# -- issue 4: quality ----------------------------------------------------------------------
@app.command()
def quality(
    target: Annotated[str, typer.Argument(help="A symbol, or a job id (job-...).")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")] = "1d",
    limit: Annotated[int, typer.Option(help="Worst days / symbols shown.")] = 15,
) -> None:
    """Show data quality: a job's report, or a symbol's score trend and worst days."""
    with _platform() as p:
        if target.startswith("job-"):
            report = p.quality_report(target)
            scores = p.quality_scores(job_id=target, timeframe=None)
            console.print(_report_table(report))
            console.print(_profile_table(report.data_profiling.get("last_batch", {})))
            if scores.height:
                per_symbol = (
                    scores.group_by("symbol")
                    .agg(days=pl.len(), score=pl.col("score").mean(),
                         rejected=pl.col("rejected").sum(), flagged=pl.col("flagged").sum(),
                         missing=pl.col("missing").sum())
                    .sort("score", "symbol")
                )  # fmt: skip
                console.print(_frame_table(per_symbol.head(limit), "worst symbols"))
            return
        scores = p.quality_scores(target, timeframe=timeframe)
        fresh = p.freshness(target, timeframe)
    if scores.is_empty():
        console.print(f"no quality scores for {target} ({timeframe})")
        raise typer.Exit(code=1)
    weekly = (
        scores.sort("date")
        .with_columns(_week=pl.col("date").dt.truncate("1w"))
        .group_by("_week", maintain_order=True)
        .agg(pl.col("score").mean())
    )
    mean = float(scores.select(pl.col("score").mean()).item() or 0.0)
    line = sparkline(weekly["score"].to_list())
    first, last = scores.select(lo=pl.col("date").min(), hi=pl.col("date").max()).row(0)
    console.print(
        Panel(
            f"{line}\n{first} .. {last}  "
            f"days {scores.height:,}  mean score {mean:.4f}  "
            f"rejected {int(scores['rejected'].sum()):,}  flagged {int(scores['flagged'].sum()):,}"
            f"  missing {int(scores['missing'].sum()):,}",
            title=f"{target} {timeframe}: quality score by week",
        )
    )
    worst = scores.filter(pl.col("score") < 1).sort("score", "date").head(limit)
    if worst.height:
        console.print(_frame_table(worst.drop("timeframe", "job_id", "scored_at"), "worst days"))
    if fresh.height:
        row = fresh.row(0, named=True)
        state = "[green]fresh[/]" if row["fresh"] else f"[red]{row['bars_behind']} bars behind[/]"
        console.print(f"latest bar {_fmt(row['last_ts'])}: {state}")


@app.command("quarantine-release")
def quarantine_release(
    job: Annotated[str | None, typer.Option(help="Only rows of this job.")] = None,
    symbols: Annotated[list[str] | None, typer.Option("--symbol", "-s", help="Repeatable.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only rows rejected by this rule.")] = None,
    corrected: Annotated[
        Path | None, typer.Option(help="Parquet/CSV of fixed bars (symbol, timeframe, ts, ...).")
    ] = None,
    demote: Annotated[
        list[str] | None, typer.Option(help="Rule that only flags these rows (repeatable).")
    ] = None,
) -> None:
    """Send held quarantine rows back through validation into the store."""
    fixed = None
    if corrected is not None:
        fixed = (
            pl.read_parquet(corrected)
            if corrected.suffix == ".parquet"
            else pl.read_csv(corrected, try_parse_dates=True)
        )
    with _platform() as p:
        report = p.release_quarantine(job, symbols or None, rule, corrected=fixed,
                                      demote=demote or ())  # fmt: skip
    console.print(_report_table(report))


def _report_table(report: Any) -> Table:
    table = Table(title=f"quality report {report.job_id}", header_style="bold")
    table.add_column("rule")
    table.add_column("count", justify="right")
    table.add_row("[bold]rows checked[/]", f"{report.total_records:,}")
    table.add_row("[bold]rows rejected[/]", f"{report.invalid_records:,}")
    for rule, n in sorted(report.rule_counts.items()):
        table.add_row(rule, f"{n:,}")
    table.add_row("[bold]quality score[/]", f"{report.quality_score:.4f}")
    return table


def _profile_table(prof: dict[str, Any]) -> Table:
    table = Table(title=f"column profile ({prof.get('rows', 0):,} rows)", header_style="bold")
    stats = ("min", "max", "mean", "std", "nulls", "nan")
    table.add_column("column")
    for stat in stats:
        table.add_column(stat, justify="right")
    for col, values in prof.get("columns", {}).items():
        table.add_row(col, *[_fmt(values.get(stat)) for stat in stats])
    return table


def _frame_table(df: pl.DataFrame, title: str) -> Table:
    table = Table(title=title, header_style="bold")
    for col in df.columns:
        table.add_column(col, justify="right" if df.schema[col].is_numeric() else "left")
    for row in df.iter_rows():
        table.add_row(*[_fmt(v) for v in row])
    return table


# -- issue 3: demo through the provider simulator ------------------------------------------
DEMO_VENDORS = ["iex_cloud", "yahoo", "polygon"]  # first in line down, then primary, backup


@contextmanager
def _demo_source(
    settings: Settings, via_simulator: bool
) -> Iterator[tuple[Settings, list[str] | None]]:
    """Yield the demo's settings and providers: the default, or vendors served by a simulator.

    With the simulator, IEX Cloud (first in line) is down, so its breaker opens and Yahoo
    serves; Yahoo fails 5% of calls, and Polygon takes over when its retries run out. The
    simulator enforces rate limits and our limiter uses the same windows.
    """
    if not via_simulator:
        yield settings, None
        return
    from quantivista.acquisition.analytics import ProviderAnalytics
    from quantivista.config import ProviderFaultSettings, RateWindow, SimulatorServerSettings
    from quantivista.platform import PROVIDER_STATS_FILE
    from quantivista.providers.simulator import run_simulator
    from quantivista.providers.simulator.wiring import settings_for_simulator

    limits = (RateWindow(calls=20, seconds=1), RateWindow(calls=600, seconds=60))
    limited = {"rate_limits": limits}
    config = SimulatorServerSettings(
        seed=settings.simulator.seed,  # the same market the demo picks its universe from
        universe_size=settings.simulator.universe_size,
        providers={
            "yahoo": ProviderFaultSettings(error_rate=0.03, malformed_rate=0.02, **limited),
            "iex_cloud": ProviderFaultSettings(down=True, **limited),
            "polygon": ProviderFaultSettings(**limited),
        },
    )
    with run_simulator(config) as sim:
        console.print(f"[bold]provider simulator[/] on {sim.url}: {', '.join(DEMO_VENDORS)}")
        yield settings_for_simulator(settings, sim, DEMO_VENDORS, timeout_s=5.0), DEMO_VENDORS
        # the platform saved its analytics after each ingest: show what `qv providers` shows
        stats = ProviderAnalytics.load(settings.data_dir / PROVIDER_STATS_FILE) or {}
        if stats.get("providers"):
            console.print(_provider_stats_table(stats, "this demo"))
        if stats.get("transitions"):
            console.print(_transitions_table(stats["transitions"]))
        served = sim.stats()["providers"]
        violations = sum(served[name]["violations"] for name in DEMO_VENDORS)
        console.print(f"simulator: rate-limit violations counted: [bold]{violations}[/]")


def main() -> None:
    """Run the `qv` command line."""
    app()


if __name__ == "__main__":
    main()
