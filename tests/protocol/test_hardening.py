"""Forgery, resource bounds and the corners of reconnecting (found by review; each test failed
before its fix)."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.cookies import SourceLimiter
from udproom.protocol.relay import Relay, RelayConfig

from .fakenet import Impairment
from .harness import RELAY, Room, T, client_addr


def _hello(nick: str, cookie: bytes = b"", nonce: int = 99) -> bytes:
    return F.encode_one(F.padded_hello(version=F.VERSION, nick=nick, cookie=cookie, nonce=nonce))


def test_a_forged_hello_cannot_end_a_members_session():
    room = Room(2, seed=31)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    relay = room.relay
    token = relay.sessions[a].token
    relay.receive_datagram(_hello("n0"), a, room.net.now)  # no cookie, another nonce
    assert relay.sessions[a].token == token  # same session
    replies = relay.datagrams_to_send(room.net.now)
    assert [type(F.decode(d)[0]) for d, _ in replies] == [F.Retry]  # it only earns a Retry
    room.settle(0.5)
    assert not room.events(b, E.MemberLeft)


def test_a_reset_counts_only_with_the_sessions_token():
    room = Room(2, seed=32)
    room.wait_joined()
    b = client_addr(1)
    cb = room.clients[b]
    cb.receive_datagram(F.encode_one(F.Reset()), RELAY, room.net.now)
    cb.receive_datagram(F.encode_one(F.Reset(12345)), RELAY, room.net.now)
    assert cb.state == "connected" and not room.events(b, E.ConnectionLost)
    # a relay that lost the session answers with the token the client sent, and that one counts
    relay = Relay(RelayConfig(timing=T))
    relay.receive_datagram(F.encode([F.Sid(777), F.Ping(1)]), ("192.0.2.1", 1), 1.0)
    ((data, _),) = relay.datagrams_to_send(1.0)
    assert F.decode(data) == [F.Reset(777)]
    # without a Sid (a stranger's garbage) it says nothing at all
    relay.receive_datagram(F.encode_one(F.Ping(1)), ("192.0.2.2", 1), 1.0)
    assert relay.datagrams_to_send(1.0) == []


def test_joining_a_room_of_long_multibyte_nicks_fits_every_datagram():
    room = Room(0, seed=33, room="r" * 32)
    sizes: list[int] = []
    orig = room.relay.datagrams_to_send

    def spy(now):
        out = orig(now)
        sizes.extend(len(d) for d, _ in out)
        return out

    room.relay.datagrams_to_send = spy
    nicks = [chr(0x1F600 + i) * 24 for i in range(5)]  # the longest nicks: 24 x 4 bytes
    for i, nick in enumerate(nicks):
        c = room.add_client(i, nick, join=False)
        room.net.call(client_addr(i), c.set_away, "z" * 166)  # and long away messages
        room.net.call(client_addr(i), c.join, room.room)
        room.settle(0.3)
    room.wait_joined(limit=30)
    assert sizes and max(sizes) <= F.MAX_DATAGRAM
    last = room.clients[client_addr(len(nicks) - 1)]
    assert set(last.rooms["r" * 32].members) == set(nicks)


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


def test_a_flood_of_forged_sources_cannot_lock_out_real_clients():
    limiter = SourceLimiter(rate=20, cap=1000)
    for i in range(5000):
        limiter.allow(("198.51.100.1", i), 1.0)
    assert limiter.allow(("192.0.2.7", 5000), 1.0)  # a newcomer still gets in
    assert len(limiter.buckets) <= 1000


def test_a_nick_change_survives_a_reconnect():
    room = Room(2, seed=34)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    room.net.call(a, room.clients[a].set_nick, "alice")
    room.settle(0.3)
    assert room.clients[a].nick == "alice"
    t0 = room.net.now
    room.net.dark_links[a] = [(t0, t0 + 3 * T.timeout)]  # long enough to lose the session
    room.net.run_while(lambda: room.events(a, E.Connected)[-1:] == room.events(a, E.Connected)[:1], t0 + 20)
    room.settle(1.0)
    assert room.clients[a].nick == "alice"
    assert "alice" in room.clients[b].rooms["lobby"].members
    assert "n0" not in room.clients[b].rooms["lobby"].members


def test_a_joiners_backfill_is_acked_not_sent_twice_and_its_rtt_stays_sane():
    room = Room(1, seed=35, imp=Impairment(delay=0.002))
    room.wait_joined()
    a = client_addr(0)
    for k in range(60):
        room.net.call(a, room.clients[a].post, "lobby", f"m{k}")
    room.settle(1.0)
    before = room.relay.stats["retransmitted"]
    room.add_client(1, "late")
    room.net.run_while(lambda: not room.events(client_addr(1), E.RoomJoined), room.net.now + 5)
    room.settle(2.0)
    # the backfill (61 events before the join) went once
    assert room.relay.stats["retransmitted"] - before <= 62
    session = room.relay.sessions[client_addr(1)]
    assert session.rtt.srtt is None or session.rtt.srtt < 0.1


def test_a_late_result_from_an_earlier_session_answers_nothing_now():
    room = Room(2, seed=36)
    room.wait_joined()
    a = client_addr(0)
    ca = room.clients[a]
    seen: list[bytes] = []
    orig = room.relay.datagrams_to_send

    def spy(now):
        out = orig(now)
        seen.extend(d for d, dst in out if dst == a and any(isinstance(f, F.Result) for f in F.decode(d)))
        return out

    room.relay.datagrams_to_send = spy
    room.net.call(a, ca.post, "lobby", "first")
    room.settle(0.3)
    assert seen
    stale = seen[-1]
    # a new session (the relay timed us out), then a post whose answer is lost
    t0 = room.net.now
    room.net.dark_links[a] = [(t0, t0 + 3 * T.timeout)]
    room.net.run_while(lambda: len(room.events(a, E.Connected)) < 2, t0 + 20)
    room.settle(0.5)
    acked = len(room.events(a, E.PostAcknowledged))
    ca.post("lobby", "second", room.net.now)  # queued, not yet sent
    ca.datagrams_to_send(room.net.now)  # sent into the void
    ca.receive_datagram(stale, RELAY, room.net.now)
    assert len(room.events(a, E.PostAcknowledged)) == acked
    while (ev := ca.next_event()) is not None:
        assert not isinstance(ev, E.PostAcknowledged)


def test_rooms_keep_bounded_history_in_bytes_and_empty_rooms_expire():
    relay_cfg = RelayConfig(timing=T, ring_bytes=64 * 1024, empty_room_ttl=5.0)
    room = Room(1, seed=37)
    room.relay.config.ring_bytes = relay_cfg.ring_bytes
    room.relay.config.empty_room_ttl = relay_cfg.empty_room_ttl
    room.relay.rooms.clear()
    a = client_addr(0)
    ca = room.clients[a]
    ca.rooms.clear()
    room.net.call(a, ca.join, "big")
    room.net.run_while(lambda: "big" not in room.relay.rooms, room.net.now + 5)
    for _k in range(300):
        room.net.call(a, ca.post, "big", "x" * 1000)
    room.settle(2.0)
    stream = room.relay.rooms["big"]
    assert stream.seq > 250 and stream.bytes <= 64 * 1024 and len(stream.ring) < 70
    room.net.call(a, ca.part, "big")
    room.settle(T.timeout)
    assert "big" in room.relay.rooms  # history kept for a while after the last one leaves
    room.settle(6.0)
    assert "big" not in room.relay.rooms


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


def test_nicks_are_unique_regardless_of_case():
    room = Room(2, seed=39)
    room.wait_joined()
    _a, b = client_addr(0), client_addr(1)
    room.net.call(b, room.clients[b].set_nick, "N0")
    room.settle(0.3)
    refused = room.events(b, E.RequestRefused)
    assert refused and refused[-1].what == "nick"
    room.add_client(5, "N1")  # n1 is on the relay already: nicks are unique per relay
    room.settle(0.5)
    (refused,) = room.events(client_addr(5), E.Refused)
    assert refused.reason == "nick N1 is in use on this relay"


def test_saying_away_twice_tells_the_room_once():
    room = Room(2, seed=40)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    for _ in range(2):
        room.net.call(a, room.clients[a].set_away, "lunch")
    room.net.call(a, room.clients[a].set_away, "")
    room.net.call(a, room.clients[a].set_away, "")  # "back" when already back: nothing to say
    room.settle(0.5)
    assert [e.away for e in room.events(b, E.AwayChanged)] == ["lunch", ""]


def test_an_unanswered_handshake_is_reported_quickly_and_retried():
    room = Room(0, seed=41)
    room.net.remove(RELAY)  # nobody there
    c = room.add_client(0, "x", join=False)
    room.net.run_while(lambda: not room.events(client_addr(0), E.ConnectionLost), 5.0)
    (lost,) = room.events(client_addr(0), E.ConnectionLost)[:1]
    assert "no answer" in lost.reason
    assert room.net.now <= T.handshake + T.rto_max  # reported after the handshake timeout, not 20 s
    room.net.run_until(room.net.now + 2.0)
    assert len(room.events(client_addr(0), E.Connecting)) >= 2  # and it keeps trying
    assert c.state in ("handshake", "waiting")


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


def test_our_own_nick_change_is_our_nick_from_its_event_on():
    """The room's NickChanged can reach the app before the relay's Result: by then the session's
    nick must already be the new one (the app resynchronises its own nick from it)."""
    room = Room(2, seed=43)
    room.wait_joined()
    a = client_addr(0)
    ca = room.clients[a]
    ca.set_nick("zed", room.net.now)
    room.net.flush(a)
    seen_at_event = []
    orig = ca.next_event

    def spy():
        ev = orig()
        if isinstance(ev, E.NickChanged) and ev.new == "zed":
            seen_at_event.append(ca.nick)
        return ev

    ca.next_event = spy
    room.settle(0.5)
    assert seen_at_event == ["zed"]
