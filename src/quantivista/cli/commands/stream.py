"""`qv stream` (live trades -> bars -> store -> topics) and `qv integrate` (raw -> enriched)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from quantivista.cli.app import app, console, errors_to_exit, fail, session, settings
from quantivista.config import Settings
from quantivista.services.streaming import open_feed

__all__ = ["stream"]


def _with_bus(bus: str | None, codec: str | None) -> Settings:
    base = settings()
    update = {k: v for k, v in {"url": bus, "codec": codec}.items() if v is not None}
    with errors_to_exit():
        return base.model_copy(update={"bus": base.bus.model_validate({**base.bus.model_dump(),
                                                                        **update})})  # fmt: skip


def _symbols(text: str) -> list[str]:
    names = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not names:
        fail("--symbols names no symbol", code=2)
    return names


@app.command()
def stream(
    source: Annotated[str, typer.Option(help="synthetic or finnhub (WebSocket).")] = "synthetic",
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "AAPL,MSFT",
    bus: Annotated[str | None, typer.Option(help="Broker URL (default: bus.url).")] = None,
    codec: Annotated[str | None, typer.Option(help="json, avro or protobuf.")] = None,
    ws_url: Annotated[str | None, typer.Option(help="Finnhub WebSocket URL.")] = None,
    rate: Annotated[float | None, typer.Option(help="Synthetic trades per second.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many trades.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
) -> None:
    """Live trades -> 1-minute bars (event time) -> validate -> store -> publish to topics."""
    config = _with_bus(bus, codec)
    names = _symbols(symbols)
    key = config.providers.finnhub.api_key
    url = ws_url
    if url is None and config.providers.finnhub.base_url:
        url = config.providers.finnhub.base_url.replace("http", "ws", 1).rstrip("/") + "/ws"
    with session(config, create=True) as runtime:
        service = runtime.stream_service("synthetic" if source == "synthetic" else source)
        with errors_to_exit():
            service.welcome(names, runtime.clock.now())  # history and store ready first
            feed = open_feed(
                source, names, config.stream, ws_url=url,
                api_key=key.get_secret_value() if key else None, rate=rate, limit=limit,
            )  # fmt: skip
            stats = service.serve(
                feed,
                config.probes,
                duration_s=duration,
                on_ready=lambda u: console.print(f"stream: probes on {u}", soft_wrap=True),
            )
        service.close()
    console.print(json.dumps(stats.__dict__), soft_wrap=True, markup=False)


@app.command()
def integrate(
    group: Annotated[str | None, typer.Option(help="Consumer group (integrate.group).")] = None,
    topic: Annotated[str, typer.Option(help="Raw bars topic to consume.")] = "bars.raw.1m",
    member: Annotated[int, typer.Option(help="This member's number, from 0.")] = 0,
    members: Annotated[int, typer.Option(help="Members of the group.")] = 1,
    bus: Annotated[str | None, typer.Option(help="Broker URL (default: bus.url).")] = None,
    codec: Annotated[str | None, typer.Option(help="Codec of enriched bars.")] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Exit after this many idle seconds.")
    ] = None,
) -> None:
    """Raw bars -> validate -> store (idempotent) -> adjust -> enrich -> bars.enriched."""
    config = _with_bus(bus, codec)
    with session(config, create=True) as runtime:
        service = runtime.integration_service()
        with errors_to_exit():
            stats = service.serve(
                topic,
                config.probes,
                group=group,
                member=member,
                members=members,
                idle_exit_s=idle_exit,
                on_ready=lambda u: console.print(f"integrate: probes on {u}", soft_wrap=True),
            )
    console.print(json.dumps(stats.__dict__), soft_wrap=True, markup=False)
