"""Publish events and frames to broker topics: encoded once, keyed and routed by symbol."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import polars as pl

from quantivista.bus.base import Broker, partition_of
from quantivista.bus.codecs import CodecName, Codecs
from quantivista.bus.events import Event
from quantivista.bus.topics import Route, partitions_of

__all__ = ["Publisher"]


class Publisher:
    """Encode events in one codec and publish them, creating topics on first use."""

    def __init__(self, broker: Broker, codecs: Codecs, codec: CodecName = "avro") -> None:
        self.broker = broker
        self.codecs = codecs
        self.codec = codec
        self._created: set[str] = set()
        self.published = 0

    def ensure(self, topic: str) -> None:
        """Create `topic` with the table's partition count (once per process)."""
        if topic not in self._created:
            self.broker.create_topic(topic, partitions=partitions_of(topic))
            self._created.add(topic)

    def event(self, topic: str, event: Event, *, key: str | None = None,
              route: Route | None = None) -> int:  # fmt: skip
        """Publish one event; return its offset."""
        self.ensure(topic)
        value, headers = self.codecs.encode(event, self.codec, key=key)
        if route is not None:
            headers.update(route.headers())
        self.published += 1
        return self.broker.publish(topic, value, key=key, headers=headers)

    def per_symbol(
        self,
        topic: str,
        frame: pl.DataFrame,
        make: Callable[[str, pl.DataFrame], Event],
        routes: Mapping[str, Route] | None = None,
    ) -> list[int]:
        """Publish one event per symbol of `frame` (key = symbol: one symbol stays in order)."""
        if frame.is_empty():
            return []
        self.ensure(topic)
        items: list[tuple[str | None, bytes, Mapping[str, str] | None]] = []
        for (symbol,), part in frame.group_by("symbol", maintain_order=True):
            name = str(symbol)
            value, headers = self.codecs.encode(make(name, part), self.codec, key=name)
            route = (routes or {}).get(name) or Route(symbol=name)
            headers.update(route.headers())
            items.append((name, value, headers))
        offsets = self.broker.publish_many(topic, items)
        self.published += len(offsets)
        return offsets

    def per_partition(
        self, topic: str, frame: pl.DataFrame, make: Callable[[list[str], pl.DataFrame], Event]
    ) -> list[int]:
        """Publish one event per partition of `frame`'s symbols (fewer, larger messages; each
        symbol still lands in its own partition, in order). Keyed by the partition's first
        symbol; `qv-symbols` lists them all."""
        if frame.is_empty():
            return []
        self.ensure(topic)
        n = partitions_of(topic)
        parts: dict[int, list[str]] = {}
        for name in frame["symbol"].unique().to_list():  # one entry per symbol, not per row
            parts.setdefault(partition_of(name, n), []).append(name)
        if len(parts) == 1:
            rows_of = {next(iter(parts)): frame}
        else:  # one pass over the rows, not one filter per partition
            which = {s: p for p, names in parts.items() for s in names}
            tagged = frame.with_columns(
                _p=pl.col("symbol").replace_strict(which, return_dtype=pl.Int32)
            )
            rows_of = {
                int(k[0]): v.drop("_p") for k, v in tagged.partition_by("_p", as_dict=True).items()
            }
        items: list[tuple[str | None, bytes, Mapping[str, str] | None]] = []
        for p, symbols in parts.items():
            symbols.sort()
            value, headers = self.codecs.encode(
                make(symbols, rows_of[p]), self.codec, key=symbols[0]
            )
            headers["qv-symbols"] = ",".join(symbols)
            items.append((symbols[0], value, headers))
        offsets = self.broker.publish_many(topic, items)
        self.published += len(offsets)
        return offsets
