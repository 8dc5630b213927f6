"""`qv scheduler` (and the other operations commands)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from quantivista.cli.app import app, console, session
from quantivista.cli.render import Format, emit, frame_table
from quantivista.services.scheduler import Scheduler, run_scheduler

__all__ = ["scheduler"]


@app.command()
def scheduler(
    status: Annotated[
        bool, typer.Option("--status", help="Show each entry's last run and next slot, then exit.")
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due now (if the lease is free), then exit.")
    ] = False,
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Run scheduled jobs (nightly universe update, retention, backups, compaction, syncs).

    One scheduler is active per store (a lease); more wait as standbys. Probes and metrics
    answer on `probes.ports.scheduler` (9104); SIGTERM stops it after the running job.
    """
    with session(create=True) as rt:
        if status or once:
            sched = Scheduler.from_runtime(rt)
            if once:
                runs = sched.tick()
                sched.lease.release()
                for run in runs:
                    sys.stdout.write(json.dumps({"entry": run.key, **run.as_state()}) + "\n")
                if not sched.leader:
                    console.print("another scheduler holds the lease: nothing run")
                return
            table = sched.status()
            if fmt_ is Format.table:
                console.print(frame_table(table, "Schedule"))
            else:
                emit(table, fmt_, "")
            return
        run_scheduler(rt)
