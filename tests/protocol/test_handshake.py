"""The stateless handshake of relay and peer: cookies, padded Hellos, the 3x amplification limit, per-
source limits, tokens that a forger cannot know."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.cookies import SourceLimiter
from udproom.protocol.relay import Relay, RelayConfig

from .adversary import Adversary
from .harness import RELAY, Room, T, client_addr, hello_datagram, post_reaches_everyone


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


def test_a_flood_of_forged_sources_cannot_lock_out_real_clients():
    limiter = SourceLimiter(rate=20, cap=1000)
    for i in range(5000):
        limiter.allow(("198.51.100.1", i), 1.0)
    assert limiter.allow(("192.0.2.7", 5000), 1.0)  # a newcomer still gets in
    assert len(limiter.buckets) <= 1000


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


def test_only_padded_hellos_are_answered_and_limits_are_per_source_address():
    relay = Relay(RelayConfig(timing=T))
    short = F.encode_one(
        F.Hello(version=F.VERSION, nick="x", cookie=b"", pad=b"\0" * 300, nonce=1)
    )  # padded, but not enough
    relay.receive_datagram(short, ("192.0.2.1", 1), 1.0)
    assert relay.datagrams_to_send(1.0) == [] and relay.stats["unpadded"] == 1
    relay.receive_datagram(hello_datagram(), ("192.0.2.1", 1), 1.0)
    ((retry, _),) = relay.datagrams_to_send(1.0)
    assert len(retry) <= len(hello_datagram())
    limiter = SourceLimiter(rate=5)
    assert sum(limiter.allow(("192.0.2.9", port), 1.0) for port in range(100)) == 5  # ports: one source
    assert sum(limiter.allow((f"2001:db8:0:1::{i:x}", 9), 1.0) for i in range(100)) == 5  # one /64
    assert limiter.allow(("2001:db8:0:2::1", 9), 1.0) and limiter.allow(("192.0.2.10", 1), 1.0)


def test_a_member_who_knows_the_epoch_cannot_forge_the_relay_to_another_member():
    room = Room(3, seed=74)
    room.wait_joined()
    a, victim, evil = client_addr(0), client_addr(1), client_addr(2)
    cv = room.clients[victim]
    epoch, evil_token = room.clients[evil].epoch, room.clients[evil]._token
    adv = Adversary(room.net, client_addr(9))
    lid = room.net.call(victim, cv.post, "lobby", "mine")  # in flight: a forged Result could fail it
    (cseq,) = list(cv._inflight)
    nxt = cv.rooms["lobby"].rx.next
    for sid in (F.Sid(epoch), F.Sid(evil_token)):
        adv.forge(F.encode([sid, F.Gone("lobby", 10**6), F.Gone("", 10**6)]), victim, src=RELAY)
        adv.forge(F.encode([sid, F.Batch("lobby", nxt, [F.Ev(F.EV_MSG, "n0", "forged")])]), victim, RELAY)
        adv.forge(
            F.encode([sid, F.Result(cseq=cseq, code=F.RES_REFUSED, seq=0, reason="forged")]),
            victim,
            src=RELAY,
        )
        adv.forge(F.encode([sid, F.Bye("forged")]), victim, src=RELAY)
    room.settle(0.3)
    assert cv.stats["unauthenticated"] == 8 and cv.connected
    assert not room.events(victim, E.Notice) and not room.events(victim, E.PostFailed)
    assert not room.events(victim, E.ConnectionLost)
    post_reaches_everyone(room, a, "real", [a, victim])
    assert "forged" not in [m[2] for m in room.messages(victim)]
    assert [e.local_id for e in room.events(victim, E.PostAcknowledged)] == [lid]
