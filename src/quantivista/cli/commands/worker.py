"""`qv worker`: run queued ingestion tasks until SIGTERM (see `services.workers`)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from quantivista.cli.app import app, console, session

__all__ = ["worker"]


@app.command()
def worker(
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Queue to serve (workers.queue).")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-c", min=1, max=64, help="Tasks at once (workers.concurrency)."
        ),
    ] = None,
    probe_port: Annotated[
        int | None,
        typer.Option(help="Port of /healthz /readyz /metrics (probes.ports.worker; 0: any)."),
    ] = None,
) -> None:
    """Claim and run queued ingestion tasks from the job catalog until SIGTERM or Ctrl-C.

    Jobs reach the queue with `qv ingest --submit`, `qv backfill` or the API (workers.enabled).
    Any number of workers on any number of hosts may share one PostgreSQL catalog.
    """
    with session(create=True) as rt:
        service = rt.worker(queue, concurrency, probe_port=probe_port)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            service.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        service.start()
        console.print(
            f"[bold]worker[/] {escape(service.name)} serving queue {escape(service.queue)!r}"
            f" with {service.concurrency} slots; probes on {service.probes.url}",
            soft_wrap=True,
        )
        service.wait()
        console.print(f"worker {escape(service.name)} stopped")
