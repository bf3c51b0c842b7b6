"""Relay mode against a hostile member, a forger and a bad network (issue 7, relay part).

Each test acts as the attacker does, on the FakeNet, with the adversary from `adversary.py`; each
failed on main before its fix."""

from __future__ import annotations

import tracemalloc

import hypothesis.strategies as st
from hypothesis import HealthCheck, example, given, settings

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.cookies import SourceLimiter
from udproom.protocol.relay import Relay, RelayConfig, Stream

from .adversary import Adversary, Watched, ints, structs, texts
from .harness import RELAY, Room, T, client_addr, hello_datagram, session_by_hand


def _watch(room: Room) -> Watched:
    """Check every datagram the relay emits from now on (<= 1200 bytes) and count bytes per peer."""
    w = Watched(room.relay, RELAY)
    room.net.nodes[RELAY] = w
    return w


def _post_reaches_everyone(room: Room, sender: tuple, text: str, addrs: list[tuple]) -> None:
    room.net.call(sender, room.clients[sender].post, room.room, text)

    def missing() -> bool:
        return any(text not in [m[2] for m in room.messages(a)] for a in addrs)

    room.net.run_while(missing, room.net.now + 10)
    assert not missing(), "a post after the attack did not reach everyone"


def _dgram(frames: list[F.Frame]) -> bytes | None:
    """The frames as one datagram, dropping from the end what does not fit 1200 bytes."""
    while frames:
        data = F.encode(frames)
        if len(data) <= F.MAX_DATAGRAM:
            return data
        frames = frames[:-1]
    return None


# ----------------------------------------------------------------------------- 1. bounded events


def test_a_long_goodbye_or_part_reason_cannot_wedge_a_room():
    room = Room(2, seed=71)
    room.add_client(2, "e" * 24)
    room.wait_joined()
    w = _watch(room)
    evil = client_addr(2)
    token = room.relay.sessions[evil].token
    adv = Adversary(room.net, evil)  # the member's process is replaced by the attacker's
    cseq = room.relay.sessions[evil].next_cseq
    part = F.Req(cseq=cseq, op=F.OP_PART, room="lobby", text="\U0001f600" * 280)  # 1120 bytes of reason
    adv.forge(_dgram([F.Sid(token), part]), RELAY)
    adv.forge(_dgram([F.Sid(token), F.Req(cseq + 1, F.OP_JOIN, "lobby")]), RELAY, delay=0.01)
    adv.forge(_dgram([F.Sid(token), F.Bye("x" * 1180)]), RELAY, delay=0.02)
    room.settle(0.5)
    assert w.largest <= F.MAX_DATAGRAM
    honest = [client_addr(0), client_addr(1)]
    _post_reaches_everyone(room, client_addr(0), "still here", honest)
    left = room.events(client_addr(1), E.MemberLeft)
    assert left and all(len(e.reason.encode()) <= 200 for e in left)


_OPS = st.sampled_from(
    [
        F.OP_JOIN,
        F.OP_PART,
        F.OP_POST,
        F.OP_ACTION,
        F.OP_NICK,
        F.OP_TOPIC,
        F.OP_AWAY,
        F.OP_DIRECT,
        F.OP_NAMES,
        0,
    ]
)
_ROOMS = st.one_of(st.sampled_from(["lobby", "#lobby", "other", "n0", "N1", ""]), texts(200))
_REQS = st.tuples(_OPS, _ROOMS, texts(), ints()).map(lambda t: ("req", t))
_OTHER = st.one_of(
    structs(F.Bye),
    st.integers(1100, 1190).map(lambda n: F.Bye("x" * n)),  # goodbyes that only just fit
    structs(F.Ack),
    structs(F.Nack),
    structs(F.Ping),
    st.builds(F.Nack, st.just("lobby"), st.lists(ints(), max_size=8)),
).map(lambda f: ("frame", f))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.one_of(_REQS, _REQS, _OTHER), min_size=1, max_size=5), min_size=1, max_size=6))
@example([[("frame", F.Bye("x" * 1175))]])  # the goodbye that wedged a room before
@example([[("req", (F.OP_TOPIC, "lobby", "\u20ac" * 100, 0)), ("req", (F.OP_DIRECT, "x" * 1100, "y", 0))]])
def test_property_whatever_a_member_sends_datagrams_fit_and_the_room_lives_on(attack):
    room = Room(3, seed=72)
    room.wait_joined()
    w = _watch(room)
    evil = client_addr(2)
    session = room.relay.sessions[evil]
    token = session.token
    adv = Adversary(room.net, evil)
    cseq = session.next_cseq
    for i, items in enumerate(attack):
        frames: list[F.Frame] = [F.Sid(token)]
        for what, x in items:
            if what == "req":
                op, name, text, arg = x
                frames.append(F.Req(cseq=cseq, op=op, room=name, text=text, mid=cseq, arg=arg))
                cseq += 1
            else:
                frames.append(x)
        for data in F.pack(frames[1:], prefix=frames[0]):  # as many datagrams as it takes
            if len(data) <= F.MAX_DATAGRAM:
                adv.forge(data, RELAY, delay=0.003 * i)
    room.settle(0.6)
    assert w.largest <= F.MAX_DATAGRAM
    _post_reaches_everyone(room, client_addr(0), "after", [client_addr(0), client_addr(1)])


# ----------------------------------------------------------------------------- 2. repair budget


def test_a_nack_and_stale_request_flood_buys_a_bounded_repair_per_rtt():
    room = Room(2, seed=73)
    room.wait_joined()
    a = client_addr(0)
    for k in range(150):  # a room with plenty to repair: 150 events of ~400 bytes
        room.net.call(a, room.clients[a].post, "lobby", f"{k}:" + "x" * 400)
        if k % 10 == 9:
            room.settle(0.02)
    room.wait_settled()
    evil = client_addr(5)
    room.add_client(5, "evil", join=False)
    room.net.run_while(lambda: not room.clients[evil].connected, room.net.now + 5)
    session = room.relay.sessions[evil]
    token, join_cseq = session.token, session.next_cseq
    adv = Adversary(room.net, evil)  # joins, then never acks anything: it NACKs
    w = _watch(room)
    adv.forge(F.encode([F.Sid(token), F.Req(join_cseq, F.OP_JOIN, "lobby")]), RELAY)
    room.settle(0.01)
    nacks = _dgram([F.Sid(token)] + [F.Nack("lobby", [1, 10**6])] * 84)
    stale = _dgram([F.Sid(token)] + [F.Req(join_cseq, F.OP_JOIN, "lobby")] * 84)
    rejoin = _dgram([F.Sid(token)] + [F.Req(join_cseq - 1000, F.OP_JOIN, "lobby")] * 84)
    assert nacks and stale and rejoin and len(nacks) > 1000
    window = getattr(room.relay.config, "repair_window", 24_000)
    rtt = T.rto_min  # the repair budget's floor
    per_rtt: list[int] = []
    start = room.net.now
    for i in range(50):  # 50 round trips, a datagram every 2 ms
        before = w.bytes_out[evil]
        for j in range(10):
            adv.forge((nacks, stale, rejoin)[j % 3], RELAY, delay=0.002 * j)
        room.net.run_until(start + (i + 1) * rtt)
        per_rtt.append(w.bytes_out[evil] - before)
    assert max(per_rtt) <= 2 * window + F.MAX_DATAGRAM  # a full budget, plus one refill
    assert sum(per_rtt) <= (len(per_rtt) + 1) * window + F.MAX_DATAGRAM
    assert w.amplification(evil) < 3  # out/in: nothing like the 1,872x of before
    _post_reaches_everyone(room, a, "after the flood", [a, client_addr(1)])


# ----------------------------------------------------------------------------- 3. per-session Sid


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
    _post_reaches_everyone(room, a, "real", [a, victim])
    assert "forged" not in [m[2] for m in room.messages(victim)]
    assert [e.local_id for e in room.events(victim, E.PostAcknowledged)] == [lid]


# ----------------------------------------------------------------------------- 4. nicks per relay


def test_nicks_are_unique_per_relay_so_direct_messages_are_unambiguous():
    room = Room(0, seed=75)
    alice = room.add_client(0, "alice", join=False)  # in no room at all
    room.settle(0.3)
    room.add_client(1, "bob")
    room.settle(0.3)
    fake = room.add_client(2, "ALICE")  # the same nick, another case, no room shared with alice
    room.settle(0.3)
    (refused,) = room.events(client_addr(2), E.Refused)
    assert refused.reason == "nick ALICE is in use on this relay" and not fake.connected
    carol = room.add_client(3, "carol", join=False)
    room.settle(0.3)
    room.net.call(client_addr(3), carol.set_nick, "Alice")  # a /nick to it, also refused
    room.settle(0.3)
    assert room.events(client_addr(3), E.RequestRefused)[-1].reason == "nick Alice is in use on this relay"
    bob = room.clients[client_addr(1)]
    room.net.call(client_addr(1), bob.post, "@Alice", "for alice")
    room.net.run_while(lambda: not room.events(client_addr(1), E.PostAcknowledged), room.net.now + 5)
    got = [e for e in room.events(client_addr(0), E.MessageReceived) if e.text == "for alice"]
    assert len(got) == 1 and got[0].room == "@bob" and alice.nick == "alice"
    # the name is free again once its holder leaves
    room.net.call(client_addr(0), alice.close)
    room.settle(0.3)
    room.net.call(client_addr(3), carol.set_nick, "Alice")
    room.settle(0.3)
    assert carol.nick == "Alice"


# ----------------------------------------------------------------------------- 5. DMs across drops


def _dark(room: Room, addr: tuple, seconds: float) -> None:
    room.net.dark_links[addr] = [(room.net.now, room.net.now + seconds)]


def test_a_direct_message_to_someone_who_drops_arrives_once_when_they_come_back():
    room = Room(2, seed=76)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    _dark(room, b, 1.5)  # past the 0.6 s timeout: the relay ends b's session
    room.settle(0.05)
    room.net.call(a, room.clients[a].post, "@n1", "while you were away")
    room.settle(1.0)
    assert b not in room.relay.sessions or room.relay.sessions[b].token != room.clients[b]._token
    assert not room.events(a, E.PostAcknowledged)  # not delivered: not acknowledged
    room.net.run_while(lambda: not room.events(a, E.PostAcknowledged), room.net.now + 10)
    got = [e for e in room.events(b, E.MessageReceived) if e.text == "while you were away"]
    assert len(got) == 1 and got[0].room == "@n0"
    room.settle(2.0)  # nothing arrives twice later either
    assert len([e for e in room.events(b, E.MessageReceived) if e.text == "while you were away"]) == 1
    assert not room.events(a, E.PostFailed)


def test_a_direct_message_to_someone_who_never_comes_back_is_reported_failed():
    room = Room(2, seed=77)
    room.relay.config = RelayConfig(timing=T, inbox_keep=2.0)  # < the client's 5 s give-up
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    room.net.remove(b)  # its process dies without a word
    room.net.call(a, room.clients[a].post, "@n1", "into the void")
    room.net.run_while(lambda: not room.events(a, E.PostFailed), room.net.now + 10)
    (failed,) = room.events(a, E.PostFailed)
    assert failed.reason == "n1 did not come back to receive it"
    assert not room.events(a, E.PostAcknowledged)


# ----------------------------------------------------------------------------- 6. joins complete


def test_a_join_whose_answer_was_lost_long_ago_is_answered_afresh():
    relay = Relay(RelayConfig(timing=T))
    src = ("192.0.2.5", 4000)
    sid = F.Sid(session_by_hand(relay, src, "ann"))
    relay.receive_datagram(F.encode([sid, F.Req(1, F.OP_JOIN, "lobby")]), src, 1.0)
    relay.datagrams_to_send(1.0)  # the Joined is lost
    for cseq in range(2, 1200, 50):  # then more than 1,024 requests (posts) go through
        reqs = [F.Req(cseq=c, op=F.OP_POST, room="lobby", text="x", mid=c) for c in range(cseq, cseq + 50)]
        relay.receive_datagram(F.encode([sid, *reqs]), src, 1.0 + cseq / 1000)
        relay.datagrams_to_send(1.0 + cseq / 1000)
    relay.receive_datagram(F.encode([sid, F.Req(1, F.OP_JOIN, "lobby")]), src, 9.0)  # the retry
    frames = [f for d, _ in relay.datagrams_to_send(9.0) for f in F.decode(d)]
    (joined,) = [f for f in frames if isinstance(f, (F.Joined, F.Result))]
    assert isinstance(joined, F.Joined) and joined.room == "lobby" and joined.cseq == 1
    # and a client told RES_STALE for a join it never saw answered asks again, afresh
    c = ClientSession("ann", T)
    c.connect(RELAY, 0.0)
    c.datagrams_to_send(0.0)
    c.receive_datagram(
        F.encode_one(
            F.Welcome(
                version=F.VERSION,
                nick="ann",
                epoch=1,
                keepalive_ms=100,
                timeout_ms=600,
                token=5,
                nonce=c._nonce,
            )
        ),
        RELAY,
        0.0,
    )
    c.join("lobby", 0.0)
    (req,) = [f for d, _ in c.datagrams_to_send(0.0) for f in F.decode(d) if isinstance(f, F.Req)]
    c.receive_datagram(F.encode([F.Sid(5), F.Result(req.cseq, F.RES_STALE)]), RELAY, 0.1)
    again = [f for d, _ in c.datagrams_to_send(0.1) for f in F.decode(d) if isinstance(f, F.Req)]
    assert [(r.op, r.room) for r in again] == [(F.OP_JOIN, "lobby")] and again[0].cseq != req.cseq


# ----------------------------------------------------------------------------- 7. costs


def test_room_memory_is_counted_as_it_really_is():
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        room = Stream("lobby", 4096, 1 << 30)
        for k in range(2000):
            room.append(
                F.Ev(
                    kind=F.EV_MSG, nick=f"nick{k % 50}", text="hello " * (k % 20), ts=1.7e9 + k, mid=k * 7919
                ),
                float(k),
            )
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    real = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert 0.8 * real <= room.bytes <= 1.25 * real, (real, room.bytes)


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


# ----------------------------------------------------------------------------- 16. handshakes


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


def test_parked_direct_messages_are_bounded_and_their_senders_told_when_dropped():
    room = Room(4, seed=78)
    room.relay.config = RelayConfig(timing=T, max_parked=2)
    room.wait_joined()
    a = client_addr(0)
    for i in (1, 2, 3):  # three recipients drop with a DM each undelivered: only two are kept
        room.net.remove(client_addr(i))
        room.net.call(a, room.clients[a].post, f"@n{i}", f"to n{i}")
    room.net.run_while(lambda: set(room.relay.sessions) != {a}, room.net.now + 5)  # all timed out
    room.net.run_while(lambda: not room.events(a, E.PostFailed), room.net.now + 5)
    (failed,) = room.events(a, E.PostFailed)  # the oldest went, and its sender was told
    assert failed.room == "@n1" and failed.reason == "n1 did not come back to receive it"
    assert len(room.relay._parked) == 2 and not room.events(a, E.PostAcknowledged)


def test_a_room_does_not_keep_a_copy_of_its_member_list_per_member():
    room = Room(30, seed=79)
    room.wait_joined()
    room.settle(0.5)
    relay = room.relay
    assert sum(len(m.snapshot) for m in relay.rooms["lobby"].members.values()) == 0  # freed on ack
    # a names request after that still gets the whole list, afresh
    session = relay.sessions[client_addr(3)]
    req = F.Req(session.next_cseq, F.OP_NAMES, "lobby")
    relay.receive_datagram(F.encode([F.Sid(session.token), req]), client_addr(3), room.net.now)
    (joined,) = [
        f for d, _ in relay.datagrams_to_send(room.net.now) for f in F.decode(d) if type(f) is F.Joined
    ]
    assert joined.total == 30 and len(joined.members) == 30 and joined.members[-1].nick == "n3"
