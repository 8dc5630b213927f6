"""`qv replay` (a topic's range again) and `qv dlq list|show|replay` (dead letters)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from quantivista.cli.app import app, console, errors_to_exit, session
from quantivista.cli.commands.stream import _with_bus
from quantivista.services.distribution import describe

__all__ = ["dlq_app", "replay"]

dlq_app = typer.Typer(help="Dead-letter topics: list, show, replay.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        raise typer.BadParameter("times need a zone: 2026-12-04T14:00:00Z")
    return stamp


def _print(data: object) -> None:
    console.print(json.dumps(data, default=str), soft_wrap=True, markup=False)


@app.command()
def replay(
    topic: Annotated[str, typer.Option(help="Topic to replay.")],
    from_offset: Annotated[int | None, typer.Option(help="First offset.")] = None,
    from_time: Annotated[str | None, typer.Option(help="First time (ISO, with zone).")] = None,
    to_offset: Annotated[int | None, typer.Option(help="Last offset (inclusive).")] = None,
    to_time: Annotated[str | None, typer.Option(help="Last time (inclusive).")] = None,
    into: Annotated[str | None, typer.Option(help="Publish onto this topic instead.")] = None,
    show: Annotated[bool, typer.Option(help="Only print the messages.")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many messages.")] = None,
    bus: Annotated[str | None, typer.Option(help="Broker URL (default: bus.url).")] = None,
) -> None:
    """Publish a range of a topic again (consumers apply it idempotently), or --show it."""
    bounds: dict[str, Any] = {
        "from_offset": from_offset, "from_time": _time(from_time), "to_offset": to_offset,
        "to_time": _time(to_time), "limit": limit,
    }  # fmt: skip
    with session(_with_bus(bus, None)) as runtime, errors_to_exit():
        service = runtime.distribution
        if show:
            for message in service.messages(topic, **bounds):
                _print(describe(message, runtime.codecs))
            return
        _print(service.replay(topic, into=into, **bounds).__dict__)


@dlq_app.command("list")
def dlq_list(
    bus: Annotated[str | None, typer.Option(help="Broker URL (default: bus.url).")] = None,
) -> None:
    """List dead-letter topics and how many messages each holds."""
    with session(_with_bus(bus, None)) as runtime, errors_to_exit():
        for row in runtime.distribution.dead_letter_topics():
            _print(row)


@dlq_app.command("show")
def dlq_show(
    topic: Annotated[str, typer.Argument(help="dlq.<topic> (or the topic).")],
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 20,
    bus: Annotated[str | None, typer.Option(help="Broker URL (default: bus.url).")] = None,
) -> None:
    """Show dead letters: origin topic and offset, failing group, error, content."""
    name = topic if topic.startswith("dlq.") else f"dlq.{topic}"
    with session(_with_bus(bus, None)) as runtime, errors_to_exit():
        for message in runtime.distribution.messages(name, limit=limit):
            _print(describe(message, runtime.codecs))


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="dlq.<topic> (or the topic).")],
    bus: Annotated[str | None, typer.Option(help="Broker URL (default: bus.url).")] = None,
) -> None:
    """Publish each dead letter once more onto the topic it came from."""
    with session(_with_bus(bus, None)) as runtime, errors_to_exit():
        _print(runtime.distribution.replay_dead_letters(topic).__dict__)
