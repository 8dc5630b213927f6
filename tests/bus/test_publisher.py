"""Publishing frames one message per partition: every symbol in its own partition, in order."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from quantivista.bus.base import partition_of
from quantivista.bus.codecs import Codecs
from quantivista.bus.events import Event, TradesBatch
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.memory_broker import MemoryBroker
from quantivista.bus.publisher import Publisher, _Splitter
from quantivista.errors import BusError, MessageTooLargeError


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


def _reference_split(frame: pl.DataFrame, partitions: int) -> list[tuple[list[str], list[int]]]:
    """What the splitter must return: per partition with rows (ascending), its symbols in
    name order and its rows in frame order (the `n` column)."""
    part_of = [partition_of(s, partitions) for s in frame["symbol"].to_list()]
    out = []
    for p in sorted(set(part_of)):
        rows = [i for i, q in enumerate(part_of) if q == p]
        names = sorted({frame["symbol"][i] for i in rows})
        out.append((names, [frame["n"][i] for i in rows]))
    return out


def test_the_splitter_matches_a_plain_reference_across_calls_chunks_and_new_symbols() -> None:
    rng = np.random.default_rng(11)
    # learned in another order than their names' (codes are not in name order)
    names = np.array([f"S{i:03d}" for i in rng.permutation(60)])
    split = _Splitter(4)
    for call in range(40):
        known = 20 + call  # a new symbol (or more) now and then
        n = int(rng.integers(1, 400))
        picked = names[rng.integers(0, known if call % 7 else 3, n)]
        frame = pl.DataFrame({"symbol": picked, "n": np.arange(n)})
        if call % 3 == 0:  # several chunks, as a concat of feed frames is
            frame = pl.concat([frame.head(n // 2), frame.tail(n - n // 2)], rechunk=False)
        got = [(symbols, rows["n"].to_list()) for symbols, rows in split(frame)]
        assert got == _reference_split(frame, 4), call
    one = pl.DataFrame({"symbol": [str(names[0])] * 5, "n": np.arange(5)})  # one partition
    [(symbols, rows)] = split(one)
    assert symbols == [str(names[0])] and rows.equals(one)


def test_the_splitter_refuses_rows_without_a_symbol() -> None:
    frame = pl.DataFrame({"symbol": ["A", None], "n": [0, 1]})
    with pytest.raises(BusError, match="without a symbol"):
        _Splitter(4)(frame)


class _CountingBroker(MemoryBroker):
    asked = 0

    def max_message_bytes(self) -> int | None:
        self.asked += 1
        return 1_000_000


def test_per_symbol_asks_the_broker_its_message_limit_once_a_call() -> None:
    broker = _CountingBroker()
    publisher = Publisher(broker, Codecs(), "json")
    symbols = [f"S{i}" for i in range(30)]
    assert len(publisher.per_symbol("trades.x", frame(symbols), lambda s, p: make([s], p))) == 30
    assert broker.asked == 1


def test_symbol_item_still_refuses_an_event_over_the_limit_it_is_given() -> None:
    publisher = Publisher(MemoryBroker(), Codecs(), "json")
    with pytest.raises(MessageTooLargeError):
        publisher.symbol_item("A", frame(["A"]), lambda s, p: make([s], p), limit=1500)
    _, value, _ = publisher.symbol_item("A", frame(["A"]), lambda s, p: make([s], p), limit=None)
    assert value


def test_two_threads_splitting_while_symbols_are_learned_get_the_reference_split() -> None:
    """The loop (trades) and the store thread (bars) share a splitter: what one learns
    never gives the other a split of another symbol set."""
    split = _Splitter(4)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for call in range(150):
                names = np.array([f"T{seed}_{i}" for i in range(call // 3 + 2)] + ["A", "B"])
                frame = pl.DataFrame({"symbol": rng.choice(names, 30), "n": np.arange(30)})
                got = [(symbols, rows["n"].to_list()) for symbols, rows in split(frame)]
                assert got == _reference_split(frame, 4)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave as often as the interpreter allows
    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors, errors
    assert {"A", "B"} <= set(split.known.symbols) and len(split.known.symbols) == 2 + 2 * 51
