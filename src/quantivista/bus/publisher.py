"""Publish events and frames to broker topics: encoded once, keyed and routed by symbol."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import EllipsisType

import numpy as np
import polars as pl

from quantivista.bus.base import Broker, partition_of
from quantivista.bus.codecs import CodecName, Codecs
from quantivista.bus.events import Event
from quantivista.bus.topics import Route, partitions_of
from quantivista.errors import BusUsageError, MessageTooLargeError

__all__ = ["Publisher", "by_symbol"]

_ENVELOPE_BYTES = 1024  # what a broker adds around a message (its own headers, the key)


class Publisher:
    """Encode events in one codec and publish them, creating topics on first use."""

    def __init__(self, broker: Broker, codecs: Codecs, codec: CodecName = "avro") -> None:
        self.broker = broker
        self.codecs = codecs
        self.codec = codec
        self._created: set[str] = set()
        self._splitters: dict[int, _Splitter] = {}
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

    def submit_event(
        self, topic: str, event: Event, *, key: str | None = None
    ) -> Future[list[int]]:
        """`event` without waiting for the broker: return the future of its offset."""
        self.ensure(topic)
        value, headers = self.codecs.encode(event, self.codec, key=key)
        self.published += 1
        return self.broker.publish_async(topic, [(key, value, headers)])

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
        limit = self.broker.max_message_bytes()  # once a call, not once a symbol
        items = [
            self.symbol_item(name, part, make, routes, limit=limit)
            for name, part in by_symbol(frame)
        ]
        return self.items(topic, items)

    def symbol_item(
        self,
        symbol: str,
        part: pl.DataFrame,
        make: Callable[[str, pl.DataFrame], Event],
        routes: Mapping[str, Route] | None = None,
        *,
        limit: int | EllipsisType | None = ...,
    ) -> tuple[str | None, bytes, Mapping[str, str] | None]:
        """Encode one symbol's event of `per_symbol`: what the broker cannot take fails here,
        before anything is sent (`MessageTooLargeError`). `limit`: the broker's
        `max_message_bytes()` when the caller asked it once for many symbols (default: ask)."""
        value, headers = self.codecs.encode(make(symbol, part), self.codec, key=symbol)
        route = (routes or {}).get(symbol) or Route(symbol=symbol)
        headers.update(route.headers())
        if isinstance(limit, EllipsisType):
            limit = self.broker.max_message_bytes()
        size = len(value) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        if limit is not None and size > limit - _ENVELOPE_BYTES:
            raise MessageTooLargeError(
                "event larger than the broker takes", symbol=symbol, bytes=size, limit=limit
            )
        return symbol, value, headers

    def items(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        """Publish encoded items in order; return their offsets."""
        if not items:
            return []
        self.ensure(topic)
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
        offsets = self.broker.publish_many(topic, self._partition_items(topic, frame, make))
        self.published += len(offsets)
        return offsets

    def submit_per_partition(
        self, topic: str, frame: pl.DataFrame, make: Callable[[list[str], pl.DataFrame], Event]
    ) -> Future[list[int]]:
        """`per_partition` without waiting for the broker: return the future of the offsets
        (publishes started one after another keep their order)."""
        if frame.is_empty():
            done: Future[list[int]] = Future()
            done.set_result([])
            return done
        items = self._partition_items(topic, frame, make)
        self.published += len(items)
        return self.broker.publish_async(topic, items)

    def _partition_items(
        self, topic: str, frame: pl.DataFrame, make: Callable[[list[str], pl.DataFrame], Event]
    ) -> Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]:
        self.ensure(topic)
        n = partitions_of(topic)
        split = self._splitters.get(n)
        if split is None:
            split = self._splitters[n] = _Splitter(n)
        items: list[tuple[str | None, bytes, Mapping[str, str] | None]] = []
        for symbols, rows in split(frame):
            value, headers = self.codecs.encode(make(symbols, rows), self.codec, key=symbols[0])
            headers["qv-symbols"] = ",".join(symbols)
            items.append((symbols[0], value, headers))
        return items


def by_symbol(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Return (symbol, rows) per symbol of `frame`, in order of first appearance."""
    return [(str(s), part) for (s,), part in frame.group_by("symbol", maintain_order=True)]


@dataclass(frozen=True, slots=True)
class _Known:
    """The symbols a splitter has seen: their Enum (codes in order seen), each code's
    partition, and each partition's codes in symbol-name order."""

    symbols: tuple[str, ...]
    enum: pl.Enum
    table: np.ndarray
    members: tuple[np.ndarray, ...]


class _Splitter:
    """Split a frame's rows by the partition of their symbol, keeping their order: symbol
    codes of an Enum of the symbols seen (read from the Arrow dictionary's indices, a
    third of the cost of `to_physical`), a partition table, one stable sort and slices;
    each partition's symbols in name order are kept per partition, so a call loops over
    partitions, not symbols (a micro-batch of trades is split in ~0.06 ms).

    The loop (trades) and the store thread (bars) split at the same time: what is known
    is one immutable `_Known`, replaced whole under a lock by the call that learns new
    symbols (a call reads one without the lock)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        empty = np.zeros(0, dtype=np.int64)
        self._lock = threading.Lock()
        self.known = _Known((), pl.Enum([]), np.zeros(0, np.int8), (empty,) * partitions)

    def _learn(self, names: list[str]) -> _Known:
        # under a lock: two threads learning at once each add to the latest (else the later
        # replace drops what the other learned, to be learned again); reads take no lock
        with self._lock:
            known = self.known
            new = set(names) - set(known.symbols)
            if not new:
                return known
            symbols = known.symbols + tuple(sorted(new))
            table = np.array([partition_of(s, self.partitions) for s in symbols], np.int64)
            table = table.astype(np.int8) if self.partitions <= 127 else table  # radix sort
            by_name = np.array(sorted(range(len(symbols)), key=symbols.__getitem__), np.int64)
            members = tuple(by_name[table[by_name] == p] for p in range(self.partitions))
            self.known = _Known(symbols, pl.Enum(list(symbols)), table, members)
            return self.known

    def __call__(self, frame: pl.DataFrame) -> list[tuple[list[str], pl.DataFrame]]:
        """Return (sorted symbols, rows) per partition that has rows."""
        names = frame["symbol"]
        if names.null_count():  # no partition for a null symbol: keyed like a None key
            raise BusUsageError("a frame published per partition has rows without a symbol")
        known = self.known
        try:
            codes = _codes(names, known.enum)
        except pl.exceptions.InvalidOperationError:  # symbols not seen before
            known = self._learn(names.unique().to_list())
            codes = _codes(names, known.enum)
        present = np.bincount(codes, minlength=len(known.symbols)) > 0
        parts = known.table[codes]
        counts = np.bincount(parts, minlength=self.partitions)
        used = np.flatnonzero(counts)
        if used.size == 1:  # one partition: the frame as it is
            return [(_present(known, int(used[0]), present), frame)]
        ordered = frame[np.argsort(parts, kind="stable")]
        starts = np.cumsum(counts) - counts
        return [
            (_present(known, p, present), ordered.slice(int(starts[p]), int(counts[p])))
            for p in used.tolist()
        ]


def _codes(names: pl.Series, enum: pl.Enum) -> np.ndarray:
    codes: np.ndarray = names.cast(enum).to_arrow().indices.to_numpy()
    return codes


def _present(known: _Known, partition: int, present: np.ndarray) -> list[str]:
    """The symbols of `partition` with rows (`present`, by code), in name order."""
    members = known.members[partition]
    return [known.symbols[c] for c in members[present[members]].tolist()]
