"""Interleaved offsets (Kafka, Pulsar): unique per (partition, position), and `deinterleave`
finds the first position of a partition at or after any topic offset."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quantivista.bus.base import Member, deinterleave, interleave, last_interleaved

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


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=16))
def test_last_interleaved_is_the_largest_offset_of_a_last_message(ends: list[int]) -> None:
    n = len(ends)
    offsets = [interleave(pos, p, n) for p, end in enumerate(ends) for pos in range(end)]
    assert last_interleaved(ends) == max(offsets, default=0)


@given(st.integers(1, 8), st.integers(1, 64))
def test_members_of_a_group_split_the_partitions_between_them(count: int, n: int) -> None:
    shares = [Member(i, count).partitions(n) for i in range(count)]
    assert sorted(p for share in shares for p in share) == list(range(n))
    assert all(p % count == i for i, share in enumerate(shares) for p in share)
