"""Publishing frames one message per partition: every symbol in its own partition, in order."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from quantivista.bus.base import partition_of
from quantivista.bus.codecs import Codecs
from quantivista.bus.events import Event, TradesBatch
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.memory_broker import MemoryBroker
from quantivista.bus.publisher import Publisher


def make(symbols: list[str], part: pl.DataFrame) -> Event:
    return TradesBatch(occurred_at=datetime.now(UTC), source="t", rows=part.height,
                       symbols=symbols, trades=to_ipc(part))  # fmt: skip


def frame(names: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"symbol": names, "n": list(range(len(names)))})


def test_each_symbol_goes_to_its_partition_in_order_and_new_symbols_are_learned() -> None:
    broker = MemoryBroker()
    publisher = Publisher(broker, Codecs(), "json")
    codecs = Codecs()
    first = frame(["A", "B", "C", "A", "D", "B", "A"])
    second = frame(["E", "A", "F", "E"])  # E and F are new
    assert len(publisher.per_partition("trades.x", first, make)) >= 2
    assert publisher.submit_per_partition("trades.x", second, make).result(timeout=5)
    assert publisher.submit_per_partition("trades.x", first.head(0), make).result() == []
    got: dict[str, list[int]] = {}
    for message in broker.read("trades.x"):
        event = codecs.decode(message.value, dict(message.headers))
        assert isinstance(event, TradesBatch)
        rows = from_ipc(event.trades)
        symbols = sorted(set(rows["symbol"].to_list()))
        assert message.headers["qv-symbols"] == ",".join(symbols) == ",".join(event.symbols)
        assert {partition_of(s, 4) for s in symbols} == {message.partition}
        for name, n in rows.iter_rows():
            got.setdefault(name, []).append(n)
    want: dict[str, list[int]] = {}
    for part in (first, second):
        for name, n in part.iter_rows():
            want.setdefault(name, []).append(n)
    assert got == want
