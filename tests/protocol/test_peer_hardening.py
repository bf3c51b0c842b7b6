"""Direct mode against a hostile peer and an off-path forger (issue 7, items 8-13): each test was
written against the unfixed core and failed there.

`mallory` is a real PeerNode linked into the room whose frames the test writes by hand (what a
modified client could send); the `Adversary` forges datagrams with other peers' source addresses
(what anyone can do who learns those addresses from gossip)."""

from __future__ import annotations

import ipaddress
import math

import msgspec

from udproom.protocol import events as E
from udproom.protocol import frames as F
from udproom.protocol.peer import PeerNode
from udproom.protocol.peer import state as P

from .adversary import Adversary
from .fakenet import FakeNet, Impairment
from .peers import FORGER, MALLORY, addr, of, send_as, timing, trio

# --------------------------------------------------------------------------- item 8: attribution, numbers


def test_a_peer_cannot_post_as_someone_else():
    net, (_p0, _p1, mallory) = trio()
    mallory.nick = "p1"  # a modified client: its frames say "p1"
    net.call(addr(MALLORY), mallory.post, "lobby", "send me your password")
    net.run_until(net.now + 0.3)
    got = [(e.nick, e.text) for e in of(net, 0, E.MessageReceived)]
    assert got == [("mallory", "send me your password")]


def test_timestamps_from_the_wire_are_finite_and_plausible():
    net, (_p0, _p1, mallory) = trio()
    for bad in (math.nan, math.inf, -math.inf, 1e20, -1e20):
        mallory.wall_offset = bad
        net.call(addr(MALLORY), mallory.post, "lobby", f"ts {bad}")
        net.run_until(net.now + 0.1)
    got = list(of(net, 0, E.MessageReceived))
    assert len(got) == 5
    for e in got:
        assert math.isfinite(e.ts) and abs(e.ts - net.now) < 60, e


def test_lamport_stamps_from_the_wire_are_bounded():
    net, (p0, p1, mallory) = trio()
    for k in range(150):
        net.call(addr(1), p1.post, "lobby", f"m{k}")
    net.run_until(net.now + 0.3)
    top = max(e.seq for e in of(net, 0, E.MessageReceived))
    mallory.lc = -1  # its next message is stamped 0: it would go to the top of the scrollback
    net.call(addr(MALLORY), mallory.post, "lobby", "first!")
    net.run_until(net.now + 0.2)
    (early,) = [e for e in of(net, 0, E.MessageReceived) if e.text == "first!"]
    assert early.seq > top  # sent after it had seen them all (its own PeerJoin said so)
    # a stamp far in the future would pin its message below everything said later
    mallory.lc = 2**63 - 2
    net.call(addr(MALLORY), mallory.post, "lobby", "last forever")
    net.run_until(net.now + 0.2)
    assert p0.lc < 1 << 34 and p1.lc < 1 << 34  # a bounded step past what it said before
    net.call(addr(1), p1.post, "lobby", "later")
    net.run_until(net.now + 0.2)
    evs = {e.text: e.seq for e in of(net, 0, E.MessageReceived)}
    assert evs["later"] > evs["last forever"]


# --------------------------------------------------------------------------- item 9: identity


def test_forged_handshake_frames_from_a_members_address_change_nothing():
    net, (p0, p1, _mallory) = trio()
    adv = Adversary(net, FORGER)
    link = p0.links[addr(1)]
    node, nick = link.node, link.nick
    forged = [
        F.Welcome(version=F.VERSION, nick="evil", epoch=12345, keepalive_ms=100, timeout_ms=600),
        F.Welcome(
            version=F.VERSION, nick="evil", epoch=12345, keepalive_ms=100, timeout_ms=600, token=777, nonce=42
        ),
        F.Bye("forged"),
        F.Reset(),
        F.Reset(0x1234),
        F.Refuse("go away"),
        F.Hello(version=F.VERSION, nick="evil", cookie=b"x" * 16, pad=bytes(1100), nonce=999),
    ]
    for _k in range(3):
        for frame in forged:
            adv.forge(F.encode([frame]), addr(0), src=addr(1))
            adv.forge(F.encode([frame]), addr(1), src=addr(0))
        net.run_until(net.now + 0.1)
    net.run_until(net.now + 0.5)
    assert p0.links[addr(1)] is link and link.state == P.UP and (link.node, link.nick) == (node, nick)
    for i in (0, 1):
        assert not of(net, i, E.MemberLeft) and not of(net, i, E.MemberTimedOut)
        assert [e.nick for e in of(net, i, E.MemberJoined)].count("p1" if i == 0 else "p0") <= 1
    net.call(addr(1), p1.post, "lobby", "still me")
    net.run_until(net.now + 0.3)
    assert [(e.nick, e.text) for e in of(net, 0, E.MessageReceived)] == [("p1", "still me")]


def test_a_forged_datagram_cannot_speak_for_a_member():
    """Data frames forged with a member's source address (an off-path forger knows addresses from
    gossip, not the link's token) are dropped: no message, no leave, no nick change."""
    net, (p0, _p1, _mallory) = trio()
    adv = Adversary(net, FORGER)
    frames = [
        F.PeerMsg(room="lobby", seq=1, lc=10**6, kind=F.EV_MSG, nick="p1", text="forged", ts=1.0, mid=5),
        F.PeerLeave("lobby", "p1", "forged"),
        F.PeerJoin(
            room="lobby", nick="bob", node=p0.links[addr(1)].node, base=1, top=0, lc=0, away="forged away"
        ),
    ]
    for seq in range(1, 5):
        frames[0] = msgspec.structs.replace(frames[0], seq=seq)
        for f in frames:
            adv.forge(F.encode([f]), addr(0), src=addr(1))
    net.run_until(net.now + 0.5)
    assert not of(net, 0, E.MessageReceived) and not of(net, 0, E.MemberLeft)
    assert not of(net, 0, E.NickChanged) and not of(net, 0, E.AwayChanged)


def test_a_newcomer_claiming_an_early_since_cannot_make_a_member_leave():
    net, (p0, bob, _m) = trio(nicks=("p0", "bob", "m"))
    net.remove(addr(MALLORY))
    net.run_until(net.now + 2.0)
    evil = PeerNode("bob", timing=timing())
    net.add(addr(3), evil)
    net.call(addr(3), evil.join, "lobby")
    evil.rooms["lobby"].joined_ts = -1e9  # "I have been here since 1938"
    net.call(addr(3), evil.add_peer, addr(0))
    net.run_until(net.now + 2.0)
    assert "lobby" in bob.rooms and not of(net, 1, E.RequestRefused)
    assert p0.members("lobby").count("bob") == 1


def test_a_newcomer_reusing_a_node_id_cannot_lock_its_owner_out():
    net = FakeNet(seed=3)
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    net.call(addr(0), p0.join, "lobby")
    stolen = 0x5EED
    evil = net.add(addr(3), PeerNode("evil", timing=timing(), node=stolen))
    net.call(addr(3), evil.join, "lobby")
    net.call(addr(3), evil.add_peer, addr(0))
    net.run_until(net.now + 0.5)
    bob = net.add(addr(1), PeerNode("bob", timing=timing(), node=stolen))
    net.call(addr(1), bob.join, "lobby")
    net.call(addr(1), bob.add_peer, addr(0))
    net.run_while(lambda: "bob" not in p0.members("lobby"), net.now + 3.0)
    assert "bob" in p0.members("lobby") and "p0" in bob.members("lobby")


def test_a_topic_stamped_at_the_end_of_time_does_not_pin_the_topic():
    net, (p0, p1, mallory) = trio()
    j = mallory._join_frame(mallory.links[addr(0)], mallory.links[addr(0)].rooms["lobby"], net.now, False)
    pinned = msgspec.structs.replace(j, topic="pwned", topic_lc=2**64 - 1, topic_by="p1")
    send_as(net, mallory, MALLORY, 0, [pinned])
    net.run_until(net.now + 0.2)
    net.call(addr(1), p1.set_topic, "lobby", "the real topic")
    net.run_until(net.now + 0.5)
    assert p0.rooms["lobby"].topic == "the real topic"
    assert of(net, 0, E.TopicChanged)[-1].topic == "the real topic"


# --------------------------------------------------------------------------- item 10: gossip


def test_gossip_does_not_make_a_peer_a_reflector():
    net, (_p0, _p1, mallory) = trio(watch=True)
    watched = net.nodes[addr(0)]
    victims = [
        ("224.0.0.1", 5353),
        ("255.255.255.255", 9),
        ("0.0.0.0", 9),
        ("::", 9),
        ("ff02::1", 9),
        ("127.0.0.1", 9),
    ] + [(f"192.168.{k // 200}.{k % 200 + 1}", 1000 + k) for k in range(64)]
    before_in = watched.bytes_in[addr(MALLORY)]
    ids = list(range(10_000, 10_000 + len(victims)))
    entries = [("v", h, p) for h, p in victims]
    for _ in range(3):
        for k in range(0, len(entries), 8):
            send_as(net, mallory, MALLORY, 0, [F.PeerList("lobby", entries[k : k + 8], ids[k : k + 8])])
        net.run_until(net.now + 0.3)
    net.run_until(net.now + 3.0)
    got = watched.bytes_in[addr(MALLORY)] - before_in
    out = {dst: n for dst, n in watched.bytes_out.items() if (dst[0], dst[1]) in set(victims)}
    for host, _port in out:
        ip = ipaddress.ip_address(host)
        assert not (ip.is_multicast or ip.is_unspecified or host == "255.255.255.255"), host
    assert sum(out.values()) <= 3 * got, (sum(out.values()), got)


# --------------------------------------------------------------------------- item 11: buffers


def test_reorder_buffers_are_bounded_by_bytes():
    net, (p0, _p1, mallory) = trio()
    seq0 = mallory.rooms["lobby"].out.seq + 1
    text = "x" * 900
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
        send_as(net, mallory, MALLORY, 0, [f])
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
    send_as(net, mallory, MALLORY, 0, [hole])
    net.run_until(net.now + 0.05)
    texts = [e.text for e in of(net, 0, E.MessageReceived)]
    assert texts[0] == "hole" and len(texts) > 1


# --------------------------------------------------------------------------- item 12: gossip size


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


# --------------------------------------------------------------------------- item 13: history


def test_a_slow_clock_does_not_turn_live_posts_into_history():
    net, (_p0, _p1, slow) = trio(wall_offset=-600.0)
    net.call(addr(MALLORY), slow.post, "lobby", "hello from the past")
    net.run_until(net.now + 0.3)
    (e,) = of(net, 0, E.MessageReceived)
    assert not e.history


# --------------------------------------------------------------------------- repair budget


def test_nack_and_history_floods_get_a_bounded_answer_per_round_trip():
    net, (p0, _p1, mallory) = trio(watch=True)
    watched = net.nodes[addr(0)]

    def no_acks(link, now):  # mallory never acknowledges: everything stays repairable
        link.acks.clear()
        return []

    mallory._acks = no_acks
    for k in range(100):
        net.call(addr(0), p0.post, "lobby", f"{k:03d} " + "y" * 400)
    net.run_until(net.now + 0.05)
    link = mallory.links[addr(0)]
    lr = link.rooms["lobby"]
    ask = msgspec.structs.replace(mallory._join_frame(link, lr, net.now, True), history=True)
    start = dict(watched.bytes_out)
    flood = [F.Nack("lobby", [1, 1000])] * 20 + [ask] * 20
    for _ in range(10):
        send_as(net, mallory, MALLORY, 0, flood)
    net.run_until(net.now + 0.001)  # less than one round trip
    sent = watched.bytes_out[addr(MALLORY)] - start.get(addr(MALLORY), 0)
    assert sent <= 2 * P.REPAIR_WINDOW + F.MAX_DATAGRAM, sent


def test_a_peer_cannot_rename_itself_into_someone_else():
    net, (p0, p1, mallory) = trio()
    mallory.nick = "P1"  # its PeerJoins now say so (another case of p1's nick, even)
    net.call(addr(MALLORY), mallory._refresh_all)
    net.run_until(net.now + 0.2)
    net.call(addr(MALLORY), mallory.post, "lobby", "it is me, p1")
    net.call(addr(MALLORY), mallory.post, "@p0", "psst, p1 here")
    net.run_until(net.now + 0.3)
    assert not [e for e in of(net, 0, E.MessageReceived) if e.nick.casefold() == "p1" or e.room == "@P1"]
    assert sorted(p0.members("lobby"), key=str.casefold) == ["p0", "p1"]  # one p1, the real one
    net.call(addr(1), p1.post, "@p0", "the real p1")
    net.run_until(net.now + 0.3)
    assert [(e.room, e.nick, e.text) for e in of(net, 0, E.MessageReceived)] == [("@p1", "p1", "the real p1")]


def test_history_replies_fit_a_datagram_whatever_they_hold():
    node = PeerNode("p0", timing=timing())
    name = "r" * 32  # the longest room name
    node.join(name, 0.0)
    room = node.rooms[name]
    big = F.PeerMsg(
        room=name,
        seq=2**62,
        lc=2**62,
        kind=F.EV_MSG,
        nick="\U0001f600" * 24,
        text="\U0001f600" * 250,
        ts=1e18,
        mid=2**63 - 1,
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
            )
        )
    frames = node._history_frames(room)
    assert sum(len(f.items) for f in frames) >= 5
    for f in frames:
        assert len(F.encode([F.Sid(2**63 - 1), f])) <= F.MAX_DATAGRAM
    # the longest message an honest member can send, in the longest room, still goes (its item
    # without the room name) and arrives whole
    honest = F.PeerMsg(
        room=name,
        seq=1,
        lc=7,
        kind=F.EV_MSG,
        nick="\U0001f600" * 24,
        text="\U0001f600" * 250,
        ts=1.7e9,
        mid=2**63 - 1,
    )
    room.history.clear()
    room.history.append(honest)
    (f,) = node._history_frames(room)
    assert len(F.encode([F.Sid(2**63 - 1), f])) <= F.MAX_DATAGRAM and f.items[0].text == honest.text


def test_paying_for_gossip_does_not_slow_the_mesh_down():
    """Gossip-dialed addresses are paid for with a knock (a bare Sid answered by a Reset) before
    the padded Hello: a chain of peers still meshes in a few round trips with the default timings
    (paying padded Hellos from gossip credit took 105 s for six peers)."""
    from udproom.protocol.reliability import Timing

    net = FakeNet(seed=1, imp=Impairment(delay=0.01))
    nodes = []
    for i in range(6):
        node = net.add(addr(i), PeerNode(f"p{i}", timing=Timing()))
        nodes.append(node)
        net.call(addr(i), node.join, "lobby")
        if i:
            net.call(addr(i), node.add_peer, addr(i - 1))
    net.run_while(lambda: not all(len(x.members("lobby")) == 6 for x in nodes), 2.0)
    assert all(len(x.members("lobby")) == 6 for x in nodes)
    assert all(len(x.links) == 5 for x in nodes)


def test_forged_answers_to_a_hello_in_flight_are_not_believed():
    """While p0's handshake with p1 is under way, a forger who knows p1's address (and node id)
    answers for it: a Welcome with a fake identity, a Refuse, a Retry. None is tied to p0's nonce:
    the link neither adopts the fake identity nor gives up, and completes with the real p1."""
    net = FakeNet(seed=8)
    p0 = net.add(addr(0), PeerNode("p0", timing=timing()))
    p1 = net.add(addr(1), PeerNode("p1", timing=timing()))
    for i, node in enumerate((p0, p1)):
        net.call(addr(i), node.join, "lobby")
    adv = Adversary(net, FORGER)
    net.dark_links[addr(1)] = [(0.0, 0.3)]  # p1 hears nothing yet
    net.call(addr(0), p0.add_peer, addr(1))
    for k in range(5):
        for f in (
            F.Welcome(
                version=F.VERSION,
                nick="impostor",
                epoch=4242,
                keepalive_ms=100,
                timeout_ms=600,
                token=77,
                nonce=k,
            ),
            F.Refuse("go away", [1], k),
            F.Retry(b"z" * 16),
        ):
            adv.forge(F.encode([f]), addr(0), src=addr(1))
        net.run_until(net.now + 0.05)
    link = p0.links.get(addr(1))
    assert link is not None and link.node in (0, p1.node)
    assert not [e for e in of(net, 0, E.Notice) if "refused" in e.text]
    net.run_while(lambda: "p1" not in p0.members("lobby"), net.now + 3.0)
    assert p0.links[addr(1)].node == p1.node and p0.members("lobby") == ["p0", "p1"]


def test_gossip_credit_is_three_times_the_gossip_and_knocks_wait_for_it():
    net, (p0, p1, mallory) = trio(watch=True)
    watched = net.nodes[addr(0)]
    link = p0.links[addr(MALLORY)]
    link.credit = 0.0
    before = watched.bytes_in[addr(MALLORY)]
    known = [("p1", addr(1)[0], addr(1)[1])]  # nobody new: nothing to spend it on
    send_as(net, mallory, MALLORY, 0, [F.PeerList("lobby", known, [p1.node])])
    net.run_until(net.now + 0.003)
    size = watched.bytes_in[addr(MALLORY)] - before
    assert link.credit == 3 * size
    # with less credit than a knock, a new address is not even knocked at; with enough, it is
    link.credit = 5.0
    victim = ("192.168.50.50", 5050)
    p0._on_list(link, F.PeerList("lobby", [("v", *victim)], [1]), net.now)
    net.flush(addr(0))
    assert watched.bytes_out.get(victim, 0) == 0 and victim in p0.links
    knock = len(F.encode([F.Sid(p0.links[victim].rx_token)]))
    link.credit = float(knock)
    net.run_until(p0.links[victim].hello_at)
    assert watched.bytes_out.get(victim, 0) == knock and link.credit < knock
