"""Protocol 2 in relay mode (docs/security.md): what an eavesdropper, a forger and a malicious
member can and cannot do to client <-> relay sessions, on the simulated network."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.client import ClientSession
from udproom.protocol.crypto import KIND_ROOM, Identity, Responder, RoomKey, fingerprint, room_digest
from udproom.protocol.relay import Relay, RelayConfig

from .adversary import Adversary
from .fakenet import FakeNet
from .harness import RELAY, HandRelay, Room, T, client_addr, post_reaches_everyone, sealed_by

EVE = ("10.6.6.6", 6666)
#: where a datagram that is not accepted is counted (and "repeated": the relay answers a copy of
#: the handshake message 3 that opened a session with its LoggedIn again, and nothing else)
DROPS = ("sealed_dropped", "malformed", "unauthenticated", "unknown_source", "repeated")


def _dropped(core) -> int:
    return sum(core.stats.get(k, 0) for k in DROPS)


def test_an_eavesdropper_on_both_directions_reads_no_text_nick_or_token():
    room = Room(0, seed=91, room="secretroom")
    eve = Adversary(room.net, EVE)
    wire = eve.eavesdrop(RELAY)
    nicks = ["zanzibarnick", "quokkanick"]
    for i, nick in enumerate(nicks):
        room.add_client(i, nick)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    ca = room.clients[a]
    room.net.call(a, ca.post, "secretroom", "the launch code is xylophone-42")
    room.net.call(a, ca.post, "@quokkanick", "a direct word: marzipan")
    room.net.call(a, ca.set_topic, "secretroom", "topic: pomegranate")
    room.net.call(a, ca.set_away, "gone to the aquarium")
    room.net.call(a, ca.set_nick, "wombatnick")
    room.wait_messages(1)
    room.settle(1.0)
    # a reconnect too: the old token travels as `resume`, in the Login
    token = room.relay.sessions[b].token
    room.net.dark_links[b] = [(room.net.now, room.net.now + 3 * T.timeout)]
    room.net.run_while(lambda: len(room.events(b, E.Connected)) < 2, room.net.now + 30)
    assert len(room.events(b, E.Connected)) == 2
    secrets = [
        "xylophone-42",
        "marzipan",
        "pomegranate",
        "aquarium",
        "wombatnick",
        *nicks,
        "secretroom",  # the room's name is in every batch: it is sealed too (it is metadata the relay sees)
    ]
    assert len(wire) > 50
    for _src, _dst, data in wire:
        for s in secrets:
            assert s.encode() not in data, s
        for t in (token, room.relay.sessions[a].token):
            assert t.to_bytes(8, "big") not in data  # (msgpack carries a token as 8 big-endian bytes)
    # the only clear datagrams are the handshake's
    clear = [F.decode(d) for _s, _d, d in wire if d[0] != 0xC1]
    assert clear and all(type(f) in (F.Hello, F.Retry, F.Welcome) for frames in clear for f in frames)
    assert all(f.nick == "" and f.resume == 0 for frames in clear for f in frames if type(f) is F.Hello)


def _tampered(data: bytes, bit: int) -> bytes:
    i, j = divmod(bit % (len(data) * 8), 8)
    return data[:i] + bytes((data[i] ^ (1 << j),)) + data[i + 1 :]


ATTACKS = st.one_of(
    st.tuples(st.just("replay"), st.integers(0, 10**6)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.integers(0, 1200)),
    st.tuples(st.just("forge"), st.binary(min_size=0, max_size=1200)),
    st.tuples(st.just("sealed-junk"), st.binary(min_size=0, max_size=1100)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ATTACKS, min_size=1, max_size=25), st.booleans())
def test_tampered_replayed_or_forged_datagrams_are_dropped_and_counted(attacks, at_relay):
    """Whatever an on-path attacker injects (a recorded datagram again, one with a bit flipped,
    cut short, or made up), at the relay or at a client: each is dropped and counted, nothing is
    shown twice, nothing forged is shown, and the room goes on."""
    room = Room(2, seed=92)
    eve = Adversary(room.net, EVE)
    wire = eve.eavesdrop(RELAY)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    for k in range(3):
        room.net.call(a, room.clients[a].post, room.room, f"real {k}")
    room.wait_messages(3)
    if at_relay:  # what a sent the relay on its session, injected again at the relay as from a
        target, src = (
            room.relay,
            a,
        )  # (its clear Hellos are the handshake's: tests/protocol/test_amplification.py)
        recorded = [d for s, _d, d in wire if s == a and d[0] == 0xC1]
    else:  # what the relay sent b, injected at b as from the relay
        target, src = room.clients[b], RELAY
        recorded = [d for s, d_, d in wire if s == RELAY and d_ == b]
    before = _dropped(target)
    injected = 0
    for attack in attacks:
        kind = attack[0]
        if kind == "replay":
            data = recorded[attack[1] % len(recorded)]
        elif kind == "flip":
            data = _tampered(recorded[attack[1] % len(recorded)], attack[2])
        elif kind == "truncate":
            whole = recorded[attack[1] % len(recorded)]
            data = whole[: attack[2] % len(whole)]
        elif kind == "forge":
            data = attack[1]
        else:
            data = b"\xc1\x01" + attack[1]
        if not data:
            continue
        target.receive_datagram(data, src, room.net.now)
        injected += 1
    assert _dropped(target) == before + injected  # each one dropped, and counted
    room.settle(0.5)
    post_reaches_everyone(room, a, "after the attack", [a, b])
    texts = [m[2] for m in room.messages(b)]
    assert sorted(texts) == sorted(set(texts))  # nothing twice
    assert set(texts) <= {"real 0", "real 1", "real 2", "after the attack"}  # nothing forged


def test_a_datagram_older_than_the_replay_window_is_dropped_at_relay_and_client():
    room = Room(2, seed=93)
    eve = Adversary(room.net, EVE)
    wire = eve.eavesdrop(RELAY)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    first_to_relay = next(d for s, _d, d in wire if s == a and d[0] == 0xC1 and d[2:10] != bytes(8))
    first_to_b = next(
        d for s, d_, d in wire if s == RELAY and d_ == b and d[0] == 0xC1 and d[2:10] != bytes(8)
    )
    ca, cb = room.clients[a], room.clients[b]
    # move both windows 1,100 packets on (pings on a's session, then pongs back)
    for _ in range(1100):
        room.relay.receive_datagram(sealed_by(ca, [F.Ping(1)]), a, room.net.now)
    room.relay.datagrams_to_send(room.net.now)
    for _ in range(1100):
        cb.receive_datagram(
            room.relay._seal(room.relay.sessions[b], F.encode([F.Pong(0)])), RELAY, room.net.now
        )
    r0, c0 = room.relay.stats["sealed_dropped"], cb.stats["sealed_dropped"]
    room.relay.receive_datagram(first_to_relay, a, room.net.now)
    cb.receive_datagram(first_to_b, RELAY, room.net.now)
    assert room.relay.stats["sealed_dropped"] == r0 + 1 and cb.stats["sealed_dropped"] == c0 + 1
    post_reaches_everyone(room, a, "still fine", [a, b])


def test_a_member_holding_the_room_key_cannot_make_another_accept_a_batch():
    """Every member knows the room key; only the relay (and b) can make b's tag. Mallory (a member,
    with its session keys and the room key) forges a batch to b: sealed under the room key behind
    its own tag, and spliced behind a real tag of b's; b accepts neither."""
    room = Room(2, seed=94)
    eve = Adversary(room.net, EVE)
    wire = eve.eavesdrop(RELAY)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    mallory, cb = room.clients[a], room.clients[b]
    post_reaches_everyone(room, a, "hello", [a, b])
    key: RoomKey = mallory._room_keys.rings[room.room].current
    forged = F.datagram([F.encode_item(F.Batch(room.room, 3, [F.Ev(F.EV_MSG, "n1", "FORGED", 1.0, 99)]))])
    blob = key.seal(forged)
    before = cb.stats["sealed_dropped"]
    # 1. its own tag (made with its session's keys: the relay's keys towards mallory)
    cb.receive_datagram(mallory._channel.seal_room(blob, room_digest(blob)), RELAY, room.net.now)
    # 2. a real datagram to b, its blob replaced by mallory's
    real = next(d for s, d_, d in wire if s == RELAY and d_ == b and d[:2] == bytes((0xC1, KIND_ROOM)))
    cb.receive_datagram(real[:26] + blob, RELAY, room.net.now)
    assert cb.stats["sealed_dropped"] == before + 2
    room.settle(0.5)
    post_reaches_everyone(room, a, "after", [a, b])
    assert "FORGED" not in [m[2] for m in room.messages(b)]


def test_a_departure_changes_the_room_key_for_those_who_stay_at_most_once_a_second():
    room = Room(5, seed=95)
    room.wait_joined()
    stream = room.relay.rooms[room.room]
    kids = [stream.key.kid]
    room.net.call(client_addr(2), room.clients[client_addr(2)].part, room.room)
    room.settle(0.1)
    assert room.relay.stats["rekeys"] == 1 and stream.key.kid != kids[0]  # at once
    kids.append(stream.key.kid)
    for i in (3, 4):  # two more leave within the second: they share the next rotation
        room.net.call(client_addr(i), room.clients[client_addr(i)].part, room.room)
    room.settle(0.3)
    assert room.relay.stats["rekeys"] == 1
    room.settle(1.0)
    assert room.relay.stats["rekeys"] == 2 and stream.key.kid not in kids
    a, b = client_addr(0), client_addr(1)
    for c in (a, b):  # those who stay have the new key, and keep the one before for what was in flight
        assert set(room.clients[c]._room_keys.rings[room.room].keys) == {kids[1], stream.key.kid}
    post_reaches_everyone(room, a, "under the new key", [a, b])
    for i in (2, 3, 4):
        assert room.room not in room.clients[client_addr(i)]._room_keys.rings  # gone with the room


def test_a_pinned_key_other_than_the_relays_is_refused_once_in_one_line():
    net = FakeNet(96)
    relay = net.add(RELAY, Relay(RelayConfig(timing=T)))
    wrong = Identity.generate().fingerprint
    c = net.add(client_addr(0), ClientSession("ann", T, pinned=wrong))
    net.call(client_addr(0), c.connect, RELAY)
    net.run_until(net.now + 30)
    (refused,) = [e for e in net.events[client_addr(0)] if isinstance(e, E.Refused)]
    real = relay.identity.fingerprint
    assert f"key {real} is not the pinned {wrong}" in refused.reason and "\n" not in refused.reason
    assert c.state == "closed" and not relay.sessions  # never retried, never logged in
    assert not any(isinstance(e, E.Connected) for e in net.events[client_addr(0)])
    # the right pin (the full key, or its fingerprint in any case) connects
    for pin in (relay.identity.public, real.upper().replace("-", "")):
        ok = net.add(client_addr(1), ClientSession("bob", T, pinned=pin))
        net.call(client_addr(1), ok.connect, RELAY)
        net.run_while(lambda ok=ok: not ok.connected, net.now + 10)
        assert ok.connected and ok.relay_key == relay.identity.public
        (conn,) = [e for e in net.events[client_addr(1)] if isinstance(e, E.Connected)]
        assert fingerprint(conn.relay_key) == real
        net.call(client_addr(1), ok.close)
        net.remove(client_addr(1))
        net.run_until(net.now + 1)


def test_a_protocol_1_relay_is_not_used_without_encryption():
    for answer in ("refuse", "welcome"):
        c = ClientSession("ann", T)
        c.connect(RELAY, 0.0)
        (hello,) = F.decode(c.datagrams_to_send(0.0)[0][0])
        assert hello.version == 2 and hello.kx and hello.nick == ""
        if answer == "refuse":  # what a protocol-1 relay says to a version it does not speak
            old = F.Refuse("unsupported protocol version 2", [1], hello.nonce)
        else:  # a relay that claims protocol 1 in its Welcome
            old = F.Welcome(1, "ann", 9, 5000, 20000, 77, hello.nonce)
        c.receive_datagram(F.encode([old]), RELAY, 0.1)
        (refused,) = [e for e in iter(c.next_event, None) if isinstance(e, E.Refused)]
        assert refused.reason == "10.0.0.1:6000 speaks protocol 1, without encryption: not connecting"
        assert c.state == "closed" and not c.datagrams_to_send(10.0)


def test_a_reset_is_only_a_hint_the_session_stays_until_the_relay_proves_its_key():
    c = ClientSession("ann", T)
    c.connect(RELAY, 0.0)
    relay = HandRelay(c, 0.0)
    c.join("lobby", 0.0)
    c.datagrams_to_send(0.0)
    # a forged Reset: the client says Hello again (a background handshake), and stays connected
    c.receive_datagram(F.encode_one(F.Reset()), RELAY, 0.1)
    (hello,) = [f for d, _ in c.datagrams_to_send(0.1) if d[0] != 0xC1 for f in F.decode(d)]
    assert isinstance(hello, F.Hello) and c.connected
    # ... answered by a relay with another key (no pin given: the session's relay is the pin):
    # ignored, still connected on the first session
    hs = Responder(Identity.generate(), prologue=F.hello_prologue(hello))
    c.receive_datagram(
        F.encode_one(F.Welcome(2, "", 0, 0, 0, 0, hello.nonce, hs.respond(hello.kx))), RELAY, 0.2
    )
    assert c.connected and c._hs is None and not c.pin_refused
    c.receive_datagram(relay.seal([F.Pong(0)]), RELAY, 0.3)  # the real session works on
    assert c.stats["sealed_dropped"] == 1 and c.connected


def test_a_relay_cannot_invent_or_alter_a_members_message():
    """Messages are signed by their authors (step 6 of docs/security.md, relay mode): the relay
    carries the signature and the key the author proved in its handshake; receivers check one
    against the other, and a member's live message against the key announced for the member. A
    message the relay invents, alters, or moves to another message id, author or room is dropped and
    counted, never shown; one without its author's key too (`unsigned`)."""
    room = Room(2, seed=97)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    cb = room.clients[b]
    for c in (a, b):
        room.net.call(c, room.clients[c].join, "dev")
    room.net.run_while(lambda: not all(c.rooms["dev"].ready for c in room.clients.values()), room.net.now + 5)
    post_reaches_everyone(room, a, "the real one", [a, b])
    relay = room.relay
    lobby = relay.rooms[room.room]
    real = next(e for e in lobby.events() if e.text == "the real one")
    assert len(real.sig) == 64 and real.nick == "n0" and real.key == relay.sessions[a].key
    now = room.net.now
    k = real.key
    forgeries = [
        (lobby, F.Ev(F.EV_MSG, "n0", "invented", now, 11, key=k)),  # no signature
        (lobby, F.Ev(F.EV_MSG, "n0", "the real one, altered", now, real.mid + 1, sig=real.sig, key=k)),
        (lobby, F.Ev(F.EV_MSG, "n0", real.text, now, real.mid + 2, sig=real.sig, key=k)),  # other id
        (lobby, F.Ev(F.EV_ACTION, "n0", real.text, now, real.mid + 3, sig=real.sig, key=k)),  # other kind
        (lobby, F.Ev(F.EV_MSG, "n1", real.text, now, real.mid, sig=real.sig, key=k)),  # another author
        (relay.rooms["dev"], F.Ev(F.EV_MSG, "n0", real.text, now, real.mid + 5, sig=real.sig, key=k)),
    ]
    keyless = [F.Ev(F.EV_MSG, "n0", real.text, now, real.mid + 6, sig=real.sig)]  # no key: not checked
    for stream, ev in forgeries + [(lobby, ev) for ev in keyless]:  # the relay numbers and sends them
        relay._room_event(stream, ev, now)
    room.settle(1.0)
    assert cb.stats["bad_signature"] == len(forgeries) and cb.stats["unsigned"] == len(keyless)
    shown = [e.text for e in room.events(b, E.MessageReceived)]
    assert shown == ["the real one"]
    post_reaches_everyone(room, a, "still verified", [a, b])
    assert cb.stats["bad_signature"] == len(forgeries) and cb.stats["unsigned"] == len(keyless)
    notices = [e.text for e in room.events(b, E.Notice)]
    assert "messages without their author's key are not shown" in " ".join(notices)


def test_history_from_an_author_who_left_is_shown_checked_and_what_the_relay_invents_is_not():
    """A newcomer does not know the keys of members who left before it came: each stored message
    carries its author's key (as proven in its handshake), so their history is checked all the
    same, and its nick pinned to that key. What the relay invents is never shown: a line from a nick
    that is not in the room, or one under a member's name, without a key (`unsigned`); one that
    names the key of the member who left but does not carry its signature, or alters its line
    (`bad_signature`). Before every stored message carried its key, all of these were shown
    unchecked."""
    room = Room(2, seed=98)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    post_reaches_everyone(room, a, "from n0", [a, b])
    n0_key = room.relay.sessions[a].key
    room.net.call(a, room.clients[a].close)  # n0 leaves: its key is not announced to a newcomer
    room.net.remove(a)
    room.settle(1.0)
    relay = room.relay
    lobby = relay.rooms[room.room]
    real = next(e for e in lobby.events() if e.text == "from n0")
    assert real.key == n0_key
    now = room.net.now
    unsigned = [
        F.Ev(F.EV_MSG, "ghost", "I was here", now, 12),  # a nick not in the room
        F.Ev(F.EV_MSG, "n1", "n1 never said this", now, 13),  # a member who stays
        F.Ev(F.EV_MSG, "n0", "from n0", now, real.mid, sig=real.sig),  # n0's own, its key left out
    ]
    bad = [
        F.Ev(F.EV_MSG, "n0", "n0 never said this", now, 14, key=n0_key),
        F.Ev(F.EV_MSG, "n0", "from n0, altered", now, real.mid, sig=real.sig, key=n0_key),
        F.Ev(F.EV_ACTION, "ghost", "from n0", now, real.mid, sig=real.sig, key=n0_key),
    ]
    for ev in unsigned + bad:
        relay._room_event(lobby, ev, now)
    room.settle(0.5)
    late = room.add_client(2, "late")
    room.wait_joined()
    room.settle(1.0)
    texts = [e.text for e in room.events(client_addr(2), E.MessageReceived)]
    assert texts == [real.text]  # n0's history shown, checked against the key it carries
    assert late.stats["bad_signature"] == len(bad) and late.stats["unsigned"] == len(unsigned)
    assert ("n0", n0_key) in {(e.nick, e.key) for e in room.events(client_addr(2), E.KeyPinned)}
    notices = [e.text for e in room.events(client_addr(2), E.Notice)]
    assert f"{len(unsigned)} older messages could not be checked and are not shown" in notices
    # and paging back (OP_HISTORY) shows the same: n0's line, nothing the relay made up
    room.net.call(client_addr(2), late.page_back, room.room, 0, 50)
    room.net.run_while(lambda: not room.events(client_addr(2), E.HistoryPage), room.net.now + 10)
    (page,) = room.events(client_addr(2), E.HistoryPage)
    assert [e.text for e in page.events if isinstance(e, E.MessageReceived)] == [real.text]
    assert late.stats["bad_signature"] == 2 * len(bad) and late.stats["unsigned"] == 2 * len(unsigned)


def test_a_nick_is_pinned_to_its_key_on_first_sight_and_another_key_is_said_in_the_room():
    from udproom.protocol.names import nick_key

    room = Room(2, seed=99)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    cb = room.clients[b]
    n0_key = room.relay.sessions[a].key
    pinned = room.events(b, E.KeyPinned)
    assert {(e.nick, e.key) for e in pinned} >= {("n0", n0_key)}  # first sight: pinned
    assert cb.key_pins[nick_key("n0")] == fingerprint(n0_key)
    assert cb.key_of("lobby", "n0") == n0_key and cb.key_of("", "n0") == n0_key
    # n0 goes; someone else (another key) comes back as n0
    room.net.call(a, room.clients[a].close)
    room.net.remove(a)
    room.settle(1.0)
    impostor = room.add_client(5, "N0")  # (the same nick: nick_key folds case)
    room.wait_joined()
    room.settle(1.0)
    new = fingerprint(room.relay.sessions[client_addr(5)].key)
    notices = [e for e in room.events(b, E.Notice) if "key changed" in e.text]
    assert [(e.room, e.text) for e in notices] == [
        ("lobby", f"N0's key changed: was {fingerprint(n0_key)}, now {new}; messages are shown as from {new}")
    ]
    assert cb.key_pins[nick_key("n0")] == fingerprint(n0_key)  # the pin stays: said again next run
    post_reaches_everyone(room, client_addr(5), "hello from the new one", [b])  # checked against its key
    assert impostor.connected


def test_a_relay_cannot_invent_alter_or_redirect_a_direct_message():
    room = Room(3, seed=100)
    room.wait_joined()
    a, b, c = client_addr(0), client_addr(1), client_addr(2)
    room.net.call(a, room.clients[a].post, "@n1", "for n1 only")
    room.net.run_while(lambda: not room.events(b, E.MessageReceived), room.net.now + 5)
    assert [(e.room, e.text) for e in room.events(b, E.MessageReceived)] == [("@n0", "for n1 only")]
    relay = room.relay
    real = next(e for e in relay.sessions[b].inbox.events() if e.text == "for n1 only")
    assert len(real.sig) == 64 and real.key == relay.sessions[a].key
    now = room.net.now
    forged = {
        b: [
            F.Ev(F.EV_DM, "n0", "invented", now, 21, key=real.key),
            F.Ev(F.EV_DM, "n0", "for n1 only, altered", now, real.mid + 1, sig=real.sig, key=real.key),
            F.Ev(F.EV_DM_ACTION, "n0", real.text, now, real.mid + 2, sig=real.sig, key=real.key),
        ],
        c: [
            F.Ev(F.EV_DM, "n0", real.text, now, real.mid + 3, sig=real.sig, key=real.key)
        ],  # redirected to n2
    }
    for addr, evs in forged.items():
        session = relay.sessions[addr]
        for ev in evs:
            session.inbox.append(ev, now)
        relay._flush_inbox(session, now)
    room.settle(1.0)
    assert room.clients[b].stats["bad_signature"] == 3 and room.clients[c].stats["bad_signature"] == 1
    assert [e.text for e in room.events(b, E.MessageReceived)] == ["for n1 only"]
    assert not room.events(c, E.MessageReceived)


def test_a_relay_cannot_invent_or_alter_a_topic():
    """Topics are signed like posts (message id 0; docs/security.md "Signed topics"): a topic event
    the relay invents or alters is counted and neither applied nor shown, and a newcomer's Joined
    carries the setter's key and signature, so an altered current topic is not applied either."""
    room = Room(2, seed=96)
    room.wait_joined()
    a, b = client_addr(0), client_addr(1)
    ca, cb = room.clients[a], room.clients[b]
    room.net.call(a, ca.set_topic, room.room, "the real topic")
    room.net.run_while(lambda: cb.rooms[room.room].topic != "the real topic", room.net.now + 10)
    relay = room.relay
    lobby = relay.rooms[room.room]
    real = next(e for e in lobby.events() if e.kind == F.EV_TOPIC)
    assert len(real.sig) == 64 and real.nick == "n0" and real.key == relay.sessions[a].key
    now = room.net.now
    k = real.key
    forgeries = [
        F.Ev(F.EV_TOPIC, "n0", "invented", now, key=k),  # no signature
        F.Ev(F.EV_TOPIC, "n0", "altered", now, sig=real.sig, key=k),  # other text
        F.Ev(F.EV_TOPIC, "n1", "the real topic", now, sig=real.sig, key=k),  # another setter
        F.Ev(F.EV_TOPIC, "n0", "the real topic", now, 5, sig=real.sig, key=k),  # another message id
    ]
    keyless = [F.Ev(F.EV_TOPIC, "n0", "the real topic", now, sig=real.sig)]  # (`unsigned`)
    for ev in forgeries + keyless:
        relay._room_event(lobby, ev, now)
    room.settle(1.0)
    assert cb.stats["bad_signature"] == len(forgeries) and cb.stats["unsigned"] == len(keyless)
    assert cb.rooms[room.room].topic == "the real topic"
    assert [e.topic for e in room.events(b, E.TopicChanged)] == ["the real topic"]
    # the relay alters the current topic it gives a newcomer (keeping the setter's signature)
    key = relay.sessions[a].key
    lobby.topic = "altered at join"
    lobby.topic_signed = ("altered at join", key, real.sig)
    late = room.add_client(2, "late")
    room.wait_joined()
    # (its backfill holds the forgeries too: each is counted there again, but for the one "n1" set:
    # history is shown as from the key that signed it, n0's, and said in the room: not n1's pin)
    assert late.stats["bad_signature"] == len(forgeries) - 1 + 1 and late.rooms[room.room].topic == ""
    was, now = fingerprint(relay.sessions[b].key), fingerprint(k)
    said = f"n1's key changed: was {was}, now {now}; messages are shown as from {now}"
    assert said in [e.text for e in room.events(client_addr(2), E.Notice)]
    (joined,) = room.events(client_addr(2), E.RoomJoined)
    assert joined.topic == ""
    # the real one, as the relay keeps it, reaches a newcomer verified
    lobby.topic = "the real topic"
    lobby.topic_signed = ("the real topic", key, real.sig)
    later = room.add_client(3, "later")
    room.wait_joined()
    assert later.rooms[room.room].topic == "the real topic"
    assert later.stats["bad_signature"] == len(forgeries) - 1
    topics = [(e.nick, e.topic) for e in room.events(client_addr(3), E.TopicChanged)]
    assert topics == [("n0", "the real topic"), ("n1", "the real topic")]
