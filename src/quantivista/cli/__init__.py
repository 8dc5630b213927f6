"""`qv`: the command line, a thin shell over the runtime's services.

One module per command group in `commands/`; `app.py` holds the application, its global
options and the one mapping of platform errors to exit codes; `render.py` the tables.
"""

from quantivista.cli.app import app
from quantivista.cli.commands import (
    backfill,
    bars,
    bus,
    config,
    demo,
    ingest,
    operations,
    providers,
    quality,
    reference,
    serve,
    storage,
    stream,
    universe,
    worker,
    workflows,
)
from quantivista.cli.render import sparkline

__all__ = ["app", "main", "sparkline"]

# imported for their commands, which they register on `app`
_COMMAND_MODULES = (
    backfill, bars, bus, config, demo, ingest, operations, providers, quality, reference,
    serve, storage, stream, worker, workflows, universe,
)  # fmt: skip


def main() -> None:
    """Run the `qv` command line."""
    app()
