"""Relay and client behaviour beyond plain delivery: handshake, presence, rooms, nicks, history."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.relay import Relay, RelayConfig

from .fakenet import Impairment
from .harness import RELAY, HandClient, Room, T, client_addr, hello_datagram, session_by_hand

SRC = ("192.0.2.9", 4444)


def test_handshake_is_stateless_until_the_cookie_comes_back():
    relay = Relay(RelayConfig(timing=T))
    data = hello_datagram()
    relay.receive_datagram(data, SRC, 1.0)
    out = relay.datagrams_to_send(1.0)
    assert len(out) == 1 and not relay.sessions and not relay._pending  # no state for an unproven address
    ((reply, addr),) = out
    assert addr == SRC and len(reply) <= 3 * len(data)
    retry = F.decode(reply)[0]
    assert isinstance(retry, F.Retry)
    # the cookie is bound to the address: from elsewhere it only earns another Retry
    relay.receive_datagram(hello_datagram(retry.cookie), ("192.0.2.10", 4444), 1.1)
    assert not relay.sessions and not relay._pending
    relay.receive_datagram(hello_datagram(retry.cookie), SRC, 1.2)
    (welcome,) = F.decode(relay.datagrams_to_send(1.2)[-1][0])
    assert isinstance(welcome, F.Welcome) and welcome.version == F.VERSION and welcome.kx
    # echoes our nonce; says nothing in the clear (nick, token, epoch travel sealed)
    assert welcome.nonce == 7 and (welcome.nick, welcome.token, welcome.epoch) == ("", 0, 0)
    assert SRC in relay._pending and not relay.sessions  # a session only once the Login comes
    hand = HandClient(relay, SRC, "ann", 1.3, nonce=8)
    assert SRC in relay.sessions and hand.token and hand.logged_in.nick == "ann"


def test_a_handshake_that_never_logs_in_is_forgotten_and_counts_against_max_sessions():
    relay = Relay(RelayConfig(timing=T, max_sessions=1, pending_timeout=2.0))
    relay.receive_datagram(hello_datagram(), SRC, 1.0)
    cookie = F.decode(relay.datagrams_to_send(1.0)[0][0])[0].cookie
    relay.receive_datagram(hello_datagram(cookie), SRC, 1.0)
    relay.datagrams_to_send(1.0)
    assert SRC in relay._pending
    other = ("192.0.2.20", 1)
    relay.receive_datagram(hello_datagram(), other, 1.1)
    cookie = F.decode(relay.datagrams_to_send(1.1)[0][0])[0].cookie
    relay.receive_datagram(hello_datagram(cookie), other, 1.1)
    (refuse,) = F.decode(relay.datagrams_to_send(1.1)[0][0])
    assert isinstance(refuse, F.Refuse) and "full" in refuse.reason
    now = 1.1
    while now < 5.0 and relay._pending:
        now += 0.1
        if (t := relay.get_timer()) is not None and t <= now:
            relay.handle_timer(now)
    assert not relay._pending and relay.stats["pending_timed_out"] == 1
    session_by_hand(relay, other, "bob", now)  # room again
    assert other in relay.sessions


def test_datagrams_not_sealed_under_the_session_are_dropped():
    room = Room(2, seed=13)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    relay = room.relay
    # an off-path attacker forges a's address: a post, a nick change and a goodbye, in the clear
    forged = F.encode([F.Req(cseq=50, op=F.OP_POST, room="lobby", text="forged", mid=1), F.Bye("forged")])
    relay.receive_datagram(forged, a, room.net.now)
    relay.receive_datagram(F.encode([F.Sid(12345), F.Bye("forged")]), a, room.net.now)
    assert relay.stats["unauthenticated"] == 2 and a in relay.sessions
    # and sealed under keys it made up
    fake = HandClient(Relay(RelayConfig(timing=T)), a, "mallory", room.net.now)
    relay.receive_datagram(fake.seal([F.Bye("forged")]), a, room.net.now)
    assert relay.stats["sealed_dropped"] == 1 and a in relay.sessions
    # and forges the relay's address towards b: an event and a Gone, in the clear and sealed
    cb = room.clients[b]
    cb.receive_datagram(
        F.encode([F.Batch("lobby", 99, [F.Ev(F.EV_MSG, "x", "forged")]), F.Gone("lobby", 10**6)]),
        RELAY,
        room.net.now,
    )
    cb.receive_datagram(F.encode([F.Sid(relay.epoch + 1), F.Gone("lobby", 10**6)]), RELAY, room.net.now)
    assert cb.stats["unauthenticated"] == 2
    cb.receive_datagram(fake.seal([F.Gone("lobby", 10**6)]), RELAY, room.net.now)
    assert cb.stats["sealed_dropped"] == 1
    room.net.call(a, room.clients[a].post, "lobby", "real")
    room.net.run_while(lambda: not room.messages(b), room.net.now + 5)
    assert [m[2] for m in room.messages(b)] == ["real"]


def test_unvalidated_sources_never_get_more_than_three_times_what_they_sent():
    relay = Relay(RelayConfig(timing=T))
    for _size_hint, frames in [(False, hello_datagram(pad=False)), (False, F.encode_one(F.Ping(1)))]:
        relay.receive_datagram(frames, SRC, 2.0)
        for reply, _ in relay.datagrams_to_send(2.0):
            assert len(reply) <= 3 * len(frames)
    # a tiny unpadded Hello cannot buy a Retry (the cookie alone is bigger than 3x)
    tiny = F.encode_one(F.Hello(F.VERSION, "x"))
    relay.receive_datagram(tiny, ("192.0.2.77", 1), 3.0)
    assert all(len(r) <= 3 * len(tiny) for r, _ in relay.datagrams_to_send(3.0))


def test_an_unknown_version_is_refused_cleanly():
    relay = Relay(RelayConfig(timing=T))
    relay.receive_datagram(hello_datagram(version=99), SRC, 1.0)
    cookie = F.decode(relay.datagrams_to_send(1.0)[0][0])[0].cookie
    relay.receive_datagram(hello_datagram(cookie, version=99), SRC, 1.0)
    refuse = F.decode(relay.datagrams_to_send(1.0)[0][0])[0]
    assert isinstance(refuse, F.Refuse) and "version" in refuse.reason and refuse.versions == [2]


def test_a_protocol_1_hello_is_refused_with_the_upgrade_message():
    relay = Relay(RelayConfig(timing=T))
    old = F.encode_one(F.padded_hello(version=1, nick="ann", nonce=7))  # as protocol 1 sent it
    relay.receive_datagram(old, SRC, 1.0)
    cookie = F.decode(relay.datagrams_to_send(1.0)[0][0])[0].cookie
    relay.receive_datagram(
        F.encode_one(F.padded_hello(version=1, nick="ann", cookie=cookie, nonce=7)), SRC, 1.0
    )
    ((data, _),) = relay.datagrams_to_send(1.0)
    (refuse,) = F.decode(data)
    assert refuse == F.Refuse("this relay speaks protocol 2 (encrypted); upgrade udproom", [2], 7)
    assert not relay.sessions and not relay._pending
    assert not relay.sessions


def test_client_reports_refusal():
    room = Room(0)
    c = ClientSession("ok", T)
    room.net.add(client_addr(1), c)
    relay = room.relay
    relay.config.max_sessions = 0
    room.net.call(client_addr(1), c.connect, RELAY)
    room.settle(1.0)
    refused = room.events(client_addr(1), E.Refused)
    assert refused and "full" in refused[0].reason


def test_a_member_that_vanishes_is_announced_within_the_timeout():
    room = Room(3, seed=3)
    room.wait_joined()
    gone = client_addr(2)
    t0 = room.net.now
    room.net.remove(gone)
    watcher = client_addr(0)
    room.net.run_while(lambda: not room.events(watcher, E.MemberTimedOut), t0 + 5 * T.timeout)
    (ev,) = room.events(watcher, E.MemberTimedOut)
    assert ev.nick == "n2"
    # announced within the timeout plus one presence sweep and a delivery
    assert room.net.now - t0 <= T.timeout + T.timeout / 4 + 0.05
    assert "n2" not in room.clients[watcher].rooms["lobby"].members


def test_joiners_get_the_last_hundred_events_as_history():
    room = Room(1, seed=4, history=100)
    room.wait_joined()
    a = client_addr(0)
    for k in range(150):
        room.net.call(a, room.clients[a].post, "lobby", f"old {k}")
    room.settle(1.0)
    late = room.add_client(5, "late")
    room.net.run_while(lambda: not room.events(client_addr(5), E.RoomJoined), room.net.now + 5)
    room.settle(1.0)
    evs = [e for e in room.net.events[client_addr(5)] if isinstance(e, E.ROOM_EVENTS)]
    hist = [e for e in evs if e.history]
    assert len(hist) == 100
    assert hist[-1].text == "old 149" and hist[0].text == "old 50"
    (me,) = [e for e in evs if not e.history]
    assert isinstance(me, E.MemberJoined) and me.nick == "late"
    joined = room.events(client_addr(5), E.RoomJoined)[0]
    assert {m.nick for m in joined.members} == {"n0", "late"}
    assert late.rooms["lobby"].ready


def test_nicks_are_unique_in_a_room_and_changes_are_announced():
    room = Room(2, seed=5)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    clash = room.add_client(7, "n0")
    room.settle(1.0)
    (refused,) = room.events(client_addr(7), E.Refused)  # nicks are unique per relay
    assert "n0" in refused.reason and not clash.connected
    room.net.call(b, room.clients[b].set_nick, "n0")
    room.settle(0.5)
    assert room.events(b, E.RequestRefused)[-1].what == "nick"
    room.net.call(b, room.clients[b].set_nick, "bob")
    room.settle(0.5)
    (nc,) = room.events(a, E.NickChanged)
    assert (nc.old, nc.new) == ("n1", "bob")
    assert "bob" in room.clients[a].rooms["lobby"].members


def test_topic_away_part_and_actions_are_room_events():
    room = Room(2, seed=6)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    ca = room.clients[a]
    room.net.call(a, ca.set_topic, "lobby", "release on friday")
    ca.post("lobby", "waves", room.net.now, action=True)
    room.net.flush(a)
    room.net.call(a, ca.set_away, "lunch")
    room.settle(0.5)
    (tc,) = room.events(b, E.TopicChanged)
    assert tc.topic == "release on friday" and tc.nick == "n0"
    (msg,) = room.events(b, E.MessageReceived)
    assert msg.action and msg.text == "waves"
    (aw,) = room.events(b, E.AwayChanged)
    assert aw.away == "lunch"
    assert room.clients[b].rooms["lobby"].members["n0"].away == "lunch"
    room.net.call(a, ca.part, "lobby")
    room.settle(0.5)
    (left,) = room.events(b, E.MemberLeft)
    assert left.nick == "n0"
    assert room.events(a, E.RoomLeft)


def test_direct_messages_reach_only_their_target_and_echo_to_the_sender():
    room = Room(3, seed=8, imp=Impairment(loss=0.2, dup=0.1, delay=0.002, jitter=0.005))
    room.wait_joined()
    a, b, c = client_addr(0), client_addr(1), client_addr(2)
    for k in range(5):
        room.clients[a].post("@n1", f"psst {k}", room.net.now)
        room.net.flush(a)
    room.net.run_while(lambda: len(list(room.events(b, E.MessageReceived))) < 5, room.net.now + 10)
    got = list(room.events(b, E.MessageReceived))
    assert [e.text for e in got] == [f"psst {k}" for k in range(5)]
    assert all(e.room == "@n0" and e.nick == "n0" and not e.mine for e in got)
    room.net.run_while(lambda: len(room.events(a, E.MessageReceived)) < 5, room.net.now + 10)
    echo = room.events(a, E.MessageReceived)
    assert all(e.room == "@n1" and e.mine for e in echo)
    assert not room.events(c, E.MessageReceived)
    room.clients[a].post("@nobody", "hello?", room.net.now)
    room.net.flush(a)
    room.settle(0.5)
    failed = room.events(a, E.PostFailed)
    assert failed and "nobody" in failed[0].reason


def test_relay_restart_rejoins_and_resends_without_duplicates():
    room = Room(3, seed=9, imp=Impairment(loss=0.05, delay=0.002, jitter=0.003))
    room.wait_joined()
    a = client_addr(0)
    for k in range(5):
        for addr, c in room.clients.items():
            room.net.call(addr, c.post, "lobby", f"{c.nick} before {k}")
    room.wait_messages(15)
    # the relay process dies; its replacement knows nothing
    room.net.remove(RELAY)
    for addr, c in room.clients.items():
        room.net.call(addr, c.post, "lobby", f"{c.nick} during")
    room.settle(2 * T.timeout)
    fresh = Relay(RelayConfig(timing=T))
    room.net.add(RELAY, fresh)
    room.relay = fresh
    for addr, c in room.clients.items():
        room.net.call(addr, c.post, "lobby", f"{c.nick} after")
    room.wait_messages(21, limit=60)
    room.settle(1.0)
    for addr in room.clients:
        texts = [m[2] for m in room.messages(addr)]
        assert len(texts) == len(set(texts)) == 21
        assert {f"n{i} during" for i in range(3)} <= set(texts)
        kinds = [type(e).__name__ for e in room.net.events[addr]]
        assert "ConnectionLost" in kinds and kinds.count("RoomJoined") == 2
    # the messages after the restart are in one order for everyone
    tails = [[m for m in room.messages(addr) if "before" not in m[2]] for addr in room.clients]
    assert all(t == tails[0] for t in tails)
    assert not room.events(a, E.PostFailed)


def test_a_member_far_behind_the_kept_history_skips_ahead_with_a_notice():
    room = Room(2, seed=10)
    room.relay.config.ring = 64
    room.relay.log.keep_events = 64  # retention (the relay's timer expires the rest)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    room.relay.rooms["lobby"].cap = 64
    # b hears nothing for a while (but stays within the timeout by pinging afterwards)
    t0 = room.net.now
    room.net.dark_links[b] = [(t0, t0 + T.timeout * 0.8)]
    for k in range(200):
        room.clients[a].post("lobby", f"m{k}", room.net.now)
        room.net.flush(a)
    room.net.run_while(lambda: not any(m[2] == "m199" for m in room.messages(b)), room.net.now + 20)
    notices = room.events(b, E.Notice)
    got = room.messages(b)
    assert notices and "no longer available" in notices[0].text
    assert got[-1][2] == "m199" and len(got) == len({m[2] for m in got})
    assert 64 <= len(got) < 200


def test_outbox_has_a_limit_and_oversize_text_is_refused():
    import pytest

    from udproom.protocol.backend import OutboxFull
    from udproom.protocol.client import MAX_OUTBOX
    from udproom.protocol.names import TextTooLong

    c = ClientSession("x", T)
    c.join("lobby", 0.0)
    with pytest.raises(TextTooLong, match=f"{F.MAX_TEXT + 1} bytes"):
        c.post("lobby", "x" * (F.MAX_TEXT + 1), 0.0)
    for _ in range(MAX_OUTBOX - 1):
        c.post("lobby", "x", 0.0)
    with pytest.raises(OutboxFull, match="waiting"):
        c.post("lobby", "x", 0.0)


def _results(relay: Relay, now: float, hand) -> list:
    return [f for f in hand.frames(relay.datagrams_to_send(now)) if isinstance(f, (F.Result, F.Joined))]


def test_posts_are_idempotent_by_cseq_and_by_message_id():
    relay = Relay(RelayConfig(timing=T))
    hand = session_by_hand(relay, SRC, "ann")
    hand.send([F.Req(1, F.OP_JOIN, "lobby")], 1.0)
    _results(relay, 1.0, hand)
    post = [F.Req(cseq=2, op=F.OP_POST, room="lobby", text="once", mid=77)]
    hand.send(post, 1.1)
    # a retransmit before the post is stored: no answer yet (nothing is acknowledged unstored)
    hand.send(post, 1.15)
    (first,) = _results(relay, 1.15, hand)
    hand.send(post, 1.2)  # a retransmit: same answer, no second event
    (again,) = _results(relay, 1.2, hand)
    assert first == again and first.seq == 2
    # the same message id on a new request (a resend after a reconnect) is not a second event
    hand.send([F.Req(cseq=3, op=F.OP_POST, room="lobby", text="once", mid=77)], 1.3)
    (third,) = _results(relay, 1.3, hand)
    assert third.seq == 2
    assert relay.rooms["lobby"].seq == 2 and relay.stats["posts"] == 1


def test_requests_run_in_cseq_order_even_when_they_arrive_out_of_order():
    relay = Relay(RelayConfig(timing=T))
    hand = session_by_hand(relay, SRC, "ann")
    hand.send([F.Req(cseq=3, op=F.OP_POST, room="lobby", text="second", mid=2)], 1.0)
    hand.send([F.Req(cseq=2, op=F.OP_POST, room="lobby", text="first", mid=1)], 1.0)
    assert not _results(relay, 1.0, hand)  # nothing runs before request 1
    hand.send([F.Req(1, F.OP_JOIN, "lobby")], 1.0)
    res = _results(relay, 1.0, hand)
    assert [r.cseq for r in res] == [1, 2, 3]
    assert [e.text for e in relay.rooms["lobby"].events() if e.kind == F.EV_MSG] == ["first", "second"]


def test_one_session_in_several_rooms_keeps_them_apart():
    room = Room(2, seed=14)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    for c_addr in (a, b):
        room.net.call(c_addr, room.clients[c_addr].join, "#Dev")
    room.net.run_while(lambda: not all(c.rooms["dev"].ready for c in room.clients.values()), room.net.now + 5)
    room.net.call(a, room.clients[a].post, "dev", "in dev")
    room.net.call(a, room.clients[a].post, "lobby", "in lobby")
    room.net.run_while(lambda: len(room.events(b, E.MessageReceived)) < 2, room.net.now + 5)
    got = {(e.room, e.text, e.seq) for e in room.events(b, E.MessageReceived)}
    # each room numbers its own events
    assert got == {("dev", "in dev", 3), ("lobby", "in lobby", 3)}
    room.net.call(b, room.clients[b].part, "dev")
    room.settle(0.3)
    assert list(room.clients[b].rooms) == ["lobby"]
    assert [m.nick for m in room.clients[a].rooms["dev"].members.values()] == ["n0"]


def test_posts_beyond_a_keys_rate_are_refused_whatever_its_sessions_and_others_go_on():
    """`RelayConfig.posts_per_key` (`relay --posts-per-key RATE/BURST`): a key's posts beyond its
    bucket get a one-line refusal (never acknowledged, never stored); reconnecting from another
    address under another nick does not refill the bucket; another key is not touched."""
    from udproom.protocol.crypto import Identity

    def posts(hand, first_cseq: int, n: int, now: float, room: str = "lobby") -> list:
        reqs = [
            F.Req(
                first_cseq + i,
                F.OP_POST,
                room,
                f"{hand.addr[1]}:{first_cseq + i}",
                1000 * hand.addr[1] + first_cseq + i,
            )
            for i in range(n)
        ]
        hand.send(reqs, now)
        # (sorted: a refusal is answered at once, a post once it is stored)
        return sorted(
            (r for r in _results(relay, now + 0.05, hand) if isinstance(r, F.Result)), key=lambda r: r.cseq
        )

    relay = Relay(RelayConfig(timing=T, posts_per_key=2.0, posts_per_key_burst=4.0))
    mallory_key = Identity.generate()
    mallory = HandClient(relay, ("10.0.0.1", 1), "mallory", identity=mallory_key)
    bob = HandClient(relay, ("10.0.0.2", 2), "bob")
    for hand in (mallory, bob):
        hand.send([F.Req(1, F.OP_JOIN, "lobby")], 1.0)
        _results(relay, 1.0, hand)
    got = posts(mallory, 2, 6, 1.0)
    assert [r.code for r in got] == [F.RES_OK] * 4 + [F.RES_REFUSED] * 2
    assert all("too many messages from your key" in r.reason and "\n" not in r.reason for r in got[4:])
    assert [r.code for r in posts(bob, 2, 4, 1.0)] == [F.RES_OK] * 4  # another key: its own bucket
    # the same key, another address, another nick, a new session: still empty
    again = HandClient(relay, ("10.0.0.3", 3), "m2", identity=mallory_key, now=1.1)
    again.send([F.Req(1, F.OP_JOIN, "lobby")], 1.1)
    _results(relay, 1.1, again)
    assert [r.code for r in posts(again, 2, 1, 1.1)] == [F.RES_REFUSED]
    # and direct messages count too
    again.send([F.Req(3, F.OP_DIRECT, "bob", "hi", 99)], 1.1)
    (dm,) = [r for r in _results(relay, 1.15, again) if isinstance(r, F.Result)]
    assert dm.code == F.RES_REFUSED and "too many messages" in dm.reason
    # the bucket refills at the rate: one second later, two more
    assert [r.code for r in posts(again, 4, 3, 2.2)] == [F.RES_OK, F.RES_OK, F.RES_REFUSED]
    stored = [e.text for e in relay.rooms["lobby"].events() if e.kind == F.EV_MSG]
    assert len(stored) == 4 + 4 + 2 and relay.stats["posts_refused_rate"] == 2 + 1 + 1 + 1
    assert not any(t.startswith("1:") and int(t[2:]) > 5 for t in stored)  # no refused one stored
