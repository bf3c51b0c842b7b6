"""RecvStream as the direct peer uses it: a byte-bounded reorder buffer kept in order without
re-sorting (and, without a byte bound, exactly as the relay and the client use it)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from udproom.protocol.reliability import RecvStream, ranges_of


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=200), st.integers(0, 400), st.integers(0, 10_000))
def test_in_order_exactly_once_within_the_byte_bound(seqs, max_bytes, seed):
    rx = RecvStream(1, 64, max_bytes)
    rng = random.Random(seed)
    got: list[int] = []
    for s in seqs:
        size = rng.randrange(1, 40)
        rx.offer(s, f"m{s}", size)
        assert rx._order == sorted(rx.buffer)  # the order is kept, never rebuilt
        assert rx.bytes == sum(rx._sizes.values())
        got.extend(s for s, _ in rx.pop_ready())
        assert not max_bytes or rx.bytes <= max_bytes  # (the next in order passes straight through)
    assert got == list(range(1, len(got) + 1))  # in order, each once, nothing delivered twice
    assert rx.sack() == ranges_of(sorted(rx.buffer))
    assert all(s > rx.cum for s in rx.buffer)


def test_a_full_buffer_keeps_the_nearest_and_always_takes_the_next():
    rx = RecvStream(1, 1000, max_bytes=100)
    for s in range(50, 60):
        assert rx.offer(s, s, 10)
    assert not rx.offer(70, 70, 10)  # further ahead than everything held: refused
    assert rx.offer(5, 5, 10)  # nearer: the furthest one makes room
    assert 59 not in rx.buffer and 5 in rx.buffer and rx.bytes == 100
    assert rx.offer(1, 1, 500)  # the next in order is never refused
    assert [s for s, _ in rx.pop_ready()] == [1]
    assert rx.bytes == 100
    assert rx.missing() == [2, 4, 6, 49]


def test_already_delivered_and_duplicate_numbers_are_refused():
    rx = RecvStream(3)
    assert not rx.offer(2, "old")
    assert rx.offer(4, "b") and not rx.offer(4, "b again")
    assert rx.offer(3, "a")
    assert rx.pop_ready() == [(3, "a"), (4, "b")]
    assert not rx.offer(3, "a") and not rx.offer(4, "b")
    assert rx.skip_to(10) == 5 and rx.cum == 9 and not rx.offer(9, "x")


def test_skip_to_releases_bytes():
    rx = RecvStream(1, max_bytes=1000)
    for s in (2, 5, 9):
        rx.offer(s, s, 100)
    assert rx.skip_to(6) == 3
    assert rx.bytes == 100 and rx._order == [9] and rx.next == 6
