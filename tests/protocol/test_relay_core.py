"""Relay and client behaviour beyond plain delivery: handshake, presence, rooms, nicks, history."""

from __future__ import annotations

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.relay import Relay, RelayConfig

from .fakenet import Impairment
from .harness import RELAY, Room, T, client_addr, hello_datagram, session_by_hand

SRC = ("192.0.2.9", 4444)


def test_handshake_is_stateless_until_the_cookie_comes_back():
    relay = Relay(RelayConfig(timing=T))
    data = hello_datagram()
    relay.receive_datagram(data, SRC, 1.0)
    out = relay.datagrams_to_send(1.0)
    assert len(out) == 1 and not relay.sessions  # no state for an unproven address
    ((reply, addr),) = out
    assert addr == SRC and len(reply) <= 3 * len(data)
    retry = F.decode(reply)[0]
    assert isinstance(retry, F.Retry)
    # the cookie is bound to the address: from elsewhere it only earns another Retry
    relay.receive_datagram(hello_datagram(retry.cookie), ("192.0.2.10", 4444), 1.1)
    assert not relay.sessions
    relay.receive_datagram(hello_datagram(retry.cookie), SRC, 1.2)
    assert SRC in relay.sessions
    sid, welcome = F.decode(relay.datagrams_to_send(1.2)[-1][0])
    assert isinstance(welcome, F.Welcome) and welcome.version == F.VERSION
    assert welcome.nonce == 7 and welcome.token  # echoes our nonce; hands us the session token
    # everything on the session is marked with the session's own token, not the relay's epoch
    assert sid == F.Sid(welcome.token) and welcome.token != relay.epoch


def test_datagrams_without_the_session_token_are_dropped():
    room = Room(2, seed=13)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    relay = room.relay
    # an off-path attacker forges a's address: a post, a nick change and a goodbye
    forged = F.encode([F.Req(cseq=50, op=F.OP_POST, room="lobby", text="forged", mid=1), F.Bye("forged")])
    relay.receive_datagram(forged, a, room.net.now)
    relay.receive_datagram(F.encode([F.Sid(12345), F.Bye("forged")]), a, room.net.now)
    assert relay.stats["unauthenticated"] == 2 and a in relay.sessions
    # and forges the relay's address towards b: an event and a Gone
    cb = room.clients[b]
    cb.receive_datagram(
        F.encode([F.Batch("lobby", 99, [F.Ev(F.EV_MSG, "x", "forged")]), F.Gone("lobby", 10**6)]),
        RELAY,
        room.net.now,
    )
    cb.receive_datagram(F.encode([F.Sid(relay.epoch + 1), F.Gone("lobby", 10**6)]), RELAY, room.net.now)
    assert cb.stats["unauthenticated"] == 2
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
    assert isinstance(refuse, F.Refuse) and "version" in refuse.reason
    assert refuse.versions == list(F.SUPPORTED_VERSIONS)
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
    with pytest.raises(TextTooLong, match="1001 bytes"):
        c.post("lobby", "x" * 1001, 0.0)
    for _ in range(MAX_OUTBOX - 1):
        c.post("lobby", "x", 0.0)
    with pytest.raises(OutboxFull, match="waiting"):
        c.post("lobby", "x", 0.0)


def _results(relay: Relay, now: float) -> list:
    out = []
    for data, _ in relay.datagrams_to_send(now):
        out += [f for f in F.decode(data) if isinstance(f, (F.Result, F.Joined))]
    return out


def test_posts_are_idempotent_by_cseq_and_by_message_id():
    relay = Relay(RelayConfig(timing=T))
    token = session_by_hand(relay, SRC, "ann")
    sid = F.Sid(token)
    relay.receive_datagram(F.encode([sid, F.Req(1, F.OP_JOIN, "lobby")]), SRC, 1.0)
    _results(relay, 1.0)
    post = F.encode([sid, F.Req(cseq=2, op=F.OP_POST, room="lobby", text="once", mid=77)])
    relay.receive_datagram(post, SRC, 1.1)
    # a retransmit before the post is stored: no answer yet (nothing is acknowledged unstored)
    relay.receive_datagram(post, SRC, 1.15)
    (first,) = _results(relay, 1.15)
    relay.receive_datagram(post, SRC, 1.2)  # a retransmit: same answer, no second event
    (again,) = _results(relay, 1.2)
    assert first == again and first.seq == 2
    # the same message id on a new request (a resend after a reconnect) is not a second event
    relay.receive_datagram(
        F.encode([sid, F.Req(cseq=3, op=F.OP_POST, room="lobby", text="once", mid=77)]), SRC, 1.3
    )
    (third,) = _results(relay, 1.3)
    assert third.seq == 2
    assert relay.rooms["lobby"].seq == 2 and relay.stats["posts"] == 1


def test_requests_run_in_cseq_order_even_when_they_arrive_out_of_order():
    relay = Relay(RelayConfig(timing=T))
    sid = F.Sid(session_by_hand(relay, SRC, "ann"))
    relay.receive_datagram(
        F.encode([sid, F.Req(cseq=3, op=F.OP_POST, room="lobby", text="second", mid=2)]), SRC, 1.0
    )
    relay.receive_datagram(
        F.encode([sid, F.Req(cseq=2, op=F.OP_POST, room="lobby", text="first", mid=1)]), SRC, 1.0
    )
    assert not _results(relay, 1.0)  # nothing runs before request 1
    relay.receive_datagram(F.encode([sid, F.Req(1, F.OP_JOIN, "lobby")]), SRC, 1.0)
    res = _results(relay, 1.0)
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
