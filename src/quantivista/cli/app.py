"""The `qv` application object, its global options, and the one place errors become exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from quantivista.config import Settings
from quantivista.errors import QuantiVistaError
from quantivista.runtime import Runtime
from quantivista.services.audit import acting_as, cli_actor

__all__ = ["app", "console", "err_console", "fail", "session", "settings"]

app = typer.Typer(
    name="qv",
    help="QuantiVista market-data platform: ingest, validate, store and query bars.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # messages keep paths whole: no hard wrap

_state: dict[str, Any] = {}


@app.callback()
def _main(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", "-d", help="Data directory (QV_DATA_DIR).")
    ] = None,
) -> None:
    with errors_to_exit():
        loaded = Settings()
    _state["settings"] = loaded.with_data_dir(data_dir) if data_dir is not None else loaded


def settings() -> Settings:
    """Return the settings of this invocation (environment, qv.toml, --data-dir)."""
    loaded = _state.get("settings")
    return loaded if isinstance(loaded, Settings) else Settings()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` (not read as markup) to stderr and exit with `code`."""
    err_console.print(escape(message))
    raise typer.Exit(code=code)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn the platform's errors into one line on stderr and exit code 2."""
    try:
        yield
    except QuantiVistaError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=2) from exc


@contextmanager
def session(config: Settings | None = None, *, create: bool = False) -> Iterator[Runtime]:
    """Yield a runtime for one command and close it; platform errors exit with code 2.

    Only commands that write (`create=True`) may start a new store in an empty directory.
    """
    with (
        errors_to_exit(),
        Runtime.from_settings(config or settings(), create=create) as runtime,
        acting_as(cli_actor()),  # what the command changes is audited as this user's
    ):
        yield runtime
