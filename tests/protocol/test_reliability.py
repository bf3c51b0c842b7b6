"""Unit tests of the reliability primitives (protocol/reliability.py): RFC 6298 timers, range
lists from hostile peers, exactly-once in-order delivery, duplicate suppression and the rate and
repair budgets."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udproom.protocol.reliability import (
    AckScheduler,
    DedupeWindow,
    RecvStream,
    RepairBudget,
    RttEstimator,
    SendWindow,
    Timing,
    TokenBucket,
    iter_ranges,
    ranges_of,
)

from .adversary import EXTREME_INTS

RFC = Timing(rto_initial=1.0, rto_min=1.0, rto_max=60.0)  # RFC 6298's own bounds


# --------------------------------------------------------------------------- RttEstimator


def test_rtt_estimator_follows_rfc_6298():
    est = RttEstimator(RFC)
    assert est.srtt is None and est.rttvar == 0.0 and est.rto == 1.0 and est.pace == 1.0  # (2.1)
    est.sample(0.5)  # (2.2) first measurement: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4*RTTVAR
    assert est.srtt == 0.5 and est.rttvar == 0.25 and est.rto == pytest.approx(1.5)
    est.sample(0.9)  # (2.3) RTTVAR with the *old* SRTT, then SRTT; beta 1/4, alpha 1/8
    assert est.rttvar == pytest.approx(0.75 * 0.25 + 0.25 * abs(0.5 - 0.9))
    assert est.srtt == pytest.approx(0.875 * 0.5 + 0.125 * 0.9)
    assert est.rto == pytest.approx(0.55 + 4 * 0.2875)
    assert est.pace == est.srtt


def test_rto_is_clamped_and_backs_off_exponentially():
    t = Timing(rto_initial=0.5, rto_min=0.1, rto_max=4.0)
    est = RttEstimator(t)
    for _ in range(50):
        est.sample(0.0001)  # a LAN: the variance term shrinks, the floor holds
    assert est.rto == 0.1
    assert [est.backoff(k) for k in (0, 1, 2, 3, 4)] == pytest.approx([0.1, 0.1, 0.2, 0.4, 0.8])
    assert est.backoff(60) == 4.0  # capped, no overflow
    est.sample(100.0)
    assert est.rto == 4.0
    # the variance term never vanishes: a constant RTT keeps RTO above it
    est = RttEstimator(Timing(rto_initial=0.5, rto_min=0.0, rto_max=4.0))
    for _ in range(200):
        est.sample(0.2)
    assert est.rto == pytest.approx(0.201)


def test_a_zero_rtt_is_a_sample():
    est = RttEstimator(Timing(rto_initial=0.5, rto_min=0.0, rto_max=4.0))
    est.sample(0.0)  # a loopback round trip within the clock's resolution
    assert est.srtt == 0.0 and est.rto == 0.001


@pytest.mark.parametrize("bad", [-1.0, -1e-9, math.nan, math.inf, -math.inf])
def test_rtt_estimator_ignores_impossible_samples(bad):
    est = RttEstimator(RFC)
    est.sample(0.5)
    before = (est.srtt, est.rttvar, est.rto)
    est.sample(bad)
    assert (est.srtt, est.rttvar, est.rto) == before


# --------------------------------------------------------------------------- ranges


def test_ranges_of_runs_and_limit():
    assert ranges_of([]) == []
    assert ranges_of([5]) == [5, 5]
    assert ranges_of([1, 2, 3, 7, 9, 10]) == [1, 3, 7, 7, 9, 10]
    assert ranges_of(range(0, 40, 2), limit=3) == [0, 0, 2, 2, 4, 4]
    assert ranges_of([1, 2, 4, 5, 6], limit=2) == [1, 2, 4, 6]  # the last run still grows
    assert ranges_of([1, 3, 4], limit=1) == [1, 1]
    assert len(ranges_of(range(0, 200, 2))) == 2 * 16  # the default: 16 runs fit any frame


@given(st.sets(st.integers(-50, 300), max_size=80), st.integers(1, 20))
def test_ranges_round_trip(seqs, limit):
    flat = ranges_of(sorted(seqs), limit)
    assert len(flat) <= 2 * limit and len(flat) % 2 == 0
    got = list(iter_ranges(flat))
    assert got == sorted(got) and set(got) <= seqs
    runs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    assert all(lo <= hi for lo, hi in runs)
    assert all(runs[i][1] + 1 < runs[i + 1][0] for i in range(len(runs) - 1))  # maximal runs
    if len(runs) < limit:
        assert set(got) == seqs


def test_iter_ranges_bounds_hostile_input():
    assert list(iter_ranges([5, 3])) == []  # reversed
    assert list(iter_ranges([5, 3, 7, 8])) == [7, 8]  # a reversed pair is skipped, not the end
    assert sum(1 for _ in iter_ranges([0, 10**9])) == 4096  # the default cap
    assert list(iter_ranges([1, 2, 9])) == [1, 2]  # odd length: the dangling bound is ignored
    assert list(iter_ranges([0, 2**64], cap=5)) == [0, 1, 2, 3, 4]
    assert list(iter_ranges([-(2**63), 2**63], cap=3)) == [-(2**63), -(2**63) + 1, -(2**63) + 2]
    assert list(iter_ranges([1, 3, 10, 20], cap=5)) == [1, 2, 3, 10, 11]  # cap spans ranges
    assert list(iter_ranges([1, 1, 1, 1, 1, 1], cap=2)) == [1, 1]
    assert list(iter_ranges([7, 7], cap=1)) == [7]
    assert list(iter_ranges([1, 5], cap=0)) == []


@given(st.lists(st.sampled_from(EXTREME_INTS) | st.integers(), max_size=40), st.integers(0, 300))
def test_iter_ranges_never_yields_more_than_cap_or_outside_a_range(flat, cap):
    got = []
    for s in iter_ranges(flat, cap):
        got.append(s)
        assert len(got) <= cap
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
    assert all(any(lo <= s <= hi for lo, hi in pairs) for s in got)


# --------------------------------------------------------------------------- RecvStream


def test_recv_stream_delivers_in_order_once():
    rx = RecvStream(first=1)
    assert rx.offer(2, "b") and rx.offer(3, "c")
    assert rx.pop_ready() == [] and rx.has_gap() and rx.missing() == [1, 1]
    assert rx.sack() == [2, 3] and rx.highest == 3 and rx.cum == 0
    assert not rx.offer(2, "b again")  # duplicate while buffered
    assert rx.offer(1, "a")
    assert rx.pop_ready() == [(1, "a"), (2, "b"), (3, "c")]
    assert rx.cum == 3 and not rx.has_gap() and rx.missing() == [] and rx.sack() == []
    for seq in (1, 2, 3, 0, -5):  # already delivered (or before the start): refused, not redelivered
        assert not rx.offer(seq, "again")
    assert rx.pop_ready() == []
    assert rx.unacked == 3


def test_recv_stream_bounds_and_holes():
    rx = RecvStream(first=10, max_buffer=4)
    assert not rx.offer(14, "too far") and rx.offer(13, "d")
    assert not rx.offer(2**64, "hostile") and not rx.offer(-(2**63), "hostile")
    assert rx.offer(11, "b")
    assert rx.missing() == [10, 10, 12, 12]
    many = RecvStream(first=1)
    for s in range(2, 200, 2):
        many.offer(s, s)
    assert many.missing(limit=3) == [1, 1, 3, 3, 5, 5]
    assert len(many.missing()) == 2 * 16
    default = RecvStream()
    assert default.next == 1 and default.highest == 0 and default.cum == 0
    assert not default.offer(8193, "x") and default.offer(8192, "x")  # 8192 ahead at most


def test_recv_stream_skip_to():
    rx = RecvStream(first=1)
    rx.offer(3, "c")
    rx.offer(7, "g")
    assert rx.skip_to(5) == 3  # 1, 2 and 4 given up; 3 was here and is dropped without counting
    assert rx.next == 5 and 3 not in rx.buffer and rx.cum == 4
    assert rx.skip_to(4) == 0 and rx.skip_to(5) == 0
    assert not rx.offer(4, "late")
    rx.offer(5, "e")
    rx.offer(6, "f")
    assert rx.pop_ready() == [(5, "e"), (6, "f"), (7, "g")]
    fresh = RecvStream(first=1)
    assert fresh.skip_to(100) == 99 and fresh.highest == 99
    # what is buffered at the new start is kept and delivered
    rx = RecvStream(first=1)
    rx.offer(5, "e")
    rx.offer(7, "g")
    assert rx.skip_to(5) == 4 and rx.highest == 7
    assert rx.pop_ready() == [(5, "e")]
    assert rx.skip_to(7) == 1 and rx.highest == 7 and rx.pop_ready() == [(7, "g")]
    one = RecvStream(first=1)
    assert one.skip_to(2) == 1 and one.highest == 1


@given(st.lists(st.integers(-3, 40), max_size=200), st.integers(1, 3))
def test_recv_stream_exactly_once_in_order_whatever_arrives(arrivals, first):
    rx = RecvStream(first=first, max_buffer=16)
    delivered: list[int] = []
    for seq in arrivals:
        expect = rx.next <= seq < rx.next + 16 and seq not in rx.buffer
        assert rx.offer(seq, seq) == expect
        delivered.extend(s for s, _item in rx.pop_ready())
    assert delivered == list(range(first, first + len(delivered)))  # in order, each once
    assert rx.cum == first + len(delivered) - 1


# --------------------------------------------------------------------------- DedupeWindow


def test_dedupe_window_remembers_the_last_n():
    big = DedupeWindow()
    for k in range(4097):
        big.add(k)
    assert 0 not in big and 1 in big  # the default remembers 4096
    w = DedupeWindow(size=3)
    for k in (1, 2, 3):
        w.add(k, k * 10)
    assert 1 in w and w.get(1) == 10
    w.add(1, 99)  # already there: neither refreshed nor overwritten
    assert w.get(1) == 10
    w.add(4, 40)  # the oldest (1) goes
    assert 1 not in w and w.get(1) is None
    assert all(k in w for k in (2, 3, 4))
    w.add(5)
    assert 2 not in w and w.get(5) == 0


@given(st.lists(st.integers(0, 50), max_size=300), st.integers(1, 20))
def test_dedupe_window_is_bounded(keys, size):
    w = DedupeWindow(size=size)
    model: list[int] = []
    for k in keys:
        if k not in model:
            model.append(k)
            if len(model) > size:
                model.pop(0)
        w.add(k)
    assert all(k in w for k in model)
    assert not [k for k in keys if k in w and k not in model]


# --------------------------------------------------------------------------- TokenBucket


def test_token_bucket_rate_and_burst():
    b = TokenBucket(rate=2.0, burst=3.0, now=100.0)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(100.4)  # 0.8 tokens
    assert b.take(100.5)  # 1.0
    assert not b.take(100.5)
    assert b.take(1000.0, 3.0) and not b.take(1000.0)  # refilled to the burst, not beyond
    assert not b.take(999.0)  # time going backwards adds nothing
    assert b.tokens == 0.0 and b.stamp == 1000.0
    assert not b.take(1000.0, 0.5) and b.take(1000.25, 0.5)


# --------------------------------------------------------------------------- RepairBudget


def test_repair_budget_refills_a_window_per_round_trip():
    r = RepairBudget(window=1000, floor=0.05, now=0.0)
    assert r.available(0.0, 0.1) == 1000.0
    assert r.take(600, 0.0, 0.1) and r.take(600, 0.0, 0.1)  # may go negative by one datagram
    assert r.tokens == -200.0
    assert not r.take(1, 0.0, 0.1)
    exact = RepairBudget(window=1000, floor=0.05, now=0.0)
    assert exact.take(999, 0.0, 0.1) and exact.take(5, 0.0, 0.1)  # one byte left is still some
    spent = RepairBudget(window=1000, floor=0.05, now=0.0)
    assert spent.take(1000, 0.0, 0.1) and not spent.take(1, 0.0, 0.1)  # nothing left is none
    assert r.available(0.05, 0.1) == pytest.approx(300.0)  # half an RTT refills half a window
    assert r.available(10.0, 0.1) == 1000.0  # never more than one window
    # a forged tiny RTT cannot speed the refill up: the floor holds
    r = RepairBudget(window=1000, floor=0.05, now=0.0)
    r.take(1000, 0.0, 0.001)
    assert r.available(0.025, 0.001) == pytest.approx(500.0)
    assert r.available(0.025, math.nan) == pytest.approx(500.0)
    assert r.available(0.0, 0.1) == pytest.approx(500.0)  # time going backwards adds nothing


@given(st.lists(st.tuples(st.floats(0, 0.05), st.integers(1, 1200)), min_size=1, max_size=300))
def test_repair_budget_bounds_bytes_per_round_trip(steps):
    window, rtt = 4000, 0.1
    r = RepairBudget(window=window, floor=0.02, now=0.0)
    now, sent = 0.0, 0.0
    for dt, nbytes in steps:
        now += dt
        if r.take(nbytes, now, rtt):
            sent += nbytes
    # a window at the start, one per RTT after, plus at most one datagram of overdraft
    assert sent <= window + now / rtt * window + 1200


# --------------------------------------------------------------------------- send window, acks


def test_send_window_acks_sacks_and_resends_only_what_is_missing():
    t = Timing.fast()
    w = SendWindow(base=5)
    assert w.acked == 4 and w.last_retx == 4
    assert not w.on_ack(3, top=10)  # behind the ack point: nothing moves
    assert w.on_ack(99, top=7)  # clipped to what was sent
    assert w.acked == 7
    assert w.on_sack([9, 9, 20, 30], top=10) == [9]  # beyond top: never counted as arrived
    assert w.on_sack([9, 9], top=10) == []  # said twice: new only once
    assert w.nacked([1, 12], top=10) == [8, 10]  # acked and SACKed sequences are not resent
    assert w.unacked(top=10) == [8, 10]
    assert w.unacked(top=10, first=10) == [10]  # older ones are no longer kept
    rtt = RttEstimator(t)
    w.probe(1.0, rtt)
    w.probe(2.0, rtt)
    assert w.attempts == 2 and w.probe_at == 2.0 + rtt.backoff(2)
    w.resent(10)
    w.resent(9)
    assert w.last_retx == 10
    assert w.on_ack(9, top=10) and w.attempts == 0 and w.sacked == set()
    w.skip_to(12)
    assert (w.base, w.acked) == (12, 11)


@given(st.lists(st.integers(-(1 << 63), 1 << 63), max_size=40), st.integers(0, 1 << 40))
def test_send_window_never_counts_what_was_not_sent(ranges, top):
    w = SendWindow(base=1)
    w.on_ack(top // 2, top)
    new = w.on_sack(ranges, top)
    assert all(w.acked < s <= top for s in new) and len(w.sacked) <= 1024
    assert all(w.acked < s <= top for s in w.nacked(ranges, top))
    assert len(w.nacked(ranges, top)) <= 512


def test_ack_scheduler_delays_coalesces_and_paces_nacks():
    acks = AckScheduler(delay=0.01, every=3)
    rx = RecvStream()
    assert not acks.due(0.0) and acks.next_at(0.0) is None
    rx.offer(1, "a")
    rx.pop_ready()
    acks.want("lobby", rx, 0.0, urgent=False)
    assert not acks.due(0.005) and acks.due(0.01)  # delayed ...
    acks.want("", rx, 0.002, urgent=False)
    assert acks.next_at(0.003) == 0.01  # ... and coalesced
    out = {name: (cum, sack, nack) for name, cum, sack, nack in acks.take(0.01, 1.0, lambda n: (rx, 0))}
    assert out == {"lobby": (1, [], []), "": (1, [], [])}
    assert not acks.due(1.0)
    rx.offer(4, "d")  # a hole: 2-3
    acks.want("lobby", rx, 0.02, urgent=rx.has_gap())
    assert acks.due(0.02)  # a gap is acked at once
    ((_, cum, sack, nack),) = acks.take(0.02, 1.0, lambda n: (rx, 6))
    assert (cum, sack, nack) == (1, [4, 4], [2, 3, 5, 6])  # the hole, and the announced tail
    acks.want("lobby", rx, 0.5, urgent=True)
    ((_, _, _, nack),) = acks.take(0.5, 1.0, lambda n: (rx, 6))
    assert nack == []  # one NACK per stream per `pace`
    for s in (5, 6, 7):
        rx.offer(s, s)
    acks.want("lobby", rx, 0.6, urgent=False)
    assert acks.due(0.6)  # `every` unacked items: at once


def test_offer_run_counts_like_offering_each():
    a, b = RecvStream(), RecvStream()
    runs = [(1, 3), (2, 3), (8, 2), (6, 2), (4, 2), (4, 9)]
    for seq, n in runs:
        new_a = a.offer_run(seq, n)
        new_b = sum(1 for s in range(seq, seq + n) if b.offer(s, None))
        b.pop_ready()
        assert new_a == new_b
        assert (a.cum, a.sack(), a.missing()) == (b.cum, b.sack(), b.missing())
    assert a.cum == 12 and not a.has_gap()


def test_deadlines_pop_only_what_is_due_at_its_earliest_time():
    from udproom.protocol.reliability import Deadlines  # (new with this test)

    d = Deadlines()
    a, b, c = object(), object(), object()
    d.schedule(a, 5.0)
    d.schedule(b, 3.0)
    d.schedule(a, 2.0)  # earlier wins
    d.schedule(b, 9.0)  # later does not replace an earlier entry
    d.schedule(c, 1.0)
    d.cancel(c)
    assert d.next_at() == 2.0 and len(d) == 2
    assert d.pop_due(2.5) == [a]
    assert d.pop_due(2.9) == [] and d.next_at() == 3.0
    assert d.pop_due(100.0) == [b] and d.next_at() is None
    d.schedule(a, 7.0)  # after popping, an item can be scheduled again
    assert d.pop_due(7.0) == [a]


# --------------------------------------------------------------------------- RecvStream, byte-bounded


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
