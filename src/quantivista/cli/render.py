"""Rich tables, panels and unicode charts the commands print. Values are never read as markup."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import polars as pl
from rich.markup import escape
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

from quantivista.cli.app import console
from quantivista.model.flags import QualityFlag
from quantivista.model.jobs import DataQualityReport, IngestionJob
from quantivista.services.queries import status_by_timeframe

__all__ = [
    "Format",
    "actions_summary",
    "emit",
    "job_score",
    "jobs_frame",
    "bars_table",
    "chart_panel",
    "fmt",
    "frame_table",
    "job_line",
    "jobs_table",
    "profile_table",
    "progress_bar",
    "quality_panel",
    "report_table",
    "sparkline",
    "store_table",
]

NUMERIC = {"open", "high", "low", "close", "volume", "vwap", "trades", "rows", "bytes"}
_SPARKS = "▁▂▃▄▅▆▇█"


def fmt(value: Any) -> str:
    """Format one cell: thousands separators, trimmed decimals, text escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100_000 else f"{value:,.4f}".rstrip("0").rstrip(".")
    return escape(str(value))


def progress_bar() -> Progress:
    """Return the progress display of long commands (per symbol)."""
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


def bars_table(df: pl.DataFrame, symbol: str, timeframe: str, limit: int) -> Table:
    """Return the head and tail of one symbol's bars as a table.

    Daily and longer bars show their session date, intraday bars date and time (UTC);
    prices have one number of decimals per table (2, or 4 for sub-unit prices).
    """
    shown = df if df.height <= limit else pl.concat([df.head(limit // 2), df.tail(limit // 2)])
    daily = timeframe in ("1d", "1w", "1mo")
    stamp = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"
    lo, hi = df["ts"].min(), df["ts"].max()
    title = f"{symbol} {timeframe}: {df.height:,} bars {_stamp(lo, stamp)} .. {_stamp(hi, stamp)}"
    table = Table(title=escape(title), header_style="bold")
    low = df.select(pl.min_horizontal("low", "close").min()).item()
    places = 4 if low is not None and low < 1 else 2
    table.add_column("date" if daily else "ts (UTC)", no_wrap=True)
    for col in ("open", "high", "low", "close", "volume"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("provider")
    table.add_column("flags")
    for i, row in enumerate(shown.iter_rows(named=True)):  # at most `limit` rows
        if df.height > limit and i == limit // 2:
            table.add_row(*["…"] * 8)
        flags = ",".join(QualityFlag.names_of(row["quality_flags"])) or "-"
        prices = [_price(row[c], places) for c in ("open", "high", "low", "close")]
        volume = "" if row["volume"] is None else f"{row['volume']:,.0f}"
        table.add_row(
            _stamp(row["ts"], stamp), *prices, volume, escape(row["provider"] or ""), flags
        )
    return table


def _stamp(value: Any, pattern: str) -> str:
    return value.strftime(pattern) if hasattr(value, "strftime") else str(value)


def _price(value: float | None, places: int) -> str:
    return "" if value is None else f"{value:,.{places}f}"


def chart_panel(df: pl.DataFrame, symbol: str, timeframe: str, prices: str = "raw prices") -> Panel:
    """Return close and volume sparklines of a bar frame."""
    closes = df["close"].to_list()
    volumes = df["volume"].to_list()
    body = (
        f"close  {sparkline(closes, 72)}  {fmt(closes[0])} → {fmt(closes[-1])}\n"
        f"volume {sparkline(volumes, 72)}  max {fmt(max(v for v in volumes if v is not None))}"
    )
    title = f"{symbol} {timeframe}  {_day(df['ts'].min())} .. {_day(df['ts'].max())}  ({prices})"
    return Panel(body, title=escape(title), expand=False)


def store_table(stats: pl.DataFrame, report: pl.DataFrame | None = None) -> Table:
    """Return what the store holds per timeframe; files and bytes per tier as the caption.

    A lake file holds several symbols, so files are counted per tier (`report`), not summed
    over symbols.
    """
    table = Table(title="store", header_style="bold")
    for col in ("timeframe", "symbols", "rows", "first", "last", "MB"):
        table.add_column(col, justify="right")
    summary = status_by_timeframe(stats)
    for r in summary.iter_rows(named=True):
        table.add_row(
            r["timeframe"],
            f"{r['symbols']:,}",
            f"{r['rows']:,}",
            f"{r['first']:%Y-%m-%d %H:%M}",
            f"{r['last']:%Y-%m-%d %H:%M}",
            f"{r['bytes'] / 1e6:,.1f}",
        )
    if report is not None and report.height:
        table.caption = ", ".join(
            f"{tier}: {files:,} files, {size / 1e6:,.1f} MB"
            for tier, files, size in report.select("tier", "files", "bytes").iter_rows()
        )
    return table


def jobs_table(
    jobs: list[IngestionJob],
    title: str = "recent jobs",
    *,
    progress: dict[str, tuple[int, int]] | None = None,
) -> Table:
    """Return one row per job (the job id is never wrapped: it is what you copy).

    `progress` (finished tasks, tasks) per job adds a tasks column.
    """
    table = Table(title=title, header_style="bold")
    table.add_column("job", no_wrap=True)
    table.add_column("status", no_wrap=True)
    cols = ("tasks", "tf", "syms", "rows", "bad", "score") if progress is not None else (
        "tf", "syms", "rows", "bad", "score")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)
    table.caption = "bad: rows quarantined; qv jobs --format json has every field"
    for job in jobs:
        value = job_score(job)
        extra = []
        if progress is not None:
            done, total = progress.get(job.job_id, (0, job.tasks))
            where = f" {job.queue}" if job.queue else ""
            extra.append(f"{done}/{total}{escape(where)}")
        table.add_row(
            escape(job.job_id),
            job.status.value,
            *extra,
            job.timeframe or "-",
            f"{len(job.symbols):,}",
            f"{job.records_processed:,}",
            f"{job.records_failed:,}",
            "-" if value is None else f"{value:.3f}",
        )
    return table


def job_line(job: IngestionJob) -> None:
    """Print a job's outcome and its first problems."""
    colour = {"succeeded": "green", "partial": "yellow", "failed": "red"}.get(
        job.status.value, "white"
    )
    value = job_score(job)
    score = "-" if value is None else f"{value:.4f}"
    console.print(
        f"[{colour}]{job.status.value}[/] {escape(job.job_id)}: {job.records_processed:,} bars "
        f"({job.timeframe}), {job.records_failed:,} rejected, quality score {score}, "
        f"{job.duration_s or 0:.1f} s"
    )
    for detail in job.error_details[:5]:
        text = f"{detail.get('symbol', '')} {detail.get('kind')}: {detail.get('message', '')}"
        console.print(f"  [yellow]•[/] {escape(text)}")
    if len(job.error_details) > 5:
        console.print(f"  … and {len(job.error_details) - 5} more")


def quality_panel(jobs: list[IngestionJob], quarantined: int) -> Table:
    """Return rows checked, stored and rejected per rule, one column per job."""
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


def actions_summary(actions: pl.DataFrame) -> Table:
    """Return one row per action type with a count and an example."""
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
        table.add_row(
            str(kind), f"{part.height:,}", escape(f"{ex['symbol']} {ex['ex_date']} {detail}")
        )
    return table


def report_table(report: DataQualityReport) -> Table:
    """Return a quality report's counts per rule and its score."""
    table = Table(title=escape(f"quality report {report.job_id}"), header_style="bold")
    table.add_column("rule")
    table.add_column("count", justify="right")
    table.add_row("[bold]rows checked[/]", f"{report.total_records:,}")
    table.add_row("[bold]rows rejected[/]", f"{report.invalid_records:,}")
    for rule, n in sorted(report.rule_counts.items()):
        table.add_row(escape(rule), f"{n:,}")
    table.add_row("[bold]quality score[/]", f"{report.quality_score:.4f}")
    return table


def profile_table(prof: dict[str, Any]) -> Table:
    """Return the column profile of a batch (min, max, mean, std, nulls, NaN)."""
    table = Table(title=f"column profile ({prof.get('rows', 0):,} rows)", header_style="bold")
    stats = ("min", "max", "mean", "std", "nulls", "nan")
    table.add_column("column")
    for stat in stats:
        table.add_column(stat, justify="right")
    for col, values in prof.get("columns", {}).items():
        table.add_row(escape(col), *[fmt(values.get(stat)) for stat in stats])
    return table


def frame_table(df: pl.DataFrame, title: str, caption: str | None = None) -> Table:
    """Return any frame as a table (numbers right-aligned)."""
    table = Table(title=escape(title), header_style="bold", caption=caption)
    for col in df.columns:
        table.add_column(escape(col), justify="right" if df.schema[col].is_numeric() else "left")
    for row in df.iter_rows():  # callers pass a head of the frame
        table.add_row(*[fmt(v) for v in row])
    return table


class Format(StrEnum):
    """How a listing command prints: a table for people, JSON or CSV for programs."""

    table = "table"
    json = "json"
    csv = "csv"


def emit(df: pl.DataFrame, fmt: Format, title: str, caption: str | None = None) -> None:
    """Print a frame as a table, JSON rows or CSV (machine formats go to stdout verbatim)."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps(df.to_dicts(), default=str, indent=1) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(df.write_csv())
    else:
        console.print(frame_table(df, title, caption))


def jobs_frame(
    jobs: list[IngestionJob], progress: dict[str, tuple[int, int]] | None = None
) -> pl.DataFrame:
    """Return jobs as a frame (one row each) for JSON and CSV output."""
    done = {k: v[0] for k, v in (progress or {}).items()}
    return pl.DataFrame(
        [
            {
                "job_id": j.job_id,
                "status": j.status.value,
                "timeframe": j.timeframe,
                "symbols": len(j.symbols),
                "tasks": j.tasks,
                "tasks_done": done.get(j.job_id),
                "queue": j.queue,
                "records_processed": j.records_processed,
                "records_failed": j.records_failed,
                "quality_score": job_score(j),
                "start_time": j.start_time,
                "end_time": j.end_time,
                "duration_s": j.duration_s,
                "providers": ",".join(j.providers) or j.source_id,
            }
            for j in jobs
        ],
        schema_overrides={
            "quality_score": pl.Float64,
            "duration_s": pl.Float64,
            "tasks_done": pl.Int64,
            "queue": pl.String,
        },
    )


def job_score(job: IngestionJob) -> float | None:
    """Return a job's quality score, or None when nothing was checked (nothing to score)."""
    if job.quality is None or job.quality.total_records == 0:
        return None
    return job.quality.quality_score
