"""`qv quality`, `qv quarantine`, `qv quarantine-release`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from quantivista.cli.app import app, console, fail, session
from quantivista.cli.commands.universe import show_revalidation
from quantivista.cli.render import (
    NUMERIC,
    Format,
    emit,
    fmt,
    frame_table,
    profile_table,
    report_table,
    sparkline,
)

__all__ = ["quality", "quarantine", "quarantine_release", "revalidate"]

# the table shows what a person scans for; every column is in --format json/csv
_QUARANTINE_COLUMNS = ("symbol", "timeframe", "ts", "close", "volume", "rule", "reason")
FORMAT = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")]


@app.command()
def quarantine(
    symbols: Annotated[list[str] | None, typer.Argument(help="Only these symbols.")] = None,
    job: Annotated[str | None, typer.Option(help="Only rows of this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show in a table.")] = 30,
    fmt_: FORMAT = Format.table,
) -> None:
    """Show rows that failed validation, with the rule and the reason."""
    with session() as rt:
        df = rt.quality.quarantine(symbols or None, job_id=job)
    if fmt_ is not Format.table:
        emit(df, fmt_, "quarantine")
        return
    if df.is_empty():
        console.print("quarantine is empty")
        return
    table = Table(
        title=f"quarantine: {df.height:,} rows",
        header_style="bold",
        caption="all columns (prices, job, time): qv quarantine --format csv",
    )
    for col in _QUARANTINE_COLUMNS:
        wraps = col in ("rule", "reason")
        table.add_column(
            "tf" if col == "timeframe" else col,
            justify="right" if col in NUMERIC else "left",
            no_wrap=not wraps,
            overflow="fold",
            ratio=2 if col == "reason" else None,
        )
    for row in df.head(limit).iter_rows(named=True):
        table.add_row(*[fmt(row[c]) for c in _QUARANTINE_COLUMNS])
    console.print(table)


@app.command()
def quality(
    target: Annotated[str, typer.Argument(help="A symbol, or a job id (job-...).")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t")] = "1d",
    limit: Annotated[int, typer.Option(min=1, help="Worst days / symbols shown.")] = 15,
    fmt_: FORMAT = Format.table,
) -> None:
    """Show data quality: a job's report, or a symbol's score trend and worst days.

    With `--format json` a job prints its report and a symbol its scores per day; `csv`
    prints scores per day.
    """
    with session() as rt:
        if target.startswith("job-"):
            report = rt.quality.report(target)
            scores = rt.quality.scores(job_id=target, timeframe=None)
            if fmt_ is Format.json:
                sys.stdout.write(report.model_dump_json(indent=1) + "\n")
                return
            if fmt_ is Format.csv:
                emit(scores, fmt_, "scores")
                return
            console.print(report_table(report))
            console.print(profile_table(report.data_profiling.get("last_batch", {})))
            if scores.height:
                per_symbol = (
                    scores.group_by("symbol")
                    .agg(days=pl.len(), score=pl.col("score").mean(),
                         rejected=pl.col("rejected").sum(), flagged=pl.col("flagged").sum(),
                         missing=pl.col("missing").sum())
                    .sort("score", "symbol")
                )  # fmt: skip
                console.print(frame_table(per_symbol.head(limit), "worst symbols"))
            return
        scores = rt.quality.scores(target, timeframe=timeframe)
        fresh = rt.queries.freshness(target, timeframe)
    if scores.is_empty():
        fail(f"no quality scores for {target} ({timeframe})")
    if fmt_ is not Format.table:
        emit(scores, fmt_, "scores")
        return
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
            title=escape(f"{target} {timeframe}: quality score by week"),
        )
    )
    worst = scores.filter(pl.col("score") < 1).sort("score", "date").head(limit)
    if worst.height:
        console.print(frame_table(worst.drop("timeframe", "job_id", "scored_at"), "worst days"))
    if fresh.height:
        row = fresh.row(0, named=True)
        state = "[green]fresh[/]" if row["fresh"] else f"[red]{row['bars_behind']} bars behind[/]"
        console.print(f"latest bar {fmt(row['last_ts'])}: {state}")


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
        if not corrected.is_file():
            fail(f"no such file: {corrected}", code=2)
        fixed = (
            pl.read_parquet(corrected)
            if corrected.suffix == ".parquet"
            else pl.read_csv(corrected, try_parse_dates=True)
        )
    with session() as rt:
        report = rt.writes.release_quarantine(
            job, symbols or None, rule, corrected=fixed, demote=demote or ()
        )
    console.print(report_table(report))


@app.command()
def revalidate(
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1d, 1m, ...")] = "1d",
    dask: Annotated[
        bool, typer.Option("--dask", help="On Dask: one task per lake bucket.")
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (default: dask.scheduler_address)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="LocalCluster worker processes (dask.workers).")
    ] = None,
    fmt_: FORMAT = Format.table,
) -> None:
    """Check every stored bar against the current rules (after a rule change); store nothing.

    `qv universe revalidate` in this process by default; with --dask the universe is split
    by the lake's buckets over a Dask cluster: a LocalCluster on 127.0.0.1, or the scheduler
    given.
    """
    show_revalidation(timeframe, scheduler, workers, "dask" if dask else "local", fmt_)
