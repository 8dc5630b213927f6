"""`qv sql`, `qv backup`, `qv restore`, `qv storage-report`, `qv retention`, `qv compact`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, errors_to_exit, session, settings
from quantivista.cli.render import Format, emit, frame_table
from quantivista.services.maintenance import restore_store

__all__ = ["backup", "compact", "restore", "retention", "sql", "storage_report"]


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL over views bars, actions, quarantine.")],
    limit: Annotated[int, typer.Option(min=1, help="Rows to show in a table.")] = 50,
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = (
        Format.table
    ),
    allow_writes: Annotated[
        bool, typer.Option(help="Also run statements that write (COPY ... TO, EXPORT, ...).")
    ] = False,
) -> None:
    """Run SQL over the store in use (DuckDB over the lake, or PostgreSQL), read-only."""
    with session() as rt:
        df = rt.maintenance.sql(query, allow_writes=allow_writes)
    if fmt_ is not Format.table:
        emit(df, fmt_, "")
        return
    console.print(frame_table(df.head(limit), "", caption=f"{df.height:,} rows"))


@app.command()
def backup(dest: Annotated[Path, typer.Argument(help="New, empty backup directory.")]) -> None:
    """Snapshot the store into DEST with a checksummed manifest."""
    with session() as rt:
        manifest = rt.maintenance.backup(dest)
    size = sum(f["bytes"] for f in manifest["files"].values())
    console.print(
        f"backed up {len(manifest['files']):,} files ({size:,} bytes) to {escape(str(dest))}"
    )
    if "postgres" in manifest:
        pg = manifest["postgres"]
        rows = ", ".join(f"{t} {info['rows']:,} rows" for t, info in pg["tables"].items())
        console.print(
            escape(f"PostgreSQL schema {pg['schema']} (migration {pg['revision']}): {rows}")
        )


@app.command()
def restore(src: Annotated[Path, typer.Argument(help="A directory made by `qv backup`.")]) -> None:
    """Verify the backup SRC and restore it into the (empty) store."""
    config = settings()
    with errors_to_exit():
        manifest = restore_store(config, src)
    console.print(
        f"restored {len(manifest['files']):,} verified files into {escape(str(config.data_dir))}"
    )
    if "postgres" in manifest:
        rows = sum(info["rows"] for info in manifest["postgres"]["tables"].values())
        console.print(f"loaded {rows:,} rows into PostgreSQL")


@app.command("storage-report")
def storage_report() -> None:
    """Print rows, bytes and compression ratio per storage tier (lake or PostgreSQL)."""
    with session() as rt:
        report = rt.maintenance.storage_report()
        where = rt.maintenance.describes
    table = Table(title=escape(f"storage ({where})"), header_style="bold")
    for name in report.columns:
        table.add_column(name, justify="left" if name == "tier" else "right")
    for tier, files, rows, size, raw, ratio in report.iter_rows():
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        table.add_row(tier, f"{files:,}", f"{rows:,}", f"{size:,}", f"{raw:,}", ratio_text)
    console.print(table)


@app.command()
def retention() -> None:
    """Apply storage.hot_days: archive older bars to storage.archive_url, or drop them."""
    with session() as rt:
        if not rt.settings.storage.hot_days:
            console.print("no retention configured (storage.hot_days)")
            return
        outcome = rt.maintenance.retention()
    verb = f"archived to {outcome.archived_to}" if outcome.archived_to else "deleted"
    for tf, rows in outcome.rows.items():
        console.print(escape(f"{tf}: {rows:,} bars {verb}"))


@app.command()
def compact() -> None:
    """Merge the lake's small history files (keeps as-of reads fast after many corrections).

    Also removes the temporaries that killed writers left (an hour old or more).
    """
    with session() as rt:
        removed = rt.maintenance.compact()
    console.print(f"compacted: {removed:,} history files merged away")
