"""`qv universe`: universe-wide work on Dask (re-validation, rollups, adjusted exports, scores).

One Dask task per lake bucket (`services.universe`): on a LocalCluster of `--workers`
processes on 127.0.0.1 by default, or on a running cluster (`--scheduler tcp://host:8786`,
whose workers must reach the same store). `--local` runs the same work in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from quantivista.cli.app import app, console, errors_to_exit, fail, settings
from quantivista.cli.render import Format, emit
from quantivista.config import Settings
from quantivista.services import universe as work
from quantivista.services.revalidation import revalidate as revalidate_store

__all__ = ["show_revalidation", "universe_app"]

universe_app = typer.Typer(
    help="Universe-wide work on Dask: revalidate, rollup, export, rescore.", no_args_is_help=True
)
app.add_typer(universe_app, name="universe")

SCHEDULER = Annotated[
    str | None,
    typer.Option("--scheduler", help="A running Dask scheduler (default: a LocalCluster)."),
]
WORKERS = Annotated[
    int | None, typer.Option("--workers", "-w", min=1, help="LocalCluster worker processes.")
]
LOCAL = Annotated[bool, typer.Option("--local", help="Run in this process, without Dask.")]
TIMEFRAME = Annotated[str, typer.Option("--timeframe", "-t", help="1d, 1h, 1m...")]
FORMAT = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")]


def _settings(scheduler: str | None, workers: int | None) -> Settings:
    """This invocation's settings with the cluster options applied."""
    base = settings()
    update: dict[str, object] = {}
    if scheduler:
        update["scheduler_address"] = scheduler
    if workers:
        update["workers"] = workers
    return base.model_copy(update={"dask": base.dask.model_copy(update=update)})


def _engine(local: bool) -> Literal["local", "dask"]:
    return "local" if local else "dask"


@contextmanager
def _progress(label: str) -> Iterator[work.Progress]:
    """Yield a `progress(done, total)` that draws a bar of partitions."""
    bar = Progress(
        TextColumn(f"[bold]{escape(label)}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("partitions"), TimeElapsedColumn(), console=console,
    )  # fmt: skip
    with bar:
        task = bar.add_task(label, total=None)

        def tell(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tell


@universe_app.command("revalidate")
def revalidate(
    timeframe: TIMEFRAME = "1d",
    scheduler: SCHEDULER = None,
    workers: WORKERS = None,
    local: LOCAL = False,
    fmt_: FORMAT = Format.table,
) -> None:
    """Check every stored bar with the current rules (after a rule change); write nothing."""
    show_revalidation(timeframe, scheduler, workers, _engine(local), fmt_)


def show_revalidation(
    timeframe: str,
    scheduler: str | None,
    workers: int | None,
    engine: Literal["local", "dask"],
    fmt_: Format,
) -> None:
    """Revalidate and print the findings: `qv universe revalidate` and `qv revalidate`.

    A table shows the rule counts and a progress bar; json and csv print the per-symbol
    counts alone (no bar: the output is for programs).
    """
    with errors_to_exit():
        if fmt_ is not Format.table:
            report = revalidate_store(_settings(scheduler, workers), timeframe, engine=engine)
            emit(report.per_symbol, fmt_, "revalidation")
            return
        with _progress("revalidate") as tell:
            report = revalidate_store(
                _settings(scheduler, workers), timeframe, engine=engine, progress=tell
            )
    table = Table(title=f"revalidation {report.timeframe} ({report.engine})", header_style="bold")
    table.add_column("rule")
    table.add_column("bars", justify="right")
    for rule, n in sorted(report.rule_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(escape(rule), f"{n:,}")
    if report.rule_counts:
        console.print(table)
    console.print(
        f"revalidated {report.timeframe} ({report.engine}): {report.bars:,} bars of"
        f" {report.per_symbol.height:,} symbols in {report.partitions} partitions;"
        f" rejected {report.rejected:,}; {report.elapsed_s:.1f} s"
    )


@universe_app.command("rollup")
def rollup(
    target: Annotated[
        list[str] | None, typer.Option("--target", help="Timeframes to build (repeat).")
    ] = None,
    session: Annotated[str, typer.Option(help="regular or extended hours.")] = "regular",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute; store nothing.")] = False,
    scheduler: SCHEDULER = None,
    workers: WORKERS = None,
    local: LOCAL = False,
) -> None:
    """Rebuild bars of `--target` timeframes (default 1d) from every stored 1-minute bar."""
    targets = target or ["1d"]
    with errors_to_exit(), _progress("rollup") as tell:
        derived = work.rollups(
            _settings(scheduler, workers), targets, session=session, engine=_engine(local),
            write=not dry_run, progress=tell,
        )  # fmt: skip
    counts = derived.group_by("timeframe").agg(bars=pl.len(), symbols=pl.col("symbol").n_unique())
    for row in counts.sort("timeframe").iter_rows(named=True):
        console.print(
            f"{escape(row['timeframe'])}: {row['bars']:,} bars of {row['symbols']:,} symbols"
            + (" (not stored)" if dry_run else " stored")
        )
    if derived.is_empty():
        console.print("no 1-minute bars stored: nothing to roll up")


@universe_app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="Where the Parquet parts go.")],
    timeframe: TIMEFRAME = "1d",
    start: Annotated[str | None, typer.Option(help="First date (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option(help="Last date, inclusive.")] = None,
    adjust: Annotated[str, typer.Option(help="none, splits or all.")] = "all",
    scheduler: SCHEDULER = None,
    workers: WORKERS = None,
    local: LOCAL = False,
) -> None:
    """Write every symbol's adjusted bars as Parquet parts (one per partition)."""
    if adjust not in work.ADJUST_MODES:
        fail(f"--adjust must be one of {', '.join(work.ADJUST_MODES)}, not {adjust!r}", code=2)
    with errors_to_exit(), _progress("export") as tell:
        parts = work.export_adjusted(
            _settings(scheduler, workers), directory,
            date.fromisoformat(start) if start else None,
            date.fromisoformat(end) if end else None,
            timeframe, adjust=adjust, engine=_engine(local), progress=tell,  # type: ignore[arg-type]
        )  # fmt: skip
    rows = sum(n for _, n in parts)
    console.print(f"{len(parts)} parts, {rows:,} bars under {escape(str(directory))}")


@universe_app.command("rescore")
def rescore(
    timeframe: TIMEFRAME = "1d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute; store nothing.")] = False,
    scheduler: SCHEDULER = None,
    workers: WORKERS = None,
    local: LOCAL = False,
) -> None:
    """Recompute the day quality scores of every stored bar under the current rules."""
    with errors_to_exit(), _progress("rescore") as tell:
        scores = work.rescore(
            _settings(scheduler, workers), timeframe, engine=_engine(local),
            write=not dry_run, progress=tell,
        )  # fmt: skip
    symbols = scores["symbol"].n_unique() if scores.height else 0
    console.print(
        f"{scores.height:,} day scores of {symbols:,} symbols"
        + (" (not stored)" if dry_run else " stored")
    )
