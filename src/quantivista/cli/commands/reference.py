"""`qv instruments` and `qv benchmark`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, err_console, fail, session
from quantivista.cli.render import Format, emit

__all__ = ["benchmark", "instruments"]


@app.command()
def instruments(
    symbol: Annotated[str | None, typer.Argument(help="Ticker to look up.")] = None,
    on: Annotated[str | None, typer.Option(help="Date of the lookup (default: latest).")] = None,
    load: Annotated[
        Path | None, typer.Option(help="Load instruments from a CSV or JSON file first.")
    ] = None,
    history: Annotated[Path | None, typer.Option(help="Symbol-history CSV for --load.")] = None,
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = (
        Format.table
    ),
) -> None:
    """List instruments, or look one up by ticker on a date (point in time)."""
    for path in (load, history):
        if path is not None and not path.is_file():
            fail(f"no such file: {path}", code=2)
    with session(create=load is not None) as rt:
        master = rt.reference.instruments
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
            for row in report.rejected.iter_rows(named=True):  # the refused rows only
                err_console.print(
                    f"  [yellow]rejected[/] {escape(str(row['instrument_id']))}: "
                    f"{escape(str(row['reason']))}"
                )
        if symbol is None:
            frame = master.instruments()
            if fmt_ is not Format.table:
                emit(frame, fmt_, "instruments")
                return
            table = Table(title=f"instruments: {frame.height:,}", header_style="bold")
            shown = ("instrument_id", "name", "asset_class", "currency", "exchange", "isin")
            for col in shown:
                table.add_column(col)
            for row in frame.iter_rows(named=True):
                table.add_row(*[escape(str(row[c] or "")) for c in shown])
            console.print(table)
            return
        found = master.lookup(symbol, on=on)
        if found is None:
            fail(f"no instrument used {symbol} {'on ' + on if on else ''}".strip())
        hist = master.history(found.instrument_id)
    if fmt_ is Format.json:
        record = {**found.model_dump(mode="json"), "tickers": hist.to_dicts()}
        sys.stdout.write(json.dumps(record, default=str, indent=1) + "\n")
        return
    if fmt_ is Format.csv:  # one row; the ticker history as one field
        intervals = [f"{r['symbol']}:{r['valid_from']}..{r['valid_to']}" for r in hist.to_dicts()]
        emit(pl.DataFrame([{**found.model_dump(mode="json"), "tickers": " ".join(intervals)}]),
             fmt_, "")  # fmt: skip
        return
    table = Table(title=escape(f"{symbol} {'on ' + on if on else ''}".strip()), header_style="bold")
    table.add_column("field")
    table.add_column("value")
    for key, value in found.model_dump().items():
        if value is not None:
            table.add_row(key, escape(str(value)))
    tickers = ", ".join(
        f"{r['symbol']} {r['valid_from'] or '…'}..{r['valid_to'] or ''}"
        for r in hist.iter_rows(named=True)
    )
    table.add_row("tickers", escape(tickers))
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
    chosen: Any = weights
    if weights != "equal":
        try:
            chosen = {k: float(v) for k, v in (item.split("=") for item in weights.split(","))}
        except ValueError:
            fail("--weights must be equal or SYMBOL=WEIGHT,...", code=2)
    with session() as rt:
        result = rt.reference.benchmark(
            symbols,
            chosen,
            rebalance=rebalance,  # type: ignore[arg-type]  # checked by custom_benchmark
            total_return=total_return,
            start=start,
            end=end,
            against=against,
        )
    console.print(
        escape(f"custom benchmark of {', '.join(symbols)}: {weights} weights, {rebalance}")
    )
    table = Table(title="yearly returns", header_style="bold")
    table.add_column("year")
    table.add_column("return", justify="right")
    for row in result.yearly.iter_rows(named=True):
        table.add_row(str(row["period"].year), f"{row['ret']:+.2%}")
    console.print(table)
    if result.against is not None:
        cmp_table = Table(title=escape(f"against {against}"), header_style="bold")
        cmp_table.add_column("measure")
        cmp_table.add_column("value", justify="right")
        for key, value in result.against.items():
            cmp_table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(cmp_table)
