"""Exactly-once, same-order delivery over a hostile simulated network."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from udproom.protocol import events as E

from .fakenet import Impairment
from .harness import Room, T


def _blast(room: Room, per_client: int, gap: float = 0.004, start: int = 0) -> None:
    for k in range(start, start + per_client):
        for addr, c in room.clients.items():
            room.net.call(addr, c.post, room.room, f"{c.nick}:{k}")
        room.settle(gap)


def _check_invariants(room: Room, per_client: int) -> None:
    n = len(room.clients)
    logs = {a: room.messages(a) for a in room.clients}
    first = next(iter(logs.values()))
    assert len(first) == n * per_client
    # exactly once
    for log in logs.values():
        assert len({seq for seq, _, _ in log}) == len(log)
        assert len({text for _, _, text in log}) == len(log)
    # the same order everywhere
    for log in logs.values():
        assert log == first
    # each sender's own messages keep their order
    for c in room.clients.values():
        own = [int(text.split(":")[1]) for _, nick, text in first if nick == c.nick]
        assert own == list(range(per_client))
    # sequence numbers strictly increase in delivery order
    seqs = [seq for seq, _, _ in first]
    assert seqs == sorted(seqs)


def test_clean_network_delivers_everything_in_one_order():
    room = Room(3, seed=1)
    room.wait_joined()
    _blast(room, 30)
    room.wait_messages(90)
    _check_invariants(room, 30)
    for addr in room.clients:
        acks = room.events(addr, E.PostAcknowledged)
        assert len(acks) == 30


def test_loss_duplication_reordering_and_a_dark_link():
    imp = Impairment(loss=0.3, dup=0.1, delay=0.002, jitter=0.01, dark=[(0.6, 1.4)])
    room = Room(4, seed=7, imp=imp)
    room.wait_joined()
    _blast(room, 40)
    room.wait_messages(160)
    _check_invariants(room, 40)
    # every post was acknowledged exactly once to its sender, none failed
    room.wait_settled()
    for addr in room.clients:
        acks = room.events(addr, E.PostAcknowledged)
        assert sorted(a.local_id for a in acks) == sorted({a.local_id for a in acks})
        assert len(acks) == 40
        assert not room.events(addr, E.PostFailed)
    # the full room log (joins included) is identical from the point everyone was in
    logs = [room.room_log(a) for a in room.clients]
    last_join = max(seq for seq, kind, *_ in logs[0] if kind == "MemberJoined")
    tails = [[x for x in log if x[0] >= last_join] for log in logs]
    assert all(t == tails[0] for t in tails)
    assert room.relay.stats["retransmitted"] > 0  # the repair path really ran


def test_a_dark_period_longer_than_the_timeout_reconnects_without_loss_or_duplicates():
    t = T
    imp = Impairment(loss=0.1, delay=0.002, jitter=0.004)
    room = Room(3, seed=11, imp=imp)
    room.wait_joined()
    quiet = list(room.clients)[2]
    _blast(room, 5)
    # one client's link goes dark for 3x the member timeout while the others keep talking
    start = room.net.now
    room.net.dark_links[quiet] = [(start, start + 3 * t.timeout)]
    _blast(room, 10, start=5)
    room.wait_messages(45, addrs=list(room.clients)[:2])
    room.net.run_while(lambda: len(room.messages(quiet)) < 45, room.net.now + 60)
    msgs = room.messages(quiet)
    texts = [m[2] for m in msgs]
    assert len(texts) == len(set(texts)) == 45  # nothing lost, nothing twice
    kinds = [type(e).__name__ for e in room.net.events[quiet]]
    assert "ConnectionLost" in kinds
    # the others saw it time out (it was silent past the timeout)
    others = next(iter(room.clients))
    assert any(
        isinstance(e, E.MemberTimedOut) and e.nick == room.clients[quiet].nick
        for e in room.net.events[others]
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    clients=st.integers(2, 4),
    per_client=st.integers(1, 12),
    loss=st.floats(0, 0.4),
    dup=st.floats(0, 0.2),
    jitter=st.floats(0, 0.02),
)
def test_property_every_log_is_the_same_gap_free_duplicate_free_prefix(
    seed, clients, per_client, loss, dup, jitter
):
    room = Room(clients, seed=seed, imp=Impairment(loss=loss, dup=dup, delay=0.001, jitter=jitter))
    room.wait_joined(limit=60)
    _blast(room, per_client, gap=0.002)
    room.wait_messages(clients * per_client, limit=300)
    _check_invariants(room, per_client)
    # gap-free: each client's sequenced log from its first event has no holes
    for addr in room.clients:
        seqs = [x[0] for x in room.room_log(addr)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
