"""Relay sessions and requests: request numbers across sessions, stalls, address changes, joins whose
answers were lost."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.relay import Relay, RelayConfig

from .harness import RELAY, HandRelay, Room, T, client_addr, session_by_hand


def test_an_old_request_that_never_gives_up_does_not_spin_the_timer():
    c = ClientSession("x", T)
    c.join("lobby", 0.0)
    relay = Relay(RelayConfig(timing=T))
    # connect by hand, then leave a topic change unanswered far past give_up
    c.connect(RELAY, 0.0)
    now = 0.0
    for _ in range(6):
        for data, _ in c.datagrams_to_send(now):
            relay.receive_datagram(data, ("10.9.9.9", 1), now)
        for data, _ in relay.datagrams_to_send(now):
            c.receive_datagram(data, RELAY, now)
    assert c.connected
    c.set_topic("lobby", "t", now)
    c.datagrams_to_send(now)  # sent, and lost
    later = now + T.give_up * 3
    c._last_heard = later  # the relay is alive (pongs), the request is just unanswered
    c.handle_timer(later)
    c.datagrams_to_send(later)
    assert c.get_timer() > later


def test_a_late_result_from_an_earlier_session_answers_nothing_now():
    room = Room(2, seed=36)
    room.wait_joined()
    a = client_addr(0)
    ca = room.clients[a]
    seen: list[bytes] = []
    orig = room.relay.datagrams_to_send

    def spy(now):
        out = orig(now)
        seen.extend(d for d, dst in out if dst == a)  # (sealed: among them, the post's Result)
        return out

    room.relay.datagrams_to_send = spy
    room.net.call(a, ca.post, "lobby", "first")
    room.settle(0.3)
    assert seen
    stale = list(seen)
    # a new session (the relay timed us out), then a post whose answer is lost
    t0 = room.net.now
    room.net.dark_links[a] = [(t0, t0 + 3 * T.timeout)]
    room.net.run_while(lambda: len(room.events(a, E.Connected)) < 2, t0 + 20)
    room.settle(0.5)
    acked = len(room.events(a, E.PostAcknowledged))
    ca.post("lobby", "second", room.net.now)  # queued, not yet sent
    ca.datagrams_to_send(room.net.now)  # sent into the void
    dropped = ca.stats["sealed_dropped"]
    for data in stale:
        ca.receive_datagram(data, RELAY, room.net.now)
    assert len(room.events(a, E.PostAcknowledged)) == acked
    assert ca.stats["sealed_dropped"] == dropped + len(stale)  # sealed under the old session's keys
    while (ev := ca.next_event()) is not None:
        assert not isinstance(ev, E.PostAcknowledged)


def test_a_client_whose_address_changes_comes_back_without_colliding_with_its_ghost():
    room = Room(2, seed=38)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    moved = ("10.0.7.7", 40000)
    # NAT rebinding: the same client, a new source address
    room.net.nodes[moved] = room.net.nodes.pop(a)
    room.net.events[moved] = room.net.events[a]
    room.clients[moved] = room.clients.pop(a)
    room.net.call(moved, room.clients[moved].post, "lobby", "after the move")
    room.net.run_while(lambda: not any(m[2] == "after the move" for m in room.messages(b)), room.net.now + 10)
    assert [m[2] for m in room.messages(b)] == ["after the move"]
    assert not room.events(moved, E.RequestRefused)
    assert moved in room.relay.sessions and a not in room.relay.sessions


def test_a_silent_relay_is_reported_as_stalled_before_the_timeout_and_resumed_after():
    room = Room(1, seed=42)
    room.wait_joined()
    a = client_addr(0)
    t0 = room.net.now
    room.net.dark_links[a] = [(t0, t0 + T.timeout * 0.8)]  # shorter than the timeout
    room.net.run_while(lambda: not room.events(a, E.ConnectionStalled), t0 + T.timeout)
    (stalled,) = room.events(a, E.ConnectionStalled)
    assert room.net.now < t0 + T.timeout and stalled.silent > T.keepalive
    room.net.run_while(lambda: not room.events(a, E.ConnectionResumed), t0 + 2 * T.timeout)
    assert room.events(a, E.ConnectionResumed)
    assert not room.events(a, E.ConnectionLost)  # the same session carried on
    # a quiet but healthy session never stalls
    before = len(room.events(a, E.ConnectionStalled))
    room.settle(10 * T.timeout)
    assert len(room.events(a, E.ConnectionStalled)) == before


def test_a_join_whose_answer_was_lost_long_ago_is_answered_afresh():
    relay = Relay(RelayConfig(timing=T))
    src = ("192.0.2.5", 4000)
    hand = session_by_hand(relay, src, "ann")
    hand.send([F.Req(1, F.OP_JOIN, "lobby")], 1.0)
    relay.datagrams_to_send(1.0)  # the Joined is lost
    for cseq in range(2, 1200, 50):  # then more than 1,024 requests (posts) go through
        reqs = [F.Req(cseq=c, op=F.OP_POST, room="lobby", text="x", mid=c) for c in range(cseq, cseq + 50)]
        hand.send(reqs, 1.0 + cseq / 1000)
        relay.datagrams_to_send(1.0 + cseq / 1000)
    hand.send([F.Req(1, F.OP_JOIN, "lobby")], 9.0)  # the retry
    frames = hand.frames(relay.datagrams_to_send(9.0))
    (joined,) = [f for f in frames if isinstance(f, (F.Joined, F.Result))]
    assert isinstance(joined, F.Joined) and joined.room == "lobby" and joined.cseq == 1
    # and a client told RES_STALE for a join it never saw answered asks again, afresh
    c = ClientSession("ann", T)
    c.connect(RELAY, 0.0)
    hand = HandRelay(c, 0.0, epoch=1, keepalive_ms=100, timeout_ms=600, token=5)
    c.join("lobby", 0.0)
    (req,) = [f for f in hand.frames(c.datagrams_to_send(0.0)) if isinstance(f, F.Req)]
    c.receive_datagram(hand.seal([F.Result(req.cseq, F.RES_STALE)]), RELAY, 0.1)
    again = [f for f in hand.frames(c.datagrams_to_send(0.1)) if isinstance(f, F.Req)]
    assert [(r.op, r.room) for r in again] == [(F.OP_JOIN, "lobby")] and again[0].cseq != req.cseq
