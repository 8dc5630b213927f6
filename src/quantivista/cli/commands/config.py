"""`qv config`: the effective settings and where they come from (secrets masked)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, errors_to_exit, settings
from quantivista.cli.render import Format
from quantivista.config import config_source

__all__ = ["config"]


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows.extend(_flatten(inner, f"{prefix}{key}." if isinstance(inner, dict) and inner
                                 else f"{prefix}{key}"))  # fmt: skip
        return rows
    return [(prefix.rstrip("."), value)]


@app.command()
def config(
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Show the effective settings: defaults, qv.toml and QV_* variables merged.

    A setting's environment variable is QV_ + its path (`storage.backend` ->
    QV_STORAGE__BACKEND). Secrets (API keys, passwords in DSNs) print as `**********`.
    """
    with errors_to_exit():
        values = settings().summary()
    if fmt_ is Format.json:
        sys.stdout.write(json.dumps(values, default=str, indent=1) + "\n")
        return
    table = Table(
        title=escape(f"settings (defaults, then {config_source()})"),
        header_style="bold",
        caption="each is set by QV_ + its path in capitals, dots as __: "
        "storage.backend -> QV_STORAGE__BACKEND",
    )
    table.add_column("setting", overflow="fold")
    table.add_column("value", overflow="fold")
    for key, value in _flatten(values):
        table.add_row(escape(key), escape(json.dumps(value, default=str)))
    console.print(table)
