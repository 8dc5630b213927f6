"""`qv bars` and `qv actions`: stored bars (raw or adjusted) and corporate actions."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, fail, session
from quantivista.cli.render import Format, bars_table, chart_panel, emit, fmt
from quantivista.services.queries import BarQuery

__all__ = ["OutputFormat", "actions", "bars"]


class OutputFormat(StrEnum):
    """How `qv bars` prints."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"
    chart = "chart"


@app.command()
def bars(
    symbols: Annotated[list[str], typer.Argument(help="Symbols to read (one or more).")],
    start: Annotated[str | None, typer.Option(help="First date (inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date (inclusive).")] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")] = "1d",
    fmt_: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Rows shown per symbol in table format (head and tail).")
    ] = 20,
    adjust: Annotated[str, typer.Option(help="none, splits or all.")] = "none",
    dividend_convention: Annotated[
        str, typer.Option(help="crsp (Yahoo/Lean) or alpha_vantage.")
    ] = "crsp",
    session_: Annotated[
        str, typer.Option("--session", help="regular, or extended (with pre/post market).")
    ] = "regular",
) -> None:
    """Print stored bars as tables, charts, CSV, JSON or Parquet."""
    with session() as rt:
        query = BarQuery.of(
            symbols,
            start,
            end,
            timeframe,
            adjust=adjust,  # type: ignore[arg-type]  # checked by the reader
            dividend_convention=dividend_convention,  # type: ignore[arg-type]
            session=session_,
        )
        df = rt.queries.bars(query)
    if df.is_empty():
        fail(f"no {timeframe} bars stored for {', '.join(symbols)} in that range")
    if fmt_ in (OutputFormat.parquet, OutputFormat.csv, OutputFormat.json):
        _write(df, fmt_, output)
        return
    label = "raw prices" if adjust == "none" else f"adjusted: {adjust}"
    for (symbol,), part in df.group_by("symbol", maintain_order=True):
        if fmt_ is OutputFormat.chart:
            console.print(chart_panel(part, str(symbol), timeframe, label))
        else:
            console.print(bars_table(part, str(symbol), timeframe, limit))


def _write(df: pl.DataFrame, fmt: OutputFormat, output: Path | None) -> None:
    """Write bars to `output` (or CSV/JSON to stdout) and say what was written."""
    if output is None:
        if fmt is OutputFormat.parquet:
            fail("--format parquet needs --output FILE", code=2)
        text = df.write_csv() if fmt is OutputFormat.csv else df.write_json()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        if fmt is OutputFormat.parquet:
            df.write_parquet(output, compression="zstd")
        elif fmt is OutputFormat.csv:
            df.write_csv(output)
        else:
            df.write_json(output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", code=2)
    console.print(f"wrote {df.height:,} bars to {escape(str(output))} ({fmt.value})")


@app.command()
def actions(
    symbol: Annotated[str, typer.Argument(help="Symbol whose corporate actions to show.")],
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = (
        Format.table
    ),
) -> None:
    """Show the stored corporate actions of a symbol (splits, dividends, renames, ...)."""
    with session() as rt:
        df = rt.queries.actions(symbol)
    if df.is_empty():
        fail(f"no corporate actions stored for {symbol}")
    if fmt_ is not Format.table:
        emit(df, fmt_, "actions")
        return
    table = Table(
        title=escape(f"corporate actions of {symbol}: {df.height:,}"), header_style="bold"
    )
    for col in ("ex_date", "symbol", "type", "ratio", "amount", "currency", "new symbol", "source"):
        table.add_column(col, justify="right" if col in ("ratio", "amount") else "left")
    for row in df.iter_rows(named=True):  # a symbol has tens of actions
        table.add_row(
            str(row["ex_date"]),
            escape(row["symbol"]),
            row["action_type"],
            fmt(row["ratio"]) if row["ratio"] is not None else "",
            f"{row['amount']:.6g}" if row["amount"] is not None else "",
            row["currency"] or "",
            escape(row["new_symbol"] or ""),
            escape(row["provider"] or ""),
        )
    console.print(table)
