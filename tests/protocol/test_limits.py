"""Limits: every datagram fits, every buffer and room is bounded (bytes, not only counts), whatever
members send."""

from __future__ import annotations

import tracemalloc

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, example, given, settings

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.crypto import SESSION_OVERHEAD
from udproom.protocol.names import MAX_TEXT_BYTES
from udproom.protocol.peer import PeerNode
from udproom.protocol.peer import state as P
from udproom.protocol.relay import RelayConfig, Stream

from .adversary import Adversary, ints, structs, texts
from .adversary import frames as any_frames
from .fakenet import FakeNet
from .harness import (
    RELAY,
    Room,
    T,
    client_addr,
    post_reaches_everyone,
    sealed_by,
    watched_relay,
)
from .peers import MALLORY, addr, of, send_as, signed, timing, trio

_ROOMS = st.one_of(st.sampled_from(["lobby", "#lobby", "other", "n0", "N1", ""]), texts(200))

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

_REQS = st.tuples(_OPS, _ROOMS, texts(), ints()).map(lambda t: ("req", t))

_OTHER = st.one_of(
    structs(F.Bye),
    st.integers(1100, 1190).map(lambda n: F.Bye("x" * n)),  # goodbyes that only just fit
    structs(F.Ack),
    structs(F.Nack),
    structs(F.Ping),
    st.builds(F.Nack, st.just("lobby"), st.lists(ints(), max_size=8)),
    # any request at all, every field hostile (an op of any number, a body, a signature, a count:
    # moderation, passphrase rooms, key shares, paging), and any frame the wire format allows
    structs(F.Req),
    any_frames(),
).map(lambda f: ("frame", f))


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
        room.net.call(a, ca.post, "big", "x" * F.MAX_TEXT)
    room.settle(2.0)
    stream = room.relay.rooms["big"]
    assert stream.seq > 250 and stream.bytes <= 64 * 1024 and len(stream.ring) < 64 * 1024 // 800
    room.net.call(a, ca.part, "big")
    room.settle(T.timeout)
    assert "big" in room.relay.rooms  # history kept for a while after the last one leaves
    room.settle(6.0)
    assert "big" not in room.relay.rooms


def test_a_long_goodbye_or_part_reason_cannot_wedge_a_room():
    room = Room(2, seed=71)
    room.add_client(2, "e" * 24)
    room.wait_joined()
    w = watched_relay(room)
    evil = client_addr(2)
    member = room.clients[evil]  # the member's process is replaced by the attacker's (its keys too)
    adv = Adversary(room.net, evil)
    cseq = room.relay.sessions[evil].next_cseq
    part = F.Req(cseq=cseq, op=F.OP_PART, room="lobby", text="\U0001f600" * 280)  # 1120 bytes of reason
    adv.forge(sealed_by(member, [part]), RELAY)
    adv.forge(sealed_by(member, [F.Req(cseq + 1, F.OP_JOIN, "lobby")]), RELAY, delay=0.01)
    adv.forge(sealed_by(member, [F.Bye("x" * 1180)]), RELAY, delay=0.02)
    room.settle(0.5)
    assert w.largest <= F.MAX_DATAGRAM
    honest = [client_addr(0), client_addr(1)]
    post_reaches_everyone(room, client_addr(0), "still here", honest)
    left = room.events(client_addr(1), E.MemberLeft)
    assert left and all(len(e.reason.encode()) <= 200 for e in left)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.one_of(_REQS, _REQS, _OTHER), min_size=1, max_size=5), min_size=1, max_size=6))
@example([[("frame", F.Bye("x" * 1175))]])  # the goodbye that wedged a room before
@example([[("req", (F.OP_TOPIC, "lobby", "\u20ac" * 100, 0)), ("req", (F.OP_DIRECT, "x" * 1100, "y", 0))]])
def test_property_whatever_a_member_sends_datagrams_fit_and_the_room_lives_on(attack):
    room = Room(3, seed=72)
    room.wait_joined()
    w = watched_relay(room)
    evil = client_addr(2)
    session = room.relay.sessions[evil]
    member = room.clients[evil]  # its keys are the attacker's
    adv = Adversary(room.net, evil)
    cseq = session.next_cseq
    for i, items in enumerate(attack):
        frames: list[F.Frame] = []
        for what, x in items:
            if what == "req":
                op, name, text, arg = x
                frames.append(F.Req(cseq=cseq, op=op, room=name, text=text, mid=cseq, arg=arg))
                cseq += 1
            else:
                frames.append(x)
        for data in F.pack(frames, F.MAX_DATAGRAM - SESSION_OVERHEAD):  # as many datagrams as it takes
            if len(data) <= F.MAX_DATAGRAM - SESSION_OVERHEAD:
                adv.forge(member._channel.seal(data), RELAY, delay=0.003 * i)
    room.settle(0.6)
    assert w.largest <= F.MAX_DATAGRAM
    post_reaches_everyone(room, client_addr(0), "after", [client_addr(0), client_addr(1)])


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
    member = room.clients[client_addr(3)]
    req = F.Req(session.next_cseq, F.OP_NAMES, "lobby")
    relay.receive_datagram(sealed_by(member, [req]), client_addr(3), room.net.now)
    (joined,) = [
        f
        for d, dst in relay.datagrams_to_send(room.net.now)
        if dst == client_addr(3) and d[1] == 1
        for f in F.decode(member._channel.open(d))
        if type(f) is F.Joined
    ]
    # (the first chunk of it: a member's entry carries its 32-byte identity key)
    assert joined.total == 30 and joined.offset == 0 and 20 <= len(joined.members) <= 30
    assert all(len(m.key) == 32 for m in joined.members)


def test_reorder_buffers_are_bounded_by_bytes():
    net, (p0, _p1, mallory) = trio()
    seq0 = mallory.rooms["lobby"].out.seq + 1
    text = "x" * 800
    for k in range(1, 3000):  # never the next one: nothing can be delivered
        f = F.PeerMsg(
            room="lobby",
            seq=seq0 + k,
            lc=mallory.lc + 1,
            kind=F.EV_MSG,
            nick="mallory",
            text=text,
            ts=net.now,
            mid=1000 + k,
        )
        send_as(net, mallory, MALLORY, 0, [signed(mallory, f)])
    net.run_until(net.now + 0.05)
    rx = p0.links[addr(MALLORY)].rooms["lobby"].rx
    held = sum(P.RX_ITEM_BYTES + len(m.text) for m in rx.buffer.values())  # about what they take
    assert held <= P.MAX_RX_BYTES
    # and the stream still moves once the hole is filled
    hole = F.PeerMsg(
        room="lobby",
        seq=seq0,
        lc=mallory.lc + 1,
        kind=F.EV_MSG,
        nick="mallory",
        text="hole",
        ts=net.now,
        mid=999,
    )
    send_as(net, mallory, MALLORY, 0, [signed(mallory, hole)])
    net.run_until(net.now + 0.05)
    texts = [e.text for e in of(net, 0, E.MessageReceived)]
    assert texts[0] == "hole" and len(texts) > 1


def test_peer_lists_fit_a_datagram_with_ipv6_addresses_and_long_nicks():
    net = FakeNet(seed=4)
    hub = net.add(("2001:db8::1", 7000), PeerNode("hub", timing=timing()))
    net.call(("2001:db8::1", 7000), hub.join, "lobby")
    nodes = []
    for k in range(30):
        a = (f"2001:db8:aaaa:bbbb:cccc:dddd:eeee:{k + 1:x}", 40000 + k)
        nick = f"{'n' * 22}{k:02d}"
        node = net.add(a, PeerNode(nick, timing=timing()))
        nodes.append(node)
        net.call(a, node.join, "lobby")
        net.call(a, node.add_peer, ("2001:db8::1", 7000))
    net.run_until(net.now + 1.0)
    to = next(iter(hub.links.values()))
    frames = hub._gossip("lobby", to)
    assert sum(len(f.peers) for f in frames) == len(hub._members("lobby")) - 1
    for f in frames:
        assert len(F.encode([F.Sid(2**63 - 1), f])) <= F.MAX_DATAGRAM


def test_history_replies_fit_a_datagram_whatever_they_hold():
    node = PeerNode("p0", timing=timing())
    name = "r" * 32  # the longest room name
    node.join(name, 0.0)
    room = node.rooms[name]
    signature, key = bytes(range(64)), bytes(32)  # every item carries its author's (unchecked here)
    big = F.PeerMsg(
        room=name,
        seq=2**62,
        lc=2**62,
        kind=F.EV_MSG,
        nick="\U0001f600" * 24,
        text="\U0001f600" * 250,
        ts=1e18,
        mid=2**63 - 1,
        sig=signature,
        key=key,
    )
    for k in range(5):
        room.history.append(big)
        room.history.append(
            F.PeerMsg(
                room=name,
                seq=k + 1,
                lc=k + 1,
                kind=F.EV_MSG,
                nick="bob",
                text="x" * (200 * k),
                ts=1.0,
                mid=k + 1,
                sig=signature,
                key=key,
            )
        )
    frames = node._history_frames(room)
    assert sum(len(f.items) for f in frames) >= 5
    for f in frames:  # sealed: the frames' array, then the head and the tag
        assert len(F.encode([f])) + SESSION_OVERHEAD <= F.MAX_DATAGRAM
    # the longest message an honest member can send, in the longest room, still goes (its item
    # without the room name) and arrives whole, signed
    honest = F.PeerMsg(
        room=name,
        seq=1,
        lc=7,
        kind=F.EV_MSG,
        nick="\U0001f600" * 24,
        text="\U0001f600" * (MAX_TEXT_BYTES // 4),
        ts=1.7e9,
        mid=2**63 - 1,
        sig=signature,
        key=key,
    )
    room.history.clear()
    room.history.append(honest)
    (f,) = node._history_frames(room)
    assert len(F.encode([f])) + SESSION_OVERHEAD <= F.MAX_DATAGRAM
    assert f.items[0].text == honest.text and f.items[0].sig == signature and f.items[0].key == key


def test_a_joined_with_the_longest_signed_topic_and_the_longest_member_fits_a_datagram():
    """The topic's setter key and signature (Joined.topic_key/topic_sig) ride in every Joined
    chunk: with the longest sealed topic, names and numbers, and the biggest member the relay
    puts in a chunk, the chunk still fits one sealed datagram."""
    from udproom.protocol import vault as V
    from udproom.protocol.names import MAX_AWAY_BYTES, MAX_NICK_LEN, MAX_TOPIC_BYTES
    from udproom.protocol.relay.state import DGRAM_HEAD

    wide = "\U0001f600"
    big = 2**63 - 1
    member = F.MemberInfo(wide * MAX_NICK_LEN, wide * (MAX_AWAY_BYTES // 4), b"k" * 32, "@+")
    for topic in (wide * (MAX_TOPIC_BYTES // 4), V.sealed_topic(b"x" * V.MAX_SEALED_TOPIC)):
        j = F.Joined(
            big, "r" * 32, wide * MAX_NICK_LEN, big, big, topic, [member], big, big, b"k" * 32, b"s" * 64
        )
        assert F.size_of(j) <= F.MAX_DATAGRAM - DGRAM_HEAD


def test_the_longest_post_signed_and_keyed_fits_every_datagram_that_carries_it():
    """Every stored message carries its author's key (32 bytes) besides its signature (issue 11):
    the longest post (MAX_TEXT bytes of UTF-8, clear or sealed in a passphrase room; a direct
    message), from the longest nick in bytes, with every number at its widest, still fits a room
    datagram (a Batch of that one event in the longest room: live, backfill, repair, and what a
    cluster's relays take from JetStream, which `Stream.encode` refuses when it would not fit),
    a history page's datagram (`page_room`), and the inbox. MAX_TEXT is no lower than it must be:
    one byte more of sealed body does not fit a room's datagram."""
    from udproom.protocol import vault as V
    from udproom.protocol.crypto import ROOM_OVERHEAD
    from udproom.protocol.names import MAX_NICK_LEN
    from udproom.protocol.relay.state import EventTooBig
    from udproom.protocol.relay.storage import page_room

    wide, big, room = "\U0001f600", 2**63 - 1, "r" * 32
    nick = wide * MAX_NICK_LEN
    text = wide * (F.MAX_TEXT // 4) + "x" * (F.MAX_TEXT % 4)
    assert len(text.encode()) == F.MAX_TEXT == MAX_TEXT_BYTES
    sig, key = b"s" * 64, b"k" * 32

    def ev(kind: int, text: str = text, body: bytes = b"") -> F.Ev:
        return F.Ev(kind, nick, text, 1.7e9, big, body=body, sig=sig, key=key)

    posts = [ev(F.EV_MSG), ev(F.EV_ACTION), ev(F.EV_TOPIC), ev(F.EV_MSG, "", b"b" * V.MAX_SEALED_TEXT)]
    stream = Stream(room, 10)
    for post in posts:
        data = stream.encode(post)  # (EventTooBig if it did not fit)
        batch = F.datagram([F.batch_item(room, big, [data])])
        assert len(batch) + ROOM_OVERHEAD <= F.MAX_DATAGRAM
        assert len(data) + 3 <= page_room(big, room, big)
        page = F.datagram([F.encode_item(F.History(big, room, big, big, big, [post], True))])
        assert len(page) + SESSION_OVERHEAD <= F.MAX_DATAGRAM
    inbox = Stream("", 10)
    for kind in (F.EV_DM, F.EV_DM_ACTION):
        data = inbox.encode(ev(kind))
        assert len(F.datagram([F.batch_item("", big, [data])])) + ROOM_OVERHEAD <= F.MAX_DATAGRAM
    with pytest.raises(EventTooBig):
        stream.encode(ev(F.EV_MSG, "", b"b" * (V.MAX_SEALED_TEXT + 1)))
