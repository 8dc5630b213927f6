"""Interleaved offsets (Kafka, Pulsar): unique per (partition, position), and `deinterleave`
finds the first position of a partition at or after any topic offset."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quantivista.bus.base import deinterleave, interleave

partitions = st.integers(min_value=1, max_value=64)


@given(partitions, st.data())
def test_interleave_round_trips_and_is_unique(n: int, data: st.DataObject) -> None:
    p = data.draw(st.integers(0, n - 1))
    position = data.draw(st.integers(0, 10**9))
    offset = interleave(position, p, n)
    assert offset >= 1
    assert deinterleave(offset, p, n) == position
    other = data.draw(st.integers(0, n - 1))
    if other != p:
        assert all(interleave(q, other, n) != offset for q in range(position - 2, position + 3))


@given(partitions, st.data())
def test_deinterleave_is_the_first_position_at_or_after_an_offset(
    n: int, data: st.DataObject
) -> None:
    p = data.draw(st.integers(0, n - 1))
    offset = data.draw(st.integers(-5, 10**6))
    first = deinterleave(offset, p, n)
    assert first >= 0
    assert interleave(first, p, n) >= offset
    if first > 0:
        assert interleave(first - 1, p, n) < offset


def test_one_partition_is_dense() -> None:
    assert [interleave(i, 0, 1) for i in range(5)] == [1, 2, 3, 4, 5]
    assert [interleave(i, p, 3) for i in range(2) for p in range(3)] == [1, 2, 3, 4, 5, 6]
